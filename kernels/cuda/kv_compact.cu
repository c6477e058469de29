// File: kernels/cuda/kv_compact.cu
// Paged KV compaction on the GPU in two kernels on one stream: a gather of every kept key and
// value row into scratch (one thread block per (kept slot, head)), then a scatter of the scratch
// rows to slots 0, 1, ... of their heads. Rows are copied as stored: 4-byte words for fp32,
// 2-byte ones for bf16 / fp16. Slots are found with kernels/paged_index.h's PagedSlot, the CPU
// reference's arithmetic. Parity with kernels/ref/kv_compact_ref.cc:
// tests/parity/layer_ops_parity_test.cc. Compiled, never run on a GPU.
#include <cuda_runtime.h>

#include <cstdint>

#include "common/cuda_status.h"
#include "kernels/cuda/launch.h"
#include "kernels/paged_index.h"

namespace dapq::kernels::cuda {
namespace {

constexpr int kBlockSize = 128;

// Scratch row of kept slot i of head h: keys, then values ([2, head_dim]).
__device__ __forceinline__ long ScratchRow(const KvCompactParams& p, int h, int i) {
  return (static_cast<long>(h) * p.keep_stride + i) * 2 * p.head_dim;
}

template <typename Word>
__global__ void GatherKept(KvCompactParams p) {
  const int i = blockIdx.x, h = blockIdx.y;
  if (i >= p.counts[h]) return;
  const int32_t* table = p.block_table + static_cast<long>(h) * p.blocks_per_head;
  const int src_slot = p.keep[static_cast<long>(h) * p.keep_stride + i];
  const long src = PagedSlot(table, src_slot, p.tokens_per_block, p.block_stride, p.head_dim);
  const long row = ScratchRow(p, h, i);
  const auto* k = static_cast<const Word*>(p.k_pool);
  const auto* v = static_cast<const Word*>(p.v_pool);
  auto* s = static_cast<Word*>(p.scratch);
  for (int e = threadIdx.x; e < p.head_dim; e += kBlockSize) {
    s[row + e] = k[src + e];
    s[row + p.head_dim + e] = v[src + e];
  }
}

template <typename Word>
__global__ void ScatterKept(KvCompactParams p) {
  const int i = blockIdx.x, h = blockIdx.y;
  if (i >= p.counts[h]) return;
  const int32_t* table = p.block_table + static_cast<long>(h) * p.blocks_per_head;
  const long dst = PagedSlot(table, i, p.tokens_per_block, p.block_stride, p.head_dim);
  const long row = ScratchRow(p, h, i);
  auto* k = static_cast<Word*>(p.k_pool);
  auto* v = static_cast<Word*>(p.v_pool);
  const auto* s = static_cast<const Word*>(p.scratch);
  for (int e = threadIdx.x; e < p.head_dim; e += kBlockSize) {
    k[dst + e] = s[row + e];
    v[dst + e] = s[row + p.head_dim + e];
  }
}

template <typename Word>
void Launch(const KvCompactParams& p, cudaStream_t stream) {
  const dim3 grid(p.keep_stride, p.heads);
  GatherKept<Word><<<grid, kBlockSize, 0, stream>>>(p);
  ScatterKept<Word><<<grid, kBlockSize, 0, stream>>>(p);
}

}  // namespace

absl::Status LaunchKvCompact(const KvCompactParams& p, void* stream) {
  if (p.keep_stride == 0) return absl::OkStatus();
  const auto s = static_cast<cudaStream_t>(stream);
  if (p.kv_dtype == DType::kF32) {
    Launch<uint32_t>(p, s);
  } else {
    Launch<uint16_t>(p, s);
  }
  DAPQ_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

}  // namespace dapq::kernels::cuda
