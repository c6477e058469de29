// File: kernels/ref/pooling_ref.cc
// Same-padded stride-1 max / average pooling of score rows (see kernels/pooling.h).
#include <algorithm>

#include "kernels/ref/ref_ops.h"

namespace dapq::kernels::ref {

absl::Status Pool1dRef(const Pool1dParams& p) {
  const int half = p.kernel / 2;
  for (int r = 0; r < p.rows; ++r) {
    const float* x = p.x + static_cast<long>(r) * p.cols;
    float* out = p.out + static_cast<long>(r) * p.cols;
    for (int j = 0; j < p.cols; ++j) {
      const int lo = std::max(0, j - half), hi = std::min(p.cols - 1, j + half);
      if (p.type == PoolType::kMax) {
        float m = x[lo];
        for (int t = lo + 1; t <= hi; ++t) m = std::max(m, x[t]);
        out[j] = m;
      } else {
        float sum = 0.0f;
        for (int t = lo; t <= hi; ++t) sum += x[t];
        out[j] = sum / static_cast<float>(p.kernel);
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace dapq::kernels::ref
