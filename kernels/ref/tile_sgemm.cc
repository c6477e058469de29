// File: kernels/ref/tile_sgemm.cc
// oneDNN's dnnl_sgemm (row-major, like cblas) on a one-thread OpenMP team, or OpenBLAS.
#include "kernels/ref/tile_sgemm.h"

#include <cblas.h>

#include "absl/strings/str_cat.h"

#if DAPQ_HAVE_DNNL
#include <dnnl.h>
#include <omp.h>
#endif

namespace dapq::kernels::ref {

absl::Status TileSgemm(bool trans_b, int m, int n, int k, float alpha, const float* a, int lda,
                       const float* b, int ldb, float beta, float* c, int ldc) {
#if DAPQ_HAVE_DNNL
  // The team size is this thread's own OpenMP setting; Bf16Matmul sets its share back.
  if (omp_get_max_threads() != 1) omp_set_num_threads(1);
  const dnnl_status_t status =
      dnnl_sgemm('N', trans_b ? 'T' : 'N', m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  if (status != dnnl_success) {
    return absl::InternalError(absl::StrCat("dnnl_sgemm(", m, "x", n, "x", k, ", lda ", lda,
                                            ", ldb ", ldb, ", ldc ", ldc, ") failed with status ",
                                            static_cast<int>(status)));
  }
#else
  cblas_sgemm(CblasRowMajor, CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, m, n, k, alpha, a,
              lda, b, ldb, beta, c, ldc);
#endif
  return absl::OkStatus();
}

bool TileSgemmRunsOnCaller() {
#if DAPQ_HAVE_DNNL
  return true;
#else
  return false;
#endif
}

}  // namespace dapq::kernels::ref
