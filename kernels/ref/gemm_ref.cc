// File: kernels/ref/gemm_ref.cc
// CPU GEMM: small-m products (decode, alone or batched) through SmallGemm, which streams the
// weights once; the rest through OpenBLAS (sgemv for m == 1 where SmallGemm does not run).
#include <cblas.h>

#include "kernels/ref/ref_ops.h"
#include "kernels/ref/small_gemm.h"

namespace dapq::kernels::ref {

absl::Status GemmRef(const GemmParams& p) {
  if (p.m == 0 || p.n == 0) return absl::OkStatus();
  if (SmallGemm(p)) return absl::OkStatus();
  if (p.m == 1 && p.trans_b) {
    // c[0, :] = alpha * B[n, k] . a + beta * c
    cblas_sgemv(CblasRowMajor, CblasNoTrans, p.n, p.k, p.alpha, p.b, p.ldb, p.a, 1, p.beta, p.c, 1);
    return absl::OkStatus();
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, p.trans_b ? CblasTrans : CblasNoTrans, p.m, p.n, p.k,
              p.alpha, p.a, p.lda, p.b, p.ldb, p.beta, p.c, p.ldc);
  return absl::OkStatus();
}

}  // namespace dapq::kernels::ref
