// File: kernels/cuda/rope.cu
// RoPE on the GPU, interleaved and half-split layouts: one thread per (token, head, pair).
// Parity with kernels/ref/rope_ref.cc: tests/parity/kernels_parity_test.cc.
#include <cuda_runtime.h>

#include "common/cuda_status.h"
#include "kernels/cuda/launch.h"

namespace dapq::kernels::cuda {
namespace {

constexpr int kBlockSize = 256;

__global__ void RopeKernel(RopeParams p) {
  const int half = p.head_dim / 2;
  const long idx = static_cast<long>(blockIdx.x) * kBlockSize + threadIdx.x;
  const long total = static_cast<long>(p.tokens) * p.heads * half;
  if (idx >= total) return;
  const int i = static_cast<int>(idx % half);
  const int h = static_cast<int>((idx / half) % p.heads);
  const int t = static_cast<int>(idx / (static_cast<long>(half) * p.heads));
  float* x = p.x + static_cast<long>(t) * p.x_stride + static_cast<long>(h) * p.head_dim;
  const float angle = static_cast<float>(p.positions[t]) * p.inv_freq[i];
  float s, c;
  sincosf(angle, &s, &c);
  const int i0 = p.layout == RopeLayout::kInterleaved ? 2 * i : i;
  const int i1 = p.layout == RopeLayout::kInterleaved ? 2 * i + 1 : i + half;
  const float v0 = x[i0], v1 = x[i1];
  x[i0] = v0 * c - v1 * s;
  x[i1] = v0 * s + v1 * c;
}

}  // namespace

absl::Status LaunchRope(const RopeParams& p, void* stream) {
  const long total = static_cast<long>(p.tokens) * p.heads * (p.head_dim / 2);
  if (total == 0) return absl::OkStatus();
  const int blocks = static_cast<int>((total + kBlockSize - 1) / kBlockSize);
  RopeKernel<<<blocks, kBlockSize, 0, static_cast<cudaStream_t>(stream)>>>(p);
  DAPQ_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

}  // namespace dapq::kernels::cuda
