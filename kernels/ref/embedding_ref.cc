// File: kernels/ref/embedding_ref.cc
// Token embedding lookup on the CPU: a row copy (fp32 table) or an exact widening (bf16 table).
#include <cstring>

#include "kernels/convert.h"
#include "kernels/ref/ref_ops.h"

namespace dapq::kernels::ref {

absl::Status EmbeddingRef(const EmbeddingParams& p) {
  const size_t row_bytes = static_cast<size_t>(p.dim) * DTypeSize(p.table_dtype);
  for (int r = 0; r < p.rows; ++r) {
    const char* row =
        static_cast<const char*>(p.table) + static_cast<size_t>(p.tokens[r]) * row_bytes;
    float* out = p.out + static_cast<long>(r) * p.out_stride;
    if (p.table_dtype == DType::kF32) {
      std::memcpy(out, row, row_bytes);
    } else {
      ConvertToFloat(p.table_dtype, row, out, p.dim);
    }
  }
  return absl::OkStatus();
}

}  // namespace dapq::kernels::ref
