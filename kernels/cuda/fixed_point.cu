// File: kernels/cuda/fixed_point.cu
// Scores to fixed point on the GPU: one thread per element running kernels/fixed_point.h's
// ScoreToFixedPoint, the function the CPU reference runs (device llround rounds halves away from
// zero, as the host's does), so the results are bit-identical.
// Parity: tests/parity/layer_ops_parity_test.cc. Compiled, never run on a GPU.
#include <cuda_runtime.h>

#include "common/cuda_status.h"
#include "kernels/cuda/launch.h"
#include "kernels/fixed_point.h"

namespace dapq::kernels::cuda {
namespace {

constexpr int kBlockSize = 256;

__global__ void FixedPointKernel(FixedPointParams p) {
  const long i = static_cast<long>(blockIdx.x) * kBlockSize + threadIdx.x;
  if (i < p.n) p.out[i] = ScoreToFixedPoint(p.scores[i]);
}

}  // namespace

absl::Status LaunchScoresToFixedPoint(const FixedPointParams& p, void* stream) {
  if (p.n == 0) return absl::OkStatus();
  const long blocks = (p.n + kBlockSize - 1) / kBlockSize;
  FixedPointKernel<<<static_cast<unsigned>(blocks), kBlockSize, 0,
                     static_cast<cudaStream_t>(stream)>>>(p);
  DAPQ_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

}  // namespace dapq::kernels::cuda
