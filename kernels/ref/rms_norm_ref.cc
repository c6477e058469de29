// File: kernels/ref/rms_norm_ref.cc
// RMSNorm reference: fp32 sum of squares, 1/sqrtf(mean + eps), out = weight * (scale * x),
// the exact operation order of llama2.c's rmsnorm.
#include <cmath>

#include "kernels/ref/ref_ops.h"

namespace dapq::kernels::ref {

absl::Status RmsNormRef(const RmsNormParams& p) {
  for (int r = 0; r < p.rows; ++r) {
    const float* x = p.x + static_cast<long>(r) * p.x_stride;
    float* o = p.out + static_cast<long>(r) * p.out_stride;
    float ss = 0.0f;
    for (int i = 0; i < p.dim; ++i) ss += x[i] * x[i];
    ss /= static_cast<float>(p.dim);
    ss += p.eps;
    const float scale = 1.0f / std::sqrt(ss);
    for (int i = 0; i < p.dim; ++i) o[i] = p.weight[i] * (scale * x[i]);
  }
  return absl::OkStatus();
}

}  // namespace dapq::kernels::ref
