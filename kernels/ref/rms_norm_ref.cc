// File: kernels/ref/rms_norm_ref.cc
// RMSNorm reference: fp32 sum of squares, 1/sqrtf(mean + eps), out = weight * (scale * x),
// the exact operation order of llama2.c's rmsnorm; AddRmsNorm adds the residual row first.
#include <cmath>

#include "kernels/ref/ref_ops.h"

namespace dapq::kernels::ref {

namespace {

void NormalizeRow(const float* x, const float* weight, float* o, int dim, float eps) {
  float ss = 0.0f;
  for (int i = 0; i < dim; ++i) ss += x[i] * x[i];
  ss /= static_cast<float>(dim);
  ss += eps;
  const float scale = 1.0f / std::sqrt(ss);
  for (int i = 0; i < dim; ++i) o[i] = weight[i] * (scale * x[i]);
}

}  // namespace

absl::Status RmsNormRef(const RmsNormParams& p) {
  for (int r = 0; r < p.rows; ++r) {
    NormalizeRow(p.x + static_cast<long>(r) * p.x_stride, p.weight,
                 p.out + static_cast<long>(r) * p.out_stride, p.dim, p.eps);
  }
  return absl::OkStatus();
}

absl::Status AddRmsNormRef(const AddRmsNormParams& p) {
  for (int r = 0; r < p.rows; ++r) {
    float* x = p.x + static_cast<long>(r) * p.x_stride;
    const float* residual = p.residual + static_cast<long>(r) * p.residual_stride;
    for (int i = 0; i < p.dim; ++i) x[i] += residual[i];
    if (p.out != nullptr) {
      NormalizeRow(x, p.weight, p.out + static_cast<long>(r) * p.out_stride, p.dim, p.eps);
    }
  }
  return absl::OkStatus();
}

}  // namespace dapq::kernels::ref
