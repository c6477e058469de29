// File: kernels/ref/activation_ref.cc
// SwiGLU reference: silu(g) = g * (1 / (1 + expf(-g))), times up (llama2.c order).
#include <cmath>

#include "kernels/ref/ref_ops.h"

namespace dapq::kernels::ref {

absl::Status SwiGluRef(const SwiGluParams& p) {
  for (int r = 0; r < p.rows; ++r) {
    const float* g = p.gate + static_cast<long>(r) * p.gate_stride;
    const float* u = p.up + static_cast<long>(r) * p.up_stride;
    float* o = p.out + static_cast<long>(r) * p.out_stride;
    for (int i = 0; i < p.cols; ++i) {
      float v = g[i];
      v *= 1.0f / (1.0f + std::exp(-v));
      o[i] = v * u[i];
    }
  }
  return absl::OkStatus();
}

}  // namespace dapq::kernels::ref
