// File: worker/compress/attention_scorers.cc
// Baselines scored with real prompt queries:
//  - SnapKV: the last w post-RoPE queries (causal inside the window), summed, GQA mean.
//  - H2O (prefill form): every prompt query's attention, accumulated during prefill; optionally
//    divided by the number of queries that saw each key (n - j).
//  - TOVA (prefill form): the last query's attention; one set per layer (shared storage sums
//    it over every head of the layer).
#include "common/status_macros.h"
#include "worker/compress/internal/score_util.h"
#include "worker/compress/scorers.h"

namespace dapq::worker::compress {
namespace {

// The last `rows` window queries (post-RoPE) with a causal mask, summed.
absl::Status LastQueriesMass(const ScoringInputs& in, int rows, std::span<float> scores) {
  std::fill(scores.begin(), scores.end(), 0.0f);
  rows = std::min(rows, in.window_rows);
  if (rows == 0) return absl::InternalError("no prompt queries captured");
  std::vector<int32_t> limits(rows);
  for (int i = 0; i < rows; ++i) limits[i] = in.n - rows + i + 1;
  const long row_elems = static_cast<long>(in.q_heads) * in.head_dim;
  const float* q = in.window_q_post + (in.window_rows - rows) * row_elems;
  return internal::GroupAttentionMass(in, q, rows, limits.data(), nullptr, scores);
}

class SnapKvScorer final : public Scorer {
 public:
  explicit SnapKvScorer(const CompressionConfig& c) : c_(c) {}
  ScorerNeeds Needs() const override { return {c_.query_window, false, false, 0}; }
  absl::Status Score(const ScoringInputs& in, std::span<float> scores) const override {
    return LastQueriesMass(in, c_.query_window, scores);
  }

 private:
  CompressionConfig c_;
};

class TovaScorer final : public Scorer {
 public:
  ScorerNeeds Needs() const override { return {1, false, false, 0}; }
  absl::Status Score(const ScoringInputs& in, std::span<float> scores) const override {
    return LastQueriesMass(in, 1, scores);
  }
};

class H2oScorer final : public Scorer {
 public:
  explicit H2oScorer(const CompressionConfig& c) : c_(c) {}
  ScorerNeeds Needs() const override { return {0, true, false, 0}; }
  absl::Status Score(const ScoringInputs& in, std::span<float> scores) const override {
    if (in.accumulated_attention == nullptr) {
      return absl::InternalError("h2o: no accumulated attention collected");
    }
    const float inv_group = static_cast<float>(in.kv_heads) / static_cast<float>(in.q_heads);
    for (int h = 0; h < in.kv_heads; ++h) {
      for (int j = 0; j < in.n; ++j) {
        float s = in.accumulated_attention[static_cast<long>(h) * in.n + j] * inv_group;
        if (c_.h2o_normalize) s /= static_cast<float>(in.n - j);
        scores[static_cast<long>(h) * in.n + j] = s;
      }
    }
    return absl::OkStatus();
  }

 private:
  CompressionConfig c_;
};

}  // namespace

std::unique_ptr<Scorer> MakeSnapKvScorer(const CompressionConfig& c) {
  return std::make_unique<SnapKvScorer>(c);
}
std::unique_ptr<Scorer> MakeTovaScorer(const CompressionConfig&) {
  return std::make_unique<TovaScorer>();
}
std::unique_ptr<Scorer> MakeH2oScorer(const CompressionConfig& c) {
  return std::make_unique<H2oScorer>(c);
}

}  // namespace dapq::worker::compress
