// File: kernels/cuda/kv_pool_access.cuh
// Device-side reads of a KV head's slots that the attention kernels share: where a slot starts
// (paged through the block table with kernels/paged_index.h's PagedSlot, or in the contiguous
// fp32 layout) and one element of the pool's type widened to fp32. Included by .cu files only.
#ifndef DAPQ_KERNELS_CUDA_KV_POOL_ACCESS_CUH_
#define DAPQ_KERNELS_CUDA_KV_POOL_ACCESS_CUH_

#include <cuda_fp16.h>

#include "kernels/attention.h"
#include "kernels/paged_index.h"

namespace dapq::kernels::cuda {

// Element i of a row of the pool's type, widened to fp32 (exact for bf16 and fp16).
template <DType kType>
__device__ __forceinline__ float LoadElem(const void* base, long i) {
  if constexpr (kType == DType::kF32) {
    return static_cast<const float*>(base)[i];
  } else if constexpr (kType == DType::kBF16) {
    const unsigned bits = static_cast<const unsigned short*>(base)[i];
    return __uint_as_float(bits << 16);
  } else {
    return __half2float(__ushort_as_half(static_cast<const unsigned short*>(base)[i]));
  }
}

// Where slot `slot` of KV head kv_head starts, in elements from the K (or V) base.
__device__ __forceinline__ long SlotOffset(const AttentionParams& p, int kv_head, int slot) {
  if (p.block_table == nullptr) {
    return kv_head * p.kv_head_stride + static_cast<long>(slot) * p.head_dim;
  }
  return PagedSlot(p.block_table + static_cast<long>(kv_head) * p.blocks_per_head, slot,
                   p.tokens_per_block, p.block_stride, p.head_dim);
}

}  // namespace dapq::kernels::cuda

#endif  // DAPQ_KERNELS_CUDA_KV_POOL_ACCESS_CUH_
