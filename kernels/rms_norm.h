// File: kernels/rms_norm.h
// RMSNorm: out[r, i] = x[r, i] * weight[i] / sqrt(mean_i(x[r, i]^2) + eps), fp32 accumulation.
#ifndef DAPQ_KERNELS_RMS_NORM_H_
#define DAPQ_KERNELS_RMS_NORM_H_

#include "absl/status/status.h"
#include "kernels/types.h"

namespace dapq::kernels {

// x, out: [rows, dim], row strides x_stride / out_stride (elements); out may alias x.
// weight: [dim].
struct RmsNormParams {
  int rows = 0, dim = 0;
  const float* x = nullptr;
  int x_stride = 0;
  const float* weight = nullptr;
  float* out = nullptr;
  int out_stride = 0;
  float eps = 1e-5f;
};

absl::Status RmsNorm(const RmsNormParams& p, Stream stream = {});
absl::Status ValidateRmsNorm(const RmsNormParams& p);

}  // namespace dapq::kernels

#endif  // DAPQ_KERNELS_RMS_NORM_H_
