// File: worker/compress/selector.h
// From per-head scores to keep-sets, identical on every TP rank and for every TP degree:
// scores are pooled per head, converted to fixed point (int64, 2^-32 resolution) and summed /
// all-reduced as integers — exact and order-independent — then the top tokens are chosen with
// ties broken by lower slot. The first `sinks` and last `window` slots are always kept.
//  - shared storage: one keep-set per layer from the importance summed over every KV head;
//  - per_head storage: a keep-set per KV head (uniform / pyramid budgets locally; adaptive
//    budgets from every head's importance, all-reduced).
// Thread-safety: functions are reentrant; SelectLayer uses the rank's communicator.
#ifndef DAPQ_WORKER_COMPRESS_SELECTOR_H_
#define DAPQ_WORKER_COMPRESS_SELECTOR_H_

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/comm/communicator.h"
#include "worker/compress/compression_config.h"

namespace dapq::worker::compress {

int64_t ToFixedPoint(float score);

// Sorted slots: [0, sinks) and [n - window, n), plus the top (budget - window - sinks) of the
// rest by importance (ties: lower slot). window and sinks are clamped to fit the budget.
std::vector<int32_t> SelectKeepSet(std::span<const int64_t> importance, int n, int budget,
                                   int window, int sinks);

struct SelectionContext {
  int n = 0;               // slots per KV head
  int kv_heads = 0;        // local KV heads
  int kv_head_begin = 0;   // global index of the first local head
  int kv_heads_total = 0;  // KV heads of the layer over all ranks
  int budget = 0;          // this layer's budget per head (allocator output)
  Communicator* comm = nullptr;
};

// scores: [kv_heads, n] raw scorer output. Returns a keep-set per local KV head (identical
// rows in shared storage).
absl::StatusOr<std::vector<std::vector<int32_t>>> SelectLayer(const CompressionConfig& config,
                                                              const SelectionContext& ctx,
                                                              std::span<const float> scores);

}  // namespace dapq::worker::compress

#endif  // DAPQ_WORKER_COMPRESS_SELECTOR_H_
