// File: kernels/attention_scores.h
// Attention-mass scoring for KV-cache compression (DapQ, SnapKV, H2O, TOVA): for one query head,
//   scores[j] += sum_i weight_i * softmax_j(q_i . k_j * scale)   over the keys query i may see.
// Tiled in two passes (row max/sum, then normalised accumulation): O(queries * keys * head_dim)
// work and O(tile) scratch; the queries x keys matrix is never materialised.
#ifndef DAPQ_KERNELS_ATTENTION_SCORES_H_
#define DAPQ_KERNELS_ATTENTION_SCORES_H_

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/types.h"

namespace dapq::kernels {

// q:      [queries, head_dim], row stride q_stride (elements).
// k:      [keys, head_dim], contiguous rows (a KV-cache slab).
// key_limits: null (every query sees every key) or [queries]: query i sees keys [0, limit_i),
//         1 <= limit_i <= keys (causal masks).
// weights: null (all 1) or [queries].
// scores: [keys], accumulated into (callers zero it first). scale: usually 1/sqrt(head_dim).
struct AttentionScoresParams {
  int queries = 0, keys = 0, head_dim = 0;
  const float* q = nullptr;
  int q_stride = 0;
  const float* k = nullptr;
  const int32_t* key_limits = nullptr;
  const float* weights = nullptr;
  float scale = 1.0f;
  float* scores = nullptr;
};

absl::Status AttentionScores(const AttentionScoresParams& p, Stream stream = {});
absl::Status ValidateAttentionScores(const AttentionScoresParams& p);
// On the CUDA backend every pointer is a device pointer: the host checks the shape only (the
// kernel clamps nothing: key_limits must hold 1 <= limit <= keys).
absl::Status ValidateAttentionScoresDevice(const AttentionScoresParams& p);

}  // namespace dapq::kernels

#endif  // DAPQ_KERNELS_ATTENTION_SCORES_H_
