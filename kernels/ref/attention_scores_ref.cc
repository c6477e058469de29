// File: kernels/ref/attention_scores_ref.cc
// Tiled attention-mass scoring: pass 1 finds each query's softmax max and normaliser over key
// tiles; pass 2 recomputes each tile's logits and adds weight * exp(s - max) / sum to scores.
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/ref/ref_ops.h"

namespace dapq::kernels::ref {
namespace {
constexpr int kQueryTile = 64;
constexpr int kKeyTile = 512;
}  // namespace

absl::Status AttentionScoresRef(const AttentionScoresParams& p) {
  thread_local std::vector<float> tile, row_max, row_sum;
  tile.resize(static_cast<size_t>(kQueryTile) * kKeyTile);
  row_max.resize(kQueryTile);
  row_sum.resize(kQueryTile);
  const int d = p.head_dim;
  for (int i0 = 0; i0 < p.queries; i0 += kQueryTile) {
    const int rows = std::min(kQueryTile, p.queries - i0);
    const float* q = p.q + static_cast<long>(i0) * p.q_stride;
    int key_end = 0;
    for (int r = 0; r < rows; ++r) {
      key_end = std::max(key_end, p.key_limits ? p.key_limits[i0 + r] : p.keys);
    }
    std::fill(row_max.begin(), row_max.begin() + rows, -std::numeric_limits<float>::infinity());
    std::fill(row_sum.begin(), row_sum.begin() + rows, 0.0f);
    for (int pass = 0; pass < 2; ++pass) {
      for (int j0 = 0; j0 < key_end; j0 += kKeyTile) {
        const int cols = std::min(kKeyTile, key_end - j0);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, cols, d, p.scale, q, p.q_stride,
                    p.k + static_cast<long>(j0) * d, d, 0.0f, tile.data(), kKeyTile);
        for (int r = 0; r < rows; ++r) {
          const int limit = p.key_limits ? p.key_limits[i0 + r] : p.keys;
          const int visible = std::min(cols, limit - j0);
          if (visible <= 0) continue;
          const float* s = tile.data() + static_cast<long>(r) * kKeyTile;
          if (pass == 0) {
            float m = row_max[r];
            for (int c = 0; c < visible; ++c) m = std::max(m, s[c]);
            float sum = row_sum[r] * std::exp(row_max[r] - m);
            for (int c = 0; c < visible; ++c) sum += std::exp(s[c] - m);
            row_max[r] = m;
            row_sum[r] = sum;
          } else {
            const float w = (p.weights ? p.weights[i0 + r] : 1.0f) / row_sum[r];
            float* out = p.scores + j0;
            for (int c = 0; c < visible; ++c) out[c] += w * std::exp(s[c] - row_max[r]);
          }
        }
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace dapq::kernels::ref
