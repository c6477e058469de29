// File: kernels/ref/small_gemm.h
// The linear layers at small batch (decode): C[m, n] = A[m, k] . B[n, k]^T for m <= kSmallGemmMaxM
// without packing, streaming each weight row from memory once per call. The row tile of B stays in
// cache while every row of A is multiplied with it, so the call reads the weights at memory
// speed and does m multiply-adds per weight element (OpenBLAS's sgemm packs the whole weight
// matrix on every small-m call; its sgemv serves m = 1 only).
// Every output element is one fixed sequence of vector multiply-adds over k followed by one fixed
// lane reduction, whatever m, the tile shapes or the threads: a row of A gives bit-identical
// outputs alone or in a batch (decode alone and in a continuous batch agree exactly).
// Weights fp32 or bf16 (GemmParams::b_dtype): bf16 rows are widened in registers, so decode
// reads half the bytes. Instruction sets: AVX-512F (16 lanes) or AVX2+FMA (8 lanes), chosen at
// run time; other CPUs return false and the caller uses OpenBLAS.
#ifndef DAPQ_KERNELS_REF_SMALL_GEMM_H_
#define DAPQ_KERNELS_REF_SMALL_GEMM_H_

#include "kernels/gemm.h"

namespace dapq::kernels::ref {

// Up to 64 rows it matches or beats OpenBLAS's sgemm in our measurements (bench/README.md), so a
// decode batch of up to 64 sequences runs here.
inline constexpr int kSmallGemmMaxM = 64;

// Runs p when it is a small-m product this kernel serves (trans_b, alpha 1, beta 0,
// m <= kSmallGemmMaxM, a CPU with AVX2+FMA or AVX-512F); false otherwise (nothing written).
bool SmallGemm(const GemmParams& p);

// Which implementation SmallGemm runs on this CPU: "avx512", "avx2" or "none".
const char* SmallGemmIsa();

}  // namespace dapq::kernels::ref

#endif  // DAPQ_KERNELS_REF_SMALL_GEMM_H_
