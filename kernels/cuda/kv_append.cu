// File: kernels/cuda/kv_append.cu
// Paged KV append on the GPU: one thread block per (token, KV head); its threads convert the key
// and value rows into the slot found through the head's block table (kernels/paged_index.h's
// PagedSlot, the CPU kernel's arithmetic). Rounding to bf16 / fp16 is to nearest, ties to even
// (__float2bfloat16_rn / __float2half_rn), as kernels/types.h's conversions on the host.
// Parity with kernels/ref/kv_append_ref.cc: tests/parity/layer_ops_parity_test.cc. Compiled,
// never run on a GPU.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "common/cuda_status.h"
#include "kernels/cuda/launch.h"
#include "kernels/paged_index.h"

namespace dapq::kernels::cuda {
namespace {

constexpr int kBlockSize = 128;

template <DType kType>
__device__ __forceinline__ void StoreElem(void* base, long i, float x) {
  if constexpr (kType == DType::kF32) {
    static_cast<float*>(base)[i] = x;
  } else if constexpr (kType == DType::kBF16) {
    static_cast<__nv_bfloat16*>(base)[i] = __float2bfloat16_rn(x);
  } else {
    static_cast<__half*>(base)[i] = __float2half_rn(x);
  }
}

template <DType kType>
__global__ void KvAppendKernel(KvAppendParams p) {
  const int t = blockIdx.x, h = blockIdx.y;
  const int32_t* table = p.block_table + static_cast<long>(h) * p.blocks_per_head;
  const long slot =
      PagedSlot(table, p.first_slots[h] + t, p.tokens_per_block, p.block_stride, p.head_dim);
  const long src = static_cast<long>(t) * p.src_stride + static_cast<long>(h) * p.head_dim;
  for (int i = threadIdx.x; i < p.head_dim; i += kBlockSize) {
    StoreElem<kType>(p.k_pool, slot + i, p.k[src + i]);
    StoreElem<kType>(p.v_pool, slot + i, p.v[src + i]);
  }
}

}  // namespace

absl::Status LaunchKvAppend(const KvAppendParams& p, void* stream) {
  if (p.tokens == 0) return absl::OkStatus();
  const dim3 grid(p.tokens, p.kv_heads);
  const auto s = static_cast<cudaStream_t>(stream);
  switch (p.kv_dtype) {
    case DType::kF32:
      KvAppendKernel<DType::kF32><<<grid, kBlockSize, 0, s>>>(p);
      break;
    case DType::kBF16:
      KvAppendKernel<DType::kBF16><<<grid, kBlockSize, 0, s>>>(p);
      break;
    case DType::kF16:
      KvAppendKernel<DType::kF16><<<grid, kBlockSize, 0, s>>>(p);
      break;
  }
  DAPQ_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

}  // namespace dapq::kernels::cuda
