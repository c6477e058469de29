// File: kernels/ref/gemm_ref.cc
// CPU GEMM: small-m products (decode, alone or batched) through SmallGemm, which streams the
// weights once; the rest through OpenBLAS (sgemv for m == 1 where SmallGemm does not run). bf16
// weights outside SmallGemm go to oneDNN's bf16 matmul (bf16_matmul.h); without oneDNN they are
// widened to fp32 a panel of rows at a time for OpenBLAS: the widening reads the weights once per
// call, which a prefill chunk's m rows amortise.
#include <cblas.h>

#include <algorithm>
#include <vector>

#include "kernels/convert.h"
#include "kernels/ref/bf16_matmul.h"
#include "kernels/ref/ref_ops.h"
#include "kernels/ref/small_gemm.h"

namespace dapq::kernels::ref {
namespace {

constexpr int kPanelRows = 128;

void GemmBf16Panels(const GemmParams& p) {
  thread_local std::vector<float> panel;
  panel.resize(static_cast<size_t>(kPanelRows) * p.k);
  for (int n0 = 0; n0 < p.n; n0 += kPanelRows) {
    const int rows = std::min(kPanelRows, p.n - n0);
    for (int r = 0; r < rows; ++r) {
      ConvertToFloat(DType::kBF16, p.b_bf16 + static_cast<long>(n0 + r) * p.ldb,
                     panel.data() + static_cast<size_t>(r) * p.k, p.k);
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, p.m, rows, p.k, 1.0f, p.a, p.lda,
                panel.data(), p.k, 0.0f, p.c + n0, p.ldc);
  }
}

}  // namespace

absl::Status GemmRef(const GemmParams& p) {
  if (p.m == 0 || p.n == 0) return absl::OkStatus();
  if (SmallGemm(p)) return absl::OkStatus();
  if (p.b_dtype == DType::kBF16) {
    if (!Bf16Matmul(p)) GemmBf16Panels(p);
    return absl::OkStatus();
  }
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
