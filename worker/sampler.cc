// File: worker/sampler.cc
// Greedy, multinomial and top-p sampling (llama2.c's sample_mult / sample_topp).
#include "worker/sampler.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "kernels/softmax.h"

namespace dapq::worker {

absl::Status SamplingOptions::Validate() const {
  if (!std::isfinite(temperature) || temperature < 0.0f) {
    return absl::InvalidArgumentError(absl::StrCat("temperature=", temperature, " must be >= 0"));
  }
  if (!(top_p > 0.0f && top_p <= 1.0f)) {
    return absl::InvalidArgumentError(absl::StrCat("top_p=", top_p, " must be in (0, 1]"));
  }
  return absl::OkStatus();
}

Sampler::Sampler(const SamplingOptions& options)
    : options_(options), state_(options.seed == 0 ? 0x2545F4914F6CDD1Dull : options.seed) {}

float Sampler::NextUniform() {
  state_ ^= state_ >> 12;
  state_ ^= state_ << 25;
  state_ ^= state_ >> 27;
  const auto u32 = static_cast<uint32_t>((state_ * 0x2545F4914F6CDD1Dull) >> 32);
  return static_cast<float>(u32 >> 8) / 16777216.0f;
}

int ArgMax(std::span<const float> values) {
  int best = 0;
  for (int i = 1; i < static_cast<int>(values.size()); ++i) {
    if (values[i] > values[best]) best = i;
  }
  return best;
}

int Sampler::Sample(std::span<float> logits) {
  const int n = static_cast<int>(logits.size());
  if (options_.temperature == 0.0f || n == 1) return ArgMax(logits);
  for (float& l : logits) l /= options_.temperature;
  kernels::SoftmaxParams sm{1, n, logits.data(), n};
  if (!kernels::Softmax(sm).ok()) return ArgMax(logits);
  const float coin = NextUniform();
  if (options_.top_p >= 1.0f) {
    float cdf = 0.0f;
    for (int i = 0; i < n; ++i) {
      cdf += logits[i];
      if (coin < cdf) return i;
    }
    return n - 1;
  }
  // Top-p: candidates above (1 - top_p) / (n - 1) can be in the nucleus (llama2.c's cutoff).
  const float cutoff = (1.0f - options_.top_p) / static_cast<float>(n - 1);
  candidates_.clear();
  for (int i = 0; i < n; ++i) {
    if (logits[i] >= cutoff) candidates_.emplace_back(logits[i], i);
  }
  if (candidates_.empty()) return ArgMax(logits);
  std::sort(candidates_.begin(), candidates_.end(), [](const auto& a, const auto& b) {
    return a.first != b.first ? a.first > b.first : a.second < b.second;
  });
  float cumulative = 0.0f;
  size_t last = candidates_.size() - 1;
  for (size_t i = 0; i < candidates_.size(); ++i) {
    cumulative += candidates_[i].first;
    if (cumulative > options_.top_p) {
      last = i;
      break;
    }
  }
  const float r = coin * cumulative;
  float cdf = 0.0f;
  for (size_t i = 0; i <= last; ++i) {
    cdf += candidates_[i].first;
    if (r < cdf) return candidates_[i].second;
  }
  return candidates_[last].second;
}

}  // namespace dapq::worker
