// File: kernels/ref/bf16_matmul.h
// Linear layers with bf16 weights at prefill sizes (m > kSmallGemmMaxM) through oneDNN's bf16
// matmul, which uses the CPU's AVX-512 BF16 (or AMX) instructions where it has them: the
// activations are rounded to bf16 (as llama.cpp's and PyTorch's bf16 paths do), the products
// accumulate in fp32 and C is fp32. Primitives (their kernels are compiled when created) are kept
// per shape, with m rounded up to a multiple of 64 so that every prompt length shares a bounded
// set of them.
// Without oneDNN in the build (DAPQ_HAVE_DNNL unset), or on a CPU without AVX512-BF16 (where
// oneDNN's bf16 matmul is emulated or reference code), Bf16Matmul returns false and the caller
// widens the weights to fp32 for OpenBLAS.
// Thread-safety: thread-safe (the primitive cache is locked; each thread has its own stream and
// scratch).
#ifndef DAPQ_KERNELS_REF_BF16_MATMUL_H_
#define DAPQ_KERNELS_REF_BF16_MATMUL_H_

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/gemm.h"

namespace dapq::kernels::ref {

// Runs p (b_dtype kBF16, trans_b, alpha 1, beta 0) when oneDNN is built in and the CPU has
// AVX512-BF16; false otherwise (nothing written).
bool Bf16Matmul(const GemmParams& p);

// Tiles of work its caller has already split over the kernel threads (prefill attention over a
// bf16 cache, AttentionParams::round_to_kv_dtype): C[m, n] = alpha * A[m, k] . op(B), plus C
// when `accumulate`; A and B bf16 row-major, op(B) = B[n, k]^T when trans_b, else B[k, n]; C
// fp32. Runs on the calling thread alone (a one-thread OpenMP team), so a product's bits do not
// depend on the thread count. One primitive per distinct shape: callers keep their shapes few
// (padding). UnimplementedError without oneDNN. HaveTileGemmBf16(): oneDNN is built in and the
// CPU has AVX512-BF16, so these products beat the fp32 ones (callers use them only then).
absl::Status TileGemmBf16(bool trans_b, int m, int n, int k, float alpha, const uint16_t* a,
                          int lda, const uint16_t* b, int ldb, bool accumulate, float* c, int ldc);
bool HaveTileGemmBf16();

// "onednn <version>" or "none" (no oneDNN, or no AVX512-BF16): what Bf16Matmul runs on.
const char* Bf16MatmulBackend();

}  // namespace dapq::kernels::ref

#endif  // DAPQ_KERNELS_REF_BF16_MATMUL_H_
