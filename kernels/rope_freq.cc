// File: kernels/rope_freq.cc
// RoPE inverse frequencies with Llama-3 scaling (host code shared by every backend).
#include <cmath>
#include <numbers>

#include "absl/strings/str_cat.h"
#include "kernels/rope.h"

namespace dapq::kernels {

absl::StatusOr<std::vector<float>> ComputeRopeInvFreq(const RopeConfig& c) {
  if (c.head_dim <= 0 || c.head_dim % 2 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("rope: head_dim=", c.head_dim, " must be even and positive"));
  }
  if (!(c.theta > 1.0f)) {
    return absl::InvalidArgumentError(absl::StrCat("rope: theta=", c.theta, " must be > 1"));
  }
  const RopeScaling& s = c.scaling;
  const bool scaled = s.factor > 0.0f;
  if (scaled &&
      (s.factor < 1.0f || s.low_freq_factor <= 0.0f || s.high_freq_factor <= s.low_freq_factor ||
       s.original_max_position_embeddings <= 0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "rope_scaling: need factor >= 1, 0 < low_freq_factor < high_freq_factor and "
        "original_max_position_embeddings > 0; got factor=",
        s.factor, " low_freq_factor=", s.low_freq_factor, " high_freq_factor=", s.high_freq_factor,
        " original_max_position_embeddings=", s.original_max_position_embeddings));
  }
  std::vector<float> inv(c.head_dim / 2);
  for (int i = 0; i < c.head_dim / 2; ++i) {
    inv[i] = 1.0f / std::pow(c.theta, static_cast<float>(2 * i) / static_cast<float>(c.head_dim));
  }
  if (!scaled) return inv;
  const double old_len = s.original_max_position_embeddings;
  const double low_wavelen = old_len / s.low_freq_factor;
  const double high_wavelen = old_len / s.high_freq_factor;
  for (float& f : inv) {
    const double wavelen = 2.0 * std::numbers::pi / f;
    if (wavelen > low_wavelen) {
      f = static_cast<float>(f / s.factor);
    } else if (wavelen >= high_wavelen) {
      const double smooth =
          (old_len / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
      f = static_cast<float>((1.0 - smooth) * f / s.factor + smooth * f);
    }
  }
  return inv;
}

}  // namespace dapq::kernels
