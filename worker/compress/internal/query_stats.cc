// File: worker/compress/internal/query_stats.cc
// Causal attention accumulation (H2O) and query moments (ExpectedAttention).
#include "worker/compress/internal/query_stats.h"

#include <cblas.h>

#include <cmath>
#include <vector>

#include "common/status_macros.h"
#include "kernels/attention_scores.h"

namespace dapq::worker::compress::internal {

absl::Status AccumulateCausalAttention(const float* q_post, int m, int q_heads, int kv_heads,
                                       int head_dim, const float* keys, long kv_head_stride, int n,
                                       float* attention) {
  const long row = static_cast<long>(q_heads) * head_dim;
  std::vector<int32_t> limits(m);
  for (int t = 0; t < m; ++t) limits[t] = n - m + t + 1;
  const int group = q_heads / kv_heads;
  for (int h = 0; h < q_heads; ++h) {
    kernels::AttentionScoresParams p;
    p.queries = m;
    p.keys = n;
    p.head_dim = head_dim;
    p.q = q_post + static_cast<long>(h) * head_dim;
    p.q_stride = static_cast<int>(row);
    p.k = keys + (h / group) * kv_head_stride;
    p.key_limits = limits.data();
    p.scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
    p.scores = attention + static_cast<long>(h / group) * n;
    DAPQ_RETURN_IF_ERROR(kernels::AttentionScores(p));
  }
  return absl::OkStatus();
}

void AccumulateQueryMoments(const float* q_pre, int m, int q_heads, int head_dim, double* q_sum,
                            double* q_outer) {
  const int d = head_dim;
  const long row = static_cast<long>(q_heads) * d;
  std::vector<float> outer(static_cast<size_t>(d) * d);
  for (int h = 0; h < q_heads; ++h) {
    const float* q = q_pre + static_cast<long>(h) * d;
    for (int t = 0; t < m; ++t) {
      for (int e = 0; e < d; ++e) q_sum[static_cast<long>(h) * d + e] += q[t * row + e];
    }
    // outer = Q_h' Q_h over the block (Q_h: [m, d] with row stride `row`).
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, d, d, m, 1.0f, q, static_cast<int>(row), q,
                static_cast<int>(row), 0.0f, outer.data(), d);
    double* dst = q_outer + static_cast<long>(h) * d * d;
    for (size_t e = 0; e < outer.size(); ++e) dst[e] += outer[e];
  }
}

}  // namespace dapq::worker::compress::internal
