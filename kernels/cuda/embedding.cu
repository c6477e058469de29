// File: kernels/cuda/embedding.cu
// Token embedding lookup on the GPU: one thread block per token row, its threads copying (fp32)
// or widening (bf16: the upper half of an fp32, exact) the table row. Token ids are device
// memory and are not re-checked here (the host validated them when it tokenised the request).
// Parity with kernels/ref/embedding_ref.cc: tests/parity/layer_ops_parity_test.cc. Compiled,
// never run on a GPU.
#include <cuda_runtime.h>

#include "common/cuda_status.h"
#include "kernels/cuda/launch.h"

namespace dapq::kernels::cuda {
namespace {

constexpr int kBlockSize = 256;

template <DType kType>
__global__ void EmbeddingKernel(EmbeddingParams p) {
  const int row = blockIdx.x;
  const long token = p.tokens[row];
  float* out = p.out + static_cast<long>(row) * p.out_stride;
  if constexpr (kType == DType::kF32) {
    const float* src = static_cast<const float*>(p.table) + token * p.dim;
    for (int i = threadIdx.x; i < p.dim; i += kBlockSize) out[i] = src[i];
  } else {
    const unsigned short* src = static_cast<const unsigned short*>(p.table) + token * p.dim;
    for (int i = threadIdx.x; i < p.dim; i += kBlockSize) {
      out[i] = __uint_as_float(static_cast<unsigned>(src[i]) << 16);
    }
  }
}

}  // namespace

absl::Status LaunchEmbedding(const EmbeddingParams& p, void* stream) {
  if (p.rows == 0) return absl::OkStatus();
  const auto s = static_cast<cudaStream_t>(stream);
  if (p.table_dtype == DType::kF32) {
    EmbeddingKernel<DType::kF32><<<p.rows, kBlockSize, 0, s>>>(p);
  } else {
    EmbeddingKernel<DType::kBF16><<<p.rows, kBlockSize, 0, s>>>(p);
  }
  DAPQ_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

}  // namespace dapq::kernels::cuda
