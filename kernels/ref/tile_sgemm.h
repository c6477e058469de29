// File: kernels/ref/tile_sgemm.h
// fp32 GEMM for work its caller has already split over the kernel threads (prefill attention's
// (KV head, query tile) items): row-major C[m, n] = alpha * A[m, k] . op(B) + beta * C, op(B) =
// B[n, k]^T when trans_b, else B[k, n]. With oneDNN (dnnl_sgemm, the calling thread's OpenMP
// team set to one) every call runs on the calling thread alone, so concurrent callers use one
// core each and a product's bits do not depend on how many threads run. Without oneDNN it is
// OpenBLAS's sgemm, which threads itself: callers then run their items one after another
// (TileSgemmRunsOnCaller() says which).
// Thread-safety: may be called from any number of threads at once.
#ifndef DAPQ_KERNELS_REF_TILE_SGEMM_H_
#define DAPQ_KERNELS_REF_TILE_SGEMM_H_

#include "absl/status/status.h"

namespace dapq::kernels::ref {

absl::Status TileSgemm(bool trans_b, int m, int n, int k, float alpha, const float* a, int lda,
                       const float* b, int ldb, float beta, float* c, int ldc);

// True when TileSgemm runs on the calling thread only (oneDNN is linked).
bool TileSgemmRunsOnCaller();

}  // namespace dapq::kernels::ref

#endif  // DAPQ_KERNELS_REF_TILE_SGEMM_H_
