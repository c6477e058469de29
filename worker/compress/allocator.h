// File: worker/compress/allocator.h
// Budget allocators: how many tokens each layer (and, for `adaptive`, each KV head) keeps.
//  - uniform: every layer the budget B.
//  - pyramid (PyramidKV): layer budgets fall linearly from the first layer to the last, with
//    the first/last ratio set by beta, averaging B (as KVCache-Factory computes them).
//  - adaptive (AdaKV): within a layer, every head keeps a floor alpha * (B - fixed) of its best
//    tokens; the rest of the layer's H * (B - fixed) selectable slots go to the globally best
//    remaining scores of any head. Needs every head's importance (all-reduced across ranks).
// Pure functions; thread-safe.
#ifndef DAPQ_WORKER_COMPRESS_ALLOCATOR_H_
#define DAPQ_WORKER_COMPRESS_ALLOCATOR_H_

#include <cstdint>
#include <span>
#include <vector>

#include "worker/compress/compression_config.h"

namespace dapq::worker::compress {

// Tokens kept per (layer, KV head) for every layer, local window and sinks included, for a
// prompt of n slots. Uniform and pyramid; adaptive starts from the uniform budgets.
std::vector<int> LayerBudgets(const CompressionConfig& config, int n, int n_layers);

// AdaKV: selectable slots per head. importance: [heads, n]; eligible: [heads, n], false for
// slots that are kept anyway (sinks, window) or past a head's length. Each head gets min(eligible,
// floor + its share of the global top of the remaining scores); ties by (score desc, head asc, slot
// asc).
std::vector<int> AdaptiveHeadBudgets(std::span<const int64_t> importance, int heads, int n,
                                     std::span<const bool> eligible, int selectable_per_head,
                                     float floor_fraction);

}  // namespace dapq::worker::compress

#endif  // DAPQ_WORKER_COMPRESS_ALLOCATOR_H_
