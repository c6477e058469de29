// File: kernels/softmax.h
// Row-wise numerically stable softmax in place: x[r, :] = exp(x - max) / sum(exp(x - max)).
#ifndef DAPQ_KERNELS_SOFTMAX_H_
#define DAPQ_KERNELS_SOFTMAX_H_

#include "absl/status/status.h"
#include "kernels/types.h"

namespace dapq::kernels {

// x: [rows, cols], row stride (elements).
struct SoftmaxParams {
  int rows = 0, cols = 0;
  float* x = nullptr;
  int stride = 0;
};

absl::Status Softmax(const SoftmaxParams& p, Stream stream = {});
absl::Status ValidateSoftmax(const SoftmaxParams& p);

}  // namespace dapq::kernels

#endif  // DAPQ_KERNELS_SOFTMAX_H_
