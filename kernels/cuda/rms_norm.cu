// File: kernels/cuda/rms_norm.cu
// RMSNorm on the GPU: one block per row, block-wide fp32 reduction of the sum of squares.
// Parity with kernels/ref/rms_norm_ref.cc: tests/parity/kernels_parity_test.cc.
#include <cuda_runtime.h>

#include "common/cuda_status.h"
#include "kernels/cuda/launch.h"

namespace dapq::kernels::cuda {
namespace {

constexpr int kBlockSize = 256;

__global__ void RmsNormKernel(RmsNormParams p) {
  const int row = blockIdx.x;
  const float* x = p.x + static_cast<long>(row) * p.x_stride;
  float* out = p.out + static_cast<long>(row) * p.out_stride;
  __shared__ float partial[kBlockSize];
  float ss = 0.0f;
  for (int i = threadIdx.x; i < p.dim; i += kBlockSize) ss += x[i] * x[i];
  partial[threadIdx.x] = ss;
  __syncthreads();
  for (int stride = kBlockSize / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) partial[threadIdx.x] += partial[threadIdx.x + stride];
    __syncthreads();
  }
  const float scale = 1.0f / sqrtf(partial[0] / static_cast<float>(p.dim) + p.eps);
  for (int i = threadIdx.x; i < p.dim; i += kBlockSize) out[i] = p.weight[i] * (scale * x[i]);
}

}  // namespace

absl::Status LaunchRmsNorm(const RmsNormParams& p, void* stream) {
  if (p.rows == 0) return absl::OkStatus();
  RmsNormKernel<<<p.rows, kBlockSize, 0, static_cast<cudaStream_t>(stream)>>>(p);
  DAPQ_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

}  // namespace dapq::kernels::cuda
