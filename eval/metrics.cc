// File: eval/metrics.cc
// Log-probabilities, KL divergence and attention mass in double precision.
#include "eval/metrics.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/check.h"
#include "common/status_macros.h"

namespace dapq::eval {
namespace {

// log sum exp of a row, in double.
double LogSumExp(std::span<const float> x) {
  double mx = -INFINITY;
  for (float v : x) mx = std::max(mx, static_cast<double>(v));
  double z = 0;
  for (float v : x) z += std::exp(static_cast<double>(v) - mx);
  return mx + std::log(z);
}

}  // namespace

double LogProb(std::span<const float> logits, int token) {
  return static_cast<double>(logits[token]) - LogSumExp(logits);
}

int Argmax(std::span<const float> logits) {
  return static_cast<int>(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

NeedleScore ScoreNeedle(std::span<const float> logits, int vocab, int cue_tokens,
                        std::span<const int> needle) {
  DAPQ_CHECK(cue_tokens >= 1) << "the needle must follow at least one fed cue token";
  NeedleScore s;
  s.exact_match = true;
  for (size_t t = 0; t < needle.size(); ++t) {
    const auto row = logits.subspan((cue_tokens - 1 + t) * vocab, vocab);
    s.log_prob += LogProb(row, needle[t]);
    if (Argmax(row) != needle[t]) s.exact_match = false;
  }
  return s;
}

double MeanKl(std::span<const float> ref, std::span<const float> logits, int vocab) {
  DAPQ_CHECK(ref.size() == logits.size() && ref.size() % vocab == 0);
  const size_t rows = ref.size() / vocab;
  if (rows == 0) return 0;
  double total = 0;
  for (size_t r = 0; r < rows; ++r) {
    const auto p = ref.subspan(r * vocab, vocab), q = logits.subspan(r * vocab, vocab);
    const double lzp = LogSumExp(p), lzq = LogSumExp(q);
    double kl = 0;
    for (int v = 0; v < vocab; ++v) {
      const double lp = p[v] - lzp, lq = q[v] - lzq;
      kl += std::exp(lp) * (lp - lq);
    }
    total += kl;
  }
  return total / static_cast<double>(rows);
}

AttentionProfile::AttentionProfile(int layers, int heads, int prompt_tokens)
    : n_layers(layers),
      n_heads(heads),
      n_prompt(prompt_tokens),
      mass(static_cast<size_t>(layers) * heads * prompt_tokens, 0.0) {}

absl::Status AttentionRecorder::OnQueries(int layer, int m, const int32_t* /*positions*/,
                                          const float* /*q_pre*/, const float* q_post,
                                          std::span<const int32_t> kv_lens,
                                          const worker::KvCache& cache) {
  const int n = profile_->n_prompt, d = cache.head_dim();
  const int local_heads = static_cast<int>(kv_lens.size()) * group_;
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  scores_.resize(n);
  for (int hk = 0; hk < static_cast<int>(kv_lens.size()); ++hk) {
    const std::span<const int32_t> pos = cache.positions(layer, hk);
    if (static_cast<int>(pos.size()) != n) {
      return absl::FailedPreconditionError(
          absl::StrCat("attention recorder: layer ", layer, " KV head ", hk, " holds ", pos.size(),
                       " committed slots, expected the full prompt of ", n));
    }
    for (int32_t p : pos) {
      if (p < 0 || p >= n) {
        return absl::FailedPreconditionError(
            absl::StrCat("attention recorder: prompt slot at position ", p, " outside [0, ", n,
                         "): record on a fresh full-cache sequence"));
      }
    }
    std::vector<float> key_rows(static_cast<size_t>(n) * d);
    DAPQ_RETURN_IF_ERROR(cache.Gather(layer, hk, 0, n, key_rows.data(), nullptr));
    const float* keys = key_rows.data();
    for (int g = 0; g < group_; ++g) {
      const int h = hk * group_ + g;
      double* out = profile_->row(layer, head_begin_ + h);
      for (int t = 0; t < m; ++t) {
        const float* q = q_post + (static_cast<long>(t) * local_heads + h) * d;
        double mx = -INFINITY;
        for (int j = 0; j < n; ++j) {
          double dot = 0;
          for (int i = 0; i < d; ++i) dot += static_cast<double>(q[i]) * keys[j * d + i];
          scores_[j] = dot * scale;
          mx = std::max(mx, scores_[j]);
        }
        double z = 0;
        for (int j = 0; j < n; ++j) z += (scores_[j] = std::exp(scores_[j] - mx));
        for (int j = 0; j < n; ++j) out[pos[j]] += scores_[j] / z;
      }
    }
  }
  if (layer == 0 && head_begin_ == 0) profile_->steps += m;
  return absl::OkStatus();
}

double KeptAttentionMass(const AttentionProfile& profile, int group, const KeptPositions& kept) {
  if (profile.steps == 0 || profile.n_heads == 0 || profile.n_layers == 0) return 0;
  double total = 0;
  for (int l = 0; l < profile.n_layers; ++l) {
    for (int h = 0; h < profile.n_heads; ++h) {
      const double* row = profile.row(l, h);
      double s = 0;
      for (int32_t p : kept(l, h / group)) {
        if (p >= 0 && p < profile.n_prompt) s += row[p];
      }
      total += s / profile.steps;
    }
  }
  return total / (static_cast<double>(profile.n_layers) * profile.n_heads);
}

}  // namespace dapq::eval
