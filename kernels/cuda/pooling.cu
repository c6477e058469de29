// File: kernels/cuda/pooling.cu
// Same-padded stride-1 1-D pooling of score rows on the GPU (kernels/pooling.h): one thread per
// output element. The arithmetic is the reference's, step for step, so the results are
// bit-identical to kernels/ref/pooling_ref.cc: max starts from x[lo] and takes
// `m < x[t] ? x[t] : m` left to right (std::max's comparison, so NaN and -0.0 behave the same);
// average sums x[lo..hi] left to right in fp32 and divides by the kernel size (IEEE division:
// no fast math).
// Parity: tests/parity/gemm_parity_test.cc. This file has been compiled but, at the time of
// writing, never run on a GPU (no GPU was available).
#include <cuda_runtime.h>

#include <algorithm>

#include "common/cuda_status.h"
#include "kernels/cuda/launch.h"

namespace dapq::kernels::cuda {
namespace {

constexpr int kBlockSize = 256;
constexpr long kMaxBlocks = 4096;  // the grid-stride loop covers larger tensors

// x, out: [rows, cols] contiguous rows.
__global__ void Pool1dKernel(Pool1dParams p) {
  const long total = static_cast<long>(p.rows) * p.cols;
  const long step = static_cast<long>(gridDim.x) * blockDim.x;
  const int half = p.kernel / 2;
  for (long i = static_cast<long>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += step) {
    const long row = i / p.cols;
    const int j = static_cast<int>(i % p.cols);
    const float* x = p.x + row * p.cols;
    const int lo = max(0, j - half), hi = min(p.cols - 1, j + half);
    float result;
    if (p.type == PoolType::kMax) {
      result = x[lo];
      for (int t = lo + 1; t <= hi; ++t) result = result < x[t] ? x[t] : result;
    } else {
      float sum = 0.0f;
      for (int t = lo; t <= hi; ++t) sum += x[t];
      result = sum / static_cast<float>(p.kernel);
    }
    p.out[i] = result;
  }
}

}  // namespace

absl::Status LaunchPool1d(const Pool1dParams& p, void* stream) {
  const long total = static_cast<long>(p.rows) * p.cols;
  if (total == 0) return absl::OkStatus();
  const auto blocks = static_cast<int>(std::min((total + kBlockSize - 1) / kBlockSize, kMaxBlocks));
  Pool1dKernel<<<blocks, kBlockSize, 0, static_cast<cudaStream_t>(stream)>>>(p);
  DAPQ_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

}  // namespace dapq::kernels::cuda
