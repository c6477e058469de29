// File: kernels/rms_norm.h
// RMSNorm: out[r, i] = x[r, i] * weight[i] / sqrt(mean_i(x[r, i]^2) + eps), fp32 accumulation,
// alone or fused with the residual add before it (AddRmsNorm).
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

// The residual add fused with the next RMSNorm, as every layer boundary of the forward pass
// needs it: x[r, i] += residual[r, i], then (when out is set) out = RMSNorm(x) with weight.
// Bit-identical to the add followed by RmsNorm: the same fp32 operations in the same order.
// x: [rows, dim] updated in place; residual: [rows, dim]; out may not alias x or residual; with
// out null (the last layer, whose final norm runs on chosen rows only) weight is unused.
struct AddRmsNormParams {
  int rows = 0, dim = 0;
  float* x = nullptr;
  int x_stride = 0;
  const float* residual = nullptr;
  int residual_stride = 0;
  const float* weight = nullptr;
  float* out = nullptr;
  int out_stride = 0;
  float eps = 1e-5f;
};

absl::Status AddRmsNorm(const AddRmsNormParams& p, Stream stream = {});
absl::Status ValidateAddRmsNorm(const AddRmsNormParams& p);

}  // namespace dapq::kernels

#endif  // DAPQ_KERNELS_RMS_NORM_H_
