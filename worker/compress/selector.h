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

// A score in the exact fixed-point form the ranks all-reduce (kernels/fixed_point.h).
int64_t ToFixedPoint(float score);

// Sorted slots: [0, sinks) and [n - window, n), plus the top (budget - window - sinks) of the
// rest by importance (ties: lower slot). window and sinks are clamped to fit the budget.
std::vector<int32_t> SelectKeepSet(std::span<const int64_t> importance, int n, int budget,
                                   int window, int sinks);

struct SelectionContext {
  int n = 0;               // slots per KV head (the longest local head's when `lengths` is set)
  int kv_heads = 0;        // local KV heads
  int kv_head_begin = 0;   // global index of the first local head
  int kv_heads_total = 0;  // KV heads of the layer over all ranks
  int budget = 0;          // this layer's budget per head (allocator output)
  Communicator* comm = nullptr;
  // Valid slots of each local KV head ([kv_heads], each <= n) for a cache compressed before,
  // whose heads may differ in length (per_head storage); empty: every head holds n. Scores past
  // a head's length are ignored.
  std::span<const int32_t> lengths;
};

// scores: [kv_heads, n] raw scorer output. Pooling covers each head's evictable prefix only
// (its slots before the window, as SnapKV pools scores[..., :-window]): the window's scores do
// not leak into its neighbours'. Returns a keep-set per local KV head (identical rows in shared
// storage, which needs equally long heads).
absl::StatusOr<std::vector<std::vector<int32_t>>> SelectLayer(const CompressionConfig& config,
                                                              const SelectionContext& ctx,
                                                              std::span<const float> scores);

}  // namespace dapq::worker::compress

#endif  // DAPQ_WORKER_COMPRESS_SELECTOR_H_
