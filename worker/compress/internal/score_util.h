// File: worker/compress/internal/score_util.h
// Shared pieces of the scorers: attention mass of a block of queries summed into each KV
// head's row and averaged over the GQA group, one KV head's query group sliced out of a block
// of queries, and a counter-based hash for seeded randomness that depends on global indices
// only (identical for every TP degree).
#ifndef DAPQ_WORKER_COMPRESS_INTERNAL_SCORE_UTIL_H_
#define DAPQ_WORKER_COMPRESS_INTERNAL_SCORE_UTIL_H_

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "worker/compress/scorer.h"

namespace dapq::worker::compress::internal {

// queries: [rows, in.q_heads, head_dim] (row stride q_heads * head_dim). For each local query
// head adds sum_i weight_i * softmax(q_i . k / sqrt(d)) over the visible keys of its KV head
// into scores[kv_head * n + j], then divides every row by the group size (GQA mean).
// key_limits: null (all n keys) or [rows] (causal). weights: null (1) or [rows].
absl::Status GroupAttentionMass(const ScoringInputs& in, const float* queries, int rows,
                                const int32_t* key_limits, const float* weights,
                                std::span<float> scores);

// Rows [rows, q_heads, head_dim] of `q` restricted to query heads [first, first + count): one
// KV head's query group, for scoring or accumulating that head alone.
std::vector<float> SliceQueryHeads(const float* q, int rows, int q_heads, int head_dim, int first,
                                   int count);

// Uniform in [0, 1) from (seed, a, b, c).
double HashUniform(uint64_t seed, uint64_t a, uint64_t b, uint64_t c);

}  // namespace dapq::worker::compress::internal

#endif  // DAPQ_WORKER_COMPRESS_INTERNAL_SCORE_UTIL_H_
