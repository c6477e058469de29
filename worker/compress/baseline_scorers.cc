// File: worker/compress/baseline_scorers.cc
// Baselines that need no attention pass: StreamingLLM (recency: the selector keeps the sinks and
// the latest tokens), Random (a seeded control), and ExpectedAttention (kvpress): with the mean
// mu and covariance S of the pre-RoPE queries and the RoPE rotation averaged over the next T
// positions R, score_j = softmax_j(k_j.R mu / sqrt(d) + k_j' R S R' k_j / (2d)) * |v_j|.
#include <cblas.h>

#include <cmath>
#include <vector>

#include "worker/compress/internal/score_util.h"
#include "worker/compress/scorers.h"

namespace dapq::worker::compress {
namespace {

class StreamingScorer final : public Scorer {
 public:
  ScorerNeeds Needs() const override { return {}; }
  absl::Status Score(const ScoringInputs& in, std::span<float> scores) const override {
    for (int h = 0; h < in.kv_heads; ++h) {
      for (int j = 0; j < in.n; ++j)
        scores[static_cast<long>(h) * in.n + j] = static_cast<float>(j) / in.n;
    }
    return absl::OkStatus();
  }
};

class RandomScorer final : public Scorer {
 public:
  explicit RandomScorer(uint64_t seed) : seed_(seed) {}
  ScorerNeeds Needs() const override { return {}; }
  absl::Status Score(const ScoringInputs& in, std::span<float> scores) const override {
    for (int h = 0; h < in.kv_heads; ++h) {
      for (int j = 0; j < in.n; ++j) {
        scores[static_cast<long>(h) * in.n + j] =
            static_cast<float>(internal::HashUniform(seed_, in.layer, in.kv_head_begin + h, j));
      }
    }
    return absl::OkStatus();
  }

 private:
  uint64_t seed_;
};

class ExpectedAttentionScorer final : public Scorer {
 public:
  explicit ExpectedAttentionScorer(const CompressionConfig& c) : c_(c) {}
  ScorerNeeds Needs() const override { return {0, false, true, 0}; }

  absl::Status Score(const ScoringInputs& in, std::span<float> scores) const override {
    if (in.query_sum == nullptr || in.query_outer == nullptr || in.query_count <= 0) {
      return absl::InternalError("expected_attention: no query statistics collected");
    }
    const int d = in.head_dim, half = d / 2, n = in.n;
    const int group = in.q_heads / in.kv_heads;
    // Averaged rotation per frequency over positions next_position .. + T - 1.
    std::vector<double> cbar(half), sbar(half);
    for (int i = 0; i < half; ++i) {
      double cs = 0, sn = 0;
      for (int t = 0; t < c_.expected_future; ++t) {
        const double angle = static_cast<double>(in.next_position + t) * in.inv_freq[i];
        cs += std::cos(angle);
        sn += std::sin(angle);
      }
      cbar[i] = cs / c_.expected_future;
      sbar[i] = sn / c_.expected_future;
    }
    auto pair = [&](int i) {
      return in.rope_layout == kernels::RopeLayout::kInterleaved ? std::pair{2 * i, 2 * i + 1}
                                                                 : std::pair{i, i + half};
    };
    // x <- R x for a strided vector.
    auto rotate = [&](double* x, long stride) {
      for (int i = 0; i < half; ++i) {
        const auto [a, b] = pair(i);
        const double xa = x[a * stride], xb = x[b * stride];
        x[a * stride] = cbar[i] * xa - sbar[i] * xb;
        x[b * stride] = sbar[i] * xa + cbar[i] * xb;
      }
    };
    std::fill(scores.begin(), scores.end(), 0.0f);
    std::vector<double> mu(d), cov(static_cast<size_t>(d) * d);
    std::vector<float> cov_f(static_cast<size_t>(d) * d), ks(static_cast<size_t>(n) * d), logit(n);
    std::vector<float> vnorm(n);
    for (int h = 0; h < in.q_heads; ++h) {
      const int kvh = h / group;
      const double count = static_cast<double>(in.query_count);
      for (int e = 0; e < d; ++e) mu[e] = in.query_sum[static_cast<long>(h) * d + e] / count;
      for (int a = 0; a < d; ++a) {
        for (int b = 0; b < d; ++b) {
          cov[a * d + b] =
              in.query_outer[(static_cast<long>(h) * d + a) * d + b] / count - mu[a] * mu[b];
        }
      }
      rotate(mu.data(), 1);
      for (int col = 0; col < d; ++col) rotate(cov.data() + col, d);  // R S
      for (int row = 0; row < d; ++row)
        rotate(cov.data() + static_cast<long>(row) * d, 1);  // (R S) R'
      for (size_t e = 0; e < cov.size(); ++e) cov_f[e] = static_cast<float>(cov[e]);
      const float* k = in.keys + kvh * in.kv_head_stride;
      const float* v = in.values + kvh * in.kv_head_stride;
      // ks = K . S'  (S' symmetric), logit_j = k_j.mu'/sqrt(d) + (ks_j . k_j) / (2d)
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, d, d, 1.0f, k, d, cov_f.data(), d,
                  0.0f, ks.data(), d);
      float max_logit = -INFINITY;
      for (int j = 0; j < n; ++j) {
        double lin = 0, quad = 0, vn = 0;
        for (int e = 0; e < d; ++e) {
          lin += double(k[static_cast<long>(j) * d + e]) * mu[e];
          quad += double(ks[static_cast<long>(j) * d + e]) * k[static_cast<long>(j) * d + e];
          vn += double(v[static_cast<long>(j) * d + e]) * v[static_cast<long>(j) * d + e];
        }
        logit[j] = static_cast<float>(lin / std::sqrt(double(d)) + quad / (2.0 * d));
        vnorm[j] = static_cast<float>(std::sqrt(vn));
        max_logit = std::max(max_logit, logit[j]);
      }
      double sum = 0;
      for (int j = 0; j < n; ++j) sum += std::exp(double(logit[j]) - max_logit);
      float* out = scores.data() + static_cast<long>(kvh) * n;
      for (int j = 0; j < n; ++j) {
        out[j] +=
            static_cast<float>(std::exp(double(logit[j]) - max_logit) / sum) * vnorm[j] / group;
      }
    }
    return absl::OkStatus();
  }

 private:
  CompressionConfig c_;
};

}  // namespace

std::unique_ptr<Scorer> MakeStreamingScorer(const CompressionConfig&) {
  return std::make_unique<StreamingScorer>();
}
std::unique_ptr<Scorer> MakeRandomScorer(const CompressionConfig& c) {
  return std::make_unique<RandomScorer>(c.seed);
}
std::unique_ptr<Scorer> MakeExpectedAttentionScorer(const CompressionConfig& c) {
  return std::make_unique<ExpectedAttentionScorer>(c);
}

}  // namespace dapq::worker::compress
