// File: kernels/gemm.h
// Dense matrix multiply for the linear layers: C = alpha * A * op(B) + beta * C, A and C fp32, B
// (the weight) fp32 or bf16 (b_dtype; bf16 only with trans_b, alpha 1, beta 0: a linear layer).
// CPU: small m through our own kernel (kernels/ref/small_gemm.h), the rest through OpenBLAS
// (chosen by measurement against the reference BLAS, bench/README.md); bf16 weights are widened
// to fp32 in registers (small m) or panel by panel (larger m): the arithmetic is fp32.
#ifndef DAPQ_KERNELS_GEMM_H_
#define DAPQ_KERNELS_GEMM_H_

#include <cstdint>

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
  const float* b = nullptr;  // b_dtype kF32
  int ldb = 0;
  bool trans_b = true;
  float* c = nullptr;
  int ldc = 0;
  float alpha = 1.0f;
  float beta = 0.0f;
  DType b_dtype = DType::kF32;
  const uint16_t* b_bf16 = nullptr;  // b_dtype kBF16
};

// InvalidArgument on bad shapes/strides/null pointers; Unimplemented for a backend not built.
absl::Status Gemm(const GemmParams& p, Stream stream = {});

// Validation shared by every backend.
absl::Status ValidateGemm(const GemmParams& p);

}  // namespace dapq::kernels

#endif  // DAPQ_KERNELS_GEMM_H_
