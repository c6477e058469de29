// File: kernels/ref/softmax_ref.cc
// Softmax reference: subtract the row max, expf, divide by the fp32 sum (llama2.c order).
#include <cmath>

#include "kernels/ref/ref_ops.h"

namespace dapq::kernels::ref {

absl::Status SoftmaxRef(const SoftmaxParams& p) {
  for (int r = 0; r < p.rows; ++r) {
    float* x = p.x + static_cast<long>(r) * p.stride;
    float max_val = x[0];
    for (int i = 1; i < p.cols; ++i) max_val = x[i] > max_val ? x[i] : max_val;
    float sum = 0.0f;
    for (int i = 0; i < p.cols; ++i) {
      x[i] = std::exp(x[i] - max_val);
      sum += x[i];
    }
    for (int i = 0; i < p.cols; ++i) x[i] /= sum;
  }
  return absl::OkStatus();
}

}  // namespace dapq::kernels::ref
