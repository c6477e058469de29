// File: kernels/cuda/softmax.cu
// Row softmax on the GPU: one block per row; block max, then block sum of exp, in fp32.
// Parity with kernels/ref/softmax_ref.cc: tests/parity/kernels_parity_test.cc.
#include <cuda_runtime.h>

#include "common/cuda_status.h"
#include "kernels/cuda/launch.h"

namespace dapq::kernels::cuda {
namespace {

constexpr int kBlockSize = 256;

__device__ float BlockReduce(float v, bool is_max, float* shared) {
  shared[threadIdx.x] = v;
  __syncthreads();
  for (int stride = kBlockSize / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) {
      const float o = shared[threadIdx.x + stride];
      shared[threadIdx.x] = is_max ? fmaxf(shared[threadIdx.x], o) : shared[threadIdx.x] + o;
    }
    __syncthreads();
  }
  const float r = shared[0];
  __syncthreads();
  return r;
}

__global__ void SoftmaxKernel(SoftmaxParams p) {
  __shared__ float shared[kBlockSize];
  float* x = p.x + static_cast<long>(blockIdx.x) * p.stride;
  float m = -INFINITY;
  for (int i = threadIdx.x; i < p.cols; i += kBlockSize) m = fmaxf(m, x[i]);
  m = BlockReduce(m, true, shared);
  float sum = 0.0f;
  for (int i = threadIdx.x; i < p.cols; i += kBlockSize) {
    const float e = expf(x[i] - m);
    x[i] = e;
    sum += e;
  }
  sum = BlockReduce(sum, false, shared);
  for (int i = threadIdx.x; i < p.cols; i += kBlockSize) x[i] /= sum;
}

}  // namespace

absl::Status LaunchSoftmax(const SoftmaxParams& p, void* stream) {
  if (p.rows == 0) return absl::OkStatus();
  SoftmaxKernel<<<p.rows, kBlockSize, 0, static_cast<cudaStream_t>(stream)>>>(p);
  DAPQ_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

}  // namespace dapq::kernels::cuda
