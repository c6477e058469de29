// File: kernels/ref/bf16_matmul.h
// Linear layers with bf16 weights at prefill sizes (m > kSmallGemmMaxM) through oneDNN's bf16
// matmul, which uses the CPU's AVX-512 BF16 (or AMX) instructions where it has them: the
// activations are rounded to bf16 (as llama.cpp's and PyTorch's bf16 paths do), the products
// accumulate in fp32 and C is fp32. Primitives (their kernels are compiled when created) are kept
// per shape, with m rounded up to a multiple of 64 so that every prompt length shares a bounded
// set of them.
// Without oneDNN in the build (DAPQ_HAVE_DNNL unset) Bf16Matmul returns false and the caller
// widens the weights to fp32 for OpenBLAS.
// Thread-safety: thread-safe (the primitive cache is locked; each thread has its own stream and
// scratch).
#ifndef DAPQ_KERNELS_REF_BF16_MATMUL_H_
#define DAPQ_KERNELS_REF_BF16_MATMUL_H_

#include "kernels/gemm.h"

namespace dapq::kernels::ref {

// Runs p (b_dtype kBF16, trans_b, alpha 1, beta 0) when oneDNN is built in; false otherwise
// (nothing written).
bool Bf16Matmul(const GemmParams& p);

// "onednn <version>" or "none": what Bf16Matmul runs on.
const char* Bf16MatmulBackend();

}  // namespace dapq::kernels::ref

#endif  // DAPQ_KERNELS_REF_BF16_MATMUL_H_
