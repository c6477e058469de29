// File: kernels/ref/rope_ref.cc
// RoPE reference, both layouts; angle = pos * inv_freq[i] in fp32 as llama2.c computes it.
#include <cmath>

#include "kernels/ref/ref_ops.h"

namespace dapq::kernels::ref {

absl::Status RopeRef(const RopeParams& p) {
  const int half = p.head_dim / 2;
  for (int t = 0; t < p.tokens; ++t) {
    const float pos = static_cast<float>(p.positions[t]);
    for (int h = 0; h < p.heads; ++h) {
      float* x = p.x + static_cast<long>(t) * p.x_stride + static_cast<long>(h) * p.head_dim;
      for (int i = 0; i < half; ++i) {
        const float angle = pos * p.inv_freq[i];
        const float c = std::cos(angle), s = std::sin(angle);
        const int i0 = p.layout == RopeLayout::kInterleaved ? 2 * i : i;
        const int i1 = p.layout == RopeLayout::kInterleaved ? 2 * i + 1 : i + half;
        const float v0 = x[i0], v1 = x[i1];
        x[i0] = v0 * c - v1 * s;
        x[i1] = v0 * s + v1 * c;
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace dapq::kernels::ref
