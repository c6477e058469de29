// File: kernels/cuda/activation.cu
// SwiGLU on the GPU: one thread per element. No fast-math: expf matches the reference to fp32 ulps.
// Parity with kernels/ref/activation_ref.cc: tests/parity/kernels_parity_test.cc.
#include <cuda_runtime.h>

#include "common/cuda_status.h"
#include "kernels/cuda/launch.h"

namespace dapq::kernels::cuda {
namespace {

constexpr int kBlockSize = 256;

__global__ void SwiGluKernel(SwiGluParams p) {
  const long idx = static_cast<long>(blockIdx.x) * kBlockSize + threadIdx.x;
  if (idx >= static_cast<long>(p.rows) * p.cols) return;
  const int r = static_cast<int>(idx / p.cols);
  const int c = static_cast<int>(idx % p.cols);
  float v = p.gate[static_cast<long>(r) * p.gate_stride + c];
  v *= 1.0f / (1.0f + expf(-v));
  p.out[static_cast<long>(r) * p.out_stride + c] = v * p.up[static_cast<long>(r) * p.up_stride + c];
}

}  // namespace

absl::Status LaunchSwiGlu(const SwiGluParams& p, void* stream) {
  const long total = static_cast<long>(p.rows) * p.cols;
  if (total == 0) return absl::OkStatus();
  const int blocks = static_cast<int>((total + kBlockSize - 1) / kBlockSize);
  SwiGluKernel<<<blocks, kBlockSize, 0, static_cast<cudaStream_t>(stream)>>>(p);
  DAPQ_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

}  // namespace dapq::kernels::cuda
