// File: kernels/activation.h
// SwiGLU: out[r, i] = silu(gate[r, i]) * up[r, i], silu(x) = x / (1 + exp(-x)).
#ifndef DAPQ_KERNELS_ACTIVATION_H_
#define DAPQ_KERNELS_ACTIVATION_H_

#include "absl/status/status.h"
#include "kernels/types.h"

namespace dapq::kernels {

// gate, up, out: [rows, cols] with row strides (elements); out may alias gate or up.
struct SwiGluParams {
  int rows = 0, cols = 0;
  const float* gate = nullptr;
  int gate_stride = 0;
  const float* up = nullptr;
  int up_stride = 0;
  float* out = nullptr;
  int out_stride = 0;
};

absl::Status SwiGlu(const SwiGluParams& p, Stream stream = {});
absl::Status ValidateSwiGlu(const SwiGluParams& p);

}  // namespace dapq::kernels

#endif  // DAPQ_KERNELS_ACTIVATION_H_
