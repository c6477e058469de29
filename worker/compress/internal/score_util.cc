// File: worker/compress/internal/score_util.cc
// GroupAttentionMass, SliceQueryHeads and HashUniform.
#include "worker/compress/internal/score_util.h"

#include <algorithm>
#include <cmath>

#include "common/status_macros.h"
#include "kernels/attention_scores.h"

namespace dapq::worker::compress::internal {

absl::Status GroupAttentionMass(const ScoringInputs& in, const float* queries, int rows,
                                const int32_t* key_limits, const float* weights,
                                std::span<float> scores) {
  const int group = in.q_heads / in.kv_heads;
  const int d = in.head_dim;
  for (int h = 0; h < in.q_heads; ++h) {
    const int kvh = h / group;
    kernels::AttentionScoresParams p;
    p.queries = rows;
    p.keys = in.n;
    p.head_dim = d;
    p.q = queries + static_cast<long>(h) * d;
    p.q_stride = in.q_heads * d;
    p.k = in.keys + kvh * in.kv_head_stride;
    p.key_limits = key_limits;
    p.weights = weights;
    p.scale = 1.0f / std::sqrt(static_cast<float>(d));
    p.scores = scores.data() + static_cast<long>(kvh) * in.n;
    DAPQ_RETURN_IF_ERROR(kernels::AttentionScores(p));
  }
  const float inv_group = 1.0f / static_cast<float>(group);
  for (float& s : scores) s *= inv_group;
  return absl::OkStatus();
}

std::vector<float> SliceQueryHeads(const float* q, int rows, int q_heads, int head_dim, int first,
                                   int count) {
  std::vector<float> out(static_cast<size_t>(rows) * count * head_dim);
  for (int r = 0; r < rows; ++r) {
    const float* from = q + (static_cast<long>(r) * q_heads + first) * head_dim;
    std::copy(from, from + static_cast<long>(count) * head_dim,
              out.begin() + static_cast<long>(r) * count * head_dim);
  }
  return out;
}

double HashUniform(uint64_t seed, uint64_t a, uint64_t b, uint64_t c) {
  auto mix = [](uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
  };
  const uint64_t r = mix(mix(mix(mix(seed) ^ a) ^ b) ^ c);
  return static_cast<double>(r >> 11) * (1.0 / 9007199254740992.0);
}

}  // namespace dapq::worker::compress::internal
