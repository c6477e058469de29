// File: kernels/pooling.h
// 1-D pooling with stride 1 and "same" padding (kernel k odd; k/2 padding each side), as SnapKV
// and DapQ smooth token scores: max pooling pads with -inf (so edges take the max of what
// exists); average pooling counts the zero padding and always divides by k, as PyTorch's
// avg_pool1d does by default (count_include_pad=True).
#ifndef DAPQ_KERNELS_POOLING_H_
#define DAPQ_KERNELS_POOLING_H_

#include "absl/status/status.h"
#include "kernels/types.h"

namespace dapq::kernels {

enum class PoolType { kMax = 0, kAvg = 1 };

// x, out: [rows, cols] contiguous rows; out must not alias x.
struct Pool1dParams {
  int rows = 0, cols = 0;
  int kernel = 1;  // odd, >= 1 (1 = copy)
  PoolType type = PoolType::kMax;
  const float* x = nullptr;
  float* out = nullptr;
};

absl::Status Pool1d(const Pool1dParams& p, Stream stream = {});
absl::Status ValidatePool1d(const Pool1dParams& p);

}  // namespace dapq::kernels

#endif  // DAPQ_KERNELS_POOLING_H_
