// File: kernels/cuda/rms_norm.cu
// RMSNorm on the GPU, alone or after the residual add (AddRmsNorm): one block per row,
// block-wide fp32 reduction of the sum of squares.
// Parity with kernels/ref/rms_norm_ref.cc: tests/parity/kernels_parity_test.cc.
#include <cuda_runtime.h>

#include "common/cuda_status.h"
#include "kernels/cuda/launch.h"

namespace dapq::kernels::cuda {
namespace {

constexpr int kBlockSize = 256;

// Normalises one row with the block's threads: out[i] = weight[i] * (scale * x[i]).
__device__ void NormalizeRow(const float* x, const float* weight, float* out, int dim, float eps) {
  __shared__ float partial[kBlockSize];
  float ss = 0.0f;
  for (int i = threadIdx.x; i < dim; i += kBlockSize) ss += x[i] * x[i];
  partial[threadIdx.x] = ss;
  __syncthreads();
  for (int stride = kBlockSize / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) partial[threadIdx.x] += partial[threadIdx.x + stride];
    __syncthreads();
  }
  const float scale = 1.0f / sqrtf(partial[0] / static_cast<float>(dim) + eps);
  for (int i = threadIdx.x; i < dim; i += kBlockSize) out[i] = weight[i] * (scale * x[i]);
}

__global__ void RmsNormKernel(RmsNormParams p) {
  const int row = blockIdx.x;
  NormalizeRow(p.x + static_cast<long>(row) * p.x_stride, p.weight,
               p.out + static_cast<long>(row) * p.out_stride, p.dim, p.eps);
}

// x += residual, then (with out set) out = RMSNorm(x): each thread adds the elements it will
// square, and the block barrier inside NormalizeRow orders the writes before the normalisation
// reads them back.
__global__ void AddRmsNormKernel(AddRmsNormParams p) {
  const int row = blockIdx.x;
  float* x = p.x + static_cast<long>(row) * p.x_stride;
  const float* residual = p.residual + static_cast<long>(row) * p.residual_stride;
  for (int i = threadIdx.x; i < p.dim; i += kBlockSize) x[i] += residual[i];
  if (p.out == nullptr) return;
  __syncthreads();
  NormalizeRow(x, p.weight, p.out + static_cast<long>(row) * p.out_stride, p.dim, p.eps);
}

}  // namespace

absl::Status LaunchRmsNorm(const RmsNormParams& p, void* stream) {
  if (p.rows == 0) return absl::OkStatus();
  RmsNormKernel<<<p.rows, kBlockSize, 0, static_cast<cudaStream_t>(stream)>>>(p);
  DAPQ_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

absl::Status LaunchAddRmsNorm(const AddRmsNormParams& p, void* stream) {
  if (p.rows == 0) return absl::OkStatus();
  AddRmsNormKernel<<<p.rows, kBlockSize, 0, static_cast<cudaStream_t>(stream)>>>(p);
  DAPQ_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

}  // namespace dapq::kernels::cuda
