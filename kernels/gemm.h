// File: kernels/gemm.h
// Dense fp32 matrix multiply for the linear layers: C = alpha * A * op(B) + beta * C.
// CPU: OpenBLAS (chosen by measurement against the reference BLAS, bench/README.md).
#ifndef DAPQ_KERNELS_GEMM_H_
#define DAPQ_KERNELS_GEMM_H_

#include "absl/status/status.h"
#include "kernels/types.h"

namespace dapq::kernels {

// a: [m, k] row-major, row stride lda (elements).
// b: trans_b ? [n, k] row-major (a weight in (out, in) layout) : [k, n] row-major; stride ldb.
// c: [m, n] row-major, row stride ldc.
struct GemmParams {
  int m = 0, n = 0, k = 0;
  const float* a = nullptr;
  int lda = 0;
  const float* b = nullptr;
  int ldb = 0;
  bool trans_b = true;
  float* c = nullptr;
  int ldc = 0;
  float alpha = 1.0f;
  float beta = 0.0f;
};

// InvalidArgument on bad shapes/strides/null pointers; Unimplemented for a backend not built.
absl::Status Gemm(const GemmParams& p, Stream stream = {});

// Validation shared by every backend.
absl::Status ValidateGemm(const GemmParams& p);

}  // namespace dapq::kernels

#endif  // DAPQ_KERNELS_GEMM_H_
