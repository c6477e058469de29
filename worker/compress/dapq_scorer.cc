// File: worker/compress/dapq_scorer.cc
// DapQ: pseudo queries q~_i = RoPE(c_i, p_i) whose content c_i comes from the last prompt
// queries (pre-RoPE) and whose positions p_i are the future decode positions n + offset +
// i * stride (or the window's actual positions); s_j = sum_i gamma^i softmax_j(q~_i . k_j).
// With positions=actual the window is causal, so content=last reproduces SnapKV exactly.
// Forward mode scores with the queries of placeholder tokens run through the layers instead.
#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "kernels/rope.h"
#include "worker/compress/internal/score_util.h"
#include "worker/compress/scorers.h"

namespace dapq::worker::compress {
namespace {

class DapqScorer final : public Scorer {
 public:
  explicit DapqScorer(const CompressionConfig& c) : c_(c) {}

  ScorerNeeds Needs() const override {
    ScorerNeeds needs;
    needs.window_rows = std::max(c_.query_window, c_.mean_tokens);
    if (c_.mode == DapqMode::kForward) needs.pseudo_tokens = c_.query_window;
    return needs;
  }

  absl::Status Score(const ScoringInputs& in, std::span<float> scores) const override {
    std::fill(scores.begin(), scores.end(), 0.0f);
    const int wp = c_.query_window;
    std::vector<float> weights(wp);
    for (int i = 0; i < wp; ++i) weights[i] = std::pow(c_.gamma, static_cast<float>(i));
    if (c_.mode == DapqMode::kForward) {
      if (in.pseudo_rows != wp || in.pseudo_q_post == nullptr) {
        return absl::InternalError(absl::StrCat("dapq forward: ", in.pseudo_rows,
                                                " placeholder queries captured, expected ", wp));
      }
      return internal::GroupAttentionMass(in, in.pseudo_q_post, wp, nullptr, weights.data(),
                                          scores);
    }
    const int rows = std::min(wp, in.window_rows);
    if (rows == 0) return absl::InternalError("dapq: no prompt queries captured");
    DAPQ_ASSIGN_OR_RETURN(std::vector<float> pseudo, Content(in, rows));
    // Positions and RoPE.
    std::vector<int32_t> positions(rows), limits(rows);
    for (int i = 0; i < rows; ++i) {
      if (c_.positions == Positions::kFuture) {
        positions[i] = in.next_position + c_.offset + i * c_.stride;
      } else {
        positions[i] = in.window_positions[in.window_rows - rows + i];
        limits[i] = in.n - rows + i + 1;  // causal inside the window, as SnapKV
      }
    }
    const int row_elems = in.q_heads * in.head_dim;
    kernels::RopeParams rope{rows,      in.q_heads,       in.head_dim, pseudo.data(),
                             row_elems, positions.data(), in.inv_freq, in.rope_layout};
    DAPQ_RETURN_IF_ERROR(kernels::Rope(rope));
    return internal::GroupAttentionMass(
        in, pseudo.data(), rows, c_.positions == Positions::kActual ? limits.data() : nullptr,
        weights.data(), scores);
  }

 private:
  // Pre-RoPE content rows [rows, q_heads, head_dim].
  absl::StatusOr<std::vector<float>> Content(const ScoringInputs& in, int rows) const {
    const int row_elems = in.q_heads * in.head_dim;
    const float* window_end = in.window_q_pre + static_cast<long>(in.window_rows) * row_elems;
    std::vector<float> out(static_cast<size_t>(rows) * row_elems, 0.0f);
    switch (c_.content) {
      case Content::kLast:
        std::copy(window_end - static_cast<long>(rows) * row_elems, window_end, out.begin());
        break;
      case Content::kLastToken:
        for (int i = 0; i < rows; ++i) {
          std::copy(window_end - row_elems, window_end,
                    out.begin() + static_cast<long>(i) * row_elems);
        }
        break;
      case Content::kMean: {
        const int m = std::min(c_.mean_tokens, in.window_rows);
        std::vector<float> mean(row_elems, 0.0f);
        for (int t = 0; t < m; ++t) {
          const float* q = window_end - static_cast<long>(m - t) * row_elems;
          for (int e = 0; e < row_elems; ++e) mean[e] += q[e] / static_cast<float>(m);
        }
        for (int i = 0; i < rows; ++i)
          std::copy(mean.begin(), mean.end(), out.begin() + static_cast<long>(i) * row_elems);
        break;
      }
      case Content::kRandom: {
        // Gaussian content with each head's RMS of the real window, seeded by global indices.
        for (int h = 0; h < in.q_heads; ++h) {
          double sq = 0;
          for (int t = 0; t < rows; ++t) {
            const float* q = window_end - static_cast<long>(rows - t) * row_elems + h * in.head_dim;
            for (int e = 0; e < in.head_dim; ++e) sq += double(q[e]) * q[e];
          }
          const double rms = std::sqrt(sq / (static_cast<double>(rows) * in.head_dim));
          for (int i = 0; i < rows; ++i) {
            for (int e = 0; e < in.head_dim; ++e) {
              const uint64_t key = static_cast<uint64_t>(in.q_head_begin + h) * 1000003u + e;
              const double u1 =
                  std::max(1e-12, internal::HashUniform(c_.seed, in.layer, key, 2 * i));
              const double u2 = internal::HashUniform(c_.seed, in.layer, key, 2 * i + 1);
              const double g = std::sqrt(-2 * std::log(u1)) * std::cos(2 * M_PI * u2);
              out[static_cast<size_t>(i) * row_elems + h * in.head_dim + e] =
                  static_cast<float>(g * rms);
            }
          }
        }
        break;
      }
      case Content::kZero:
        break;  // zero content: q~ = 0, uniform attention over all keys
    }
    return out;
  }

  CompressionConfig c_;
};

}  // namespace

std::unique_ptr<Scorer> MakeDapqScorer(const CompressionConfig& config) {
  return std::make_unique<DapqScorer>(config);
}

}  // namespace dapq::worker::compress
