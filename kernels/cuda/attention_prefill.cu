// File: kernels/cuda/attention_prefill.cu
// Paged causal prefill attention on the GPU, FlashAttention-2 style: out = softmax(q.k^T /
// sqrt(head_dim), causal) . v for every query token and query head, with grouped KV heads (GQA),
// per-KV-head lengths (kv_lens) and K/V read from the block pool (fp32, bf16 or fp16, widened to
// fp32 as they are loaded) or from the contiguous fp32 layout. The contract is kernels/attention.h.
//
// Tiling. One thread block per (query tile, KV head). As in the CPU kernel, a KV head's GQA group
// is stacked into rows: row R = token R / group, query head kv_head * group + R % group, so each
// K/V tile is loaded once for the whole group. A query tile is kBr = 64 such rows; the block walks
// the key tiles of kBc slots (64 for head_dim <= 64, 32 above) that its last row can see, never
// past it (tiles wholly masked by causality are not loaded), and masks per row inside the tiles
// that cross a row's diagonal. Per key tile: gather the tile's K and V rows from the pool through
// the block table into shared memory as fp32 (zero beyond the tile's slots and head_dim), S =
// Q.K^T in registers, an fp32 online softmax per row (running max and sum, the accumulator
// rescaled when the max grows), P through shared memory, O += P.V in registers. Finally O / sum.
// 256 threads: a row's columns are spread over the 16 lanes of a half-warp (the row reductions
// are half-warp shuffles), each thread holds 4 rows x (kBc / 16) scores and 4 rows x
// (head_dim / 16) output values. Shared memory, fixed at compile time per head-dim bucket (64,
// 128, 256; p.head_dim <= bucket, zero-padded), rows padded by one float against bank conflicts:
//   Q [kBr][bucket + 1] + K, V [kBc][bucket + 1] + P [kBr][kBc + 1] floats + kBc row offsets:
//   bucket 64: 67,072 B; 128: 74,752 B; 256: 140,288 B per block.
// Never an n x n matrix: scratch is O(tile x head_dim). All arithmetic is fp32 on CUDA cores
// (attention_prefill_tc.cu runs 16-bit pools on tensor cores when the caller allows rounding:
// AttentionParams::round_to_kv_dtype); scores are scaled after the dot product, like the CPU
// kernel.
// Limit: head_dim <= 256 (larger is Unimplemented, checked before any CUDA call).
// Parity with kernels/ref/attention_ref.cc: tests/parity/attention_prefill_parity_test.cc. This
// kernel has been compiled but, at the time of writing, never run on a GPU (no GPU was available).
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <climits>
#include <cmath>
#include <cstddef>

#include "absl/strings/str_cat.h"
#include "common/cuda_status.h"
#include "kernels/cuda/attention_prefill_tc.h"
#include "kernels/cuda/kv_pool_access.cuh"
#include "kernels/cuda/launch.h"
#include "kernels/paged_index.h"
#include "kernels/prefill_tc_layout.h"

namespace dapq::kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kLanesPerRow = 16;                     // a row's columns: one half-warp
constexpr int kRowGroups = kThreads / kLanesPerRow;  // rows a block covers at once
constexpr int kMaxHeadDim = 256;

// Tile shape and shared-memory layout for head dims up to kHeadDim.
template <int kHeadDim>
struct PrefillTile {
  static constexpr int kBr = 64;                        // query rows (token, group head) per block
  static constexpr int kBc = kHeadDim <= 64 ? 64 : 32;  // key slots per tile
  static constexpr int kRowStride = kHeadDim + 1;       // Q, K, V rows: +1 float against conflicts
  static constexpr int kPStride = kBc + 1;
  static constexpr int kRows = kBr / kRowGroups;         // rows per thread
  static constexpr int kCols = kBc / kLanesPerRow;       // scores per row per thread
  static constexpr int kDims = kHeadDim / kLanesPerRow;  // output values per row per thread
  static constexpr size_t kQFloats = static_cast<size_t>(kBr) * kRowStride;
  static constexpr size_t kKFloats = static_cast<size_t>(kBc) * kRowStride;
  static constexpr size_t kPFloats = static_cast<size_t>(kBr) * kPStride;
  // Row offsets (long, first: 8-byte aligned), then Q, K, V, P (fp32).
  static constexpr size_t kSharedBytes =
      sizeof(long) * kBc + sizeof(float) * (kQFloats + 2 * kKFloats + kPFloats);
  static_assert(kBr % kRowGroups == 0 && kBc % kLanesPerRow == 0 && kHeadDim % kLanesPerRow == 0);
};

// Max and sum over the 16 lanes of a half-warp (every lane of the warp takes part).
__device__ __forceinline__ float HalfWarpMax(float v) {
  for (int offset = kLanesPerRow / 2; offset > 0; offset /= 2) {
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
  }
  return v;
}
__device__ __forceinline__ float HalfWarpSum(float v) {
  for (int offset = kLanesPerRow / 2; offset > 0; offset /= 2) {
    v += __shfl_xor_sync(0xffffffffu, v, offset);
  }
  return v;
}

// grid (query tiles, kv_heads), kThreads threads, PrefillTile<kHeadDim>::kSharedBytes of dynamic
// shared memory. p.head_dim <= kHeadDim.
template <int kHeadDim, DType kType>
__global__ void __launch_bounds__(kThreads) PrefillKernel(AttentionParams p) {
  using Tile = PrefillTile<kHeadDim>;
  constexpr int kBr = Tile::kBr, kBc = Tile::kBc, kRowStride = Tile::kRowStride;
  constexpr int kPStride = Tile::kPStride, kRows = Tile::kRows, kCols = Tile::kCols;
  constexpr int kDims = Tile::kDims;
  extern __shared__ __align__(16) unsigned char shared[];
  long* row_offset = reinterpret_cast<long*>(shared);      // [kBc]: the tile's slots in the pool
  float* qs = reinterpret_cast<float*>(row_offset + kBc);  // [kBr][kRowStride]
  float* ks = qs + Tile::kQFloats;                         // [kBc][kRowStride]
  float* vs = ks + Tile::kKFloats;                         // [kBc][kRowStride]
  float* ps = vs + Tile::kKFloats;                         // [kBr][kPStride]

  const int d = p.head_dim, group = p.q_heads / p.kv_heads;
  const int kv_head = blockIdx.y;
  // The last tiles see the most keys: start them first.
  const long row0 = static_cast<long>(gridDim.x - 1 - blockIdx.x) * kBr;
  const long total_rows = static_cast<long>(p.q_tokens) * group;
  const long row_end = row0 + kBr < total_rows ? row0 + kBr : total_rows;
  // This head's own length: its causal offset is len - q_tokens.
  const int len = p.kv_lens != nullptr ? p.kv_lens[kv_head] : p.kv_len;
  const float scale = 1.0f / sqrtf(static_cast<float>(d));
  const int lane = threadIdx.x % 32;
  const int tx = lane % kLanesPerRow;                                             // column lane
  const int ty = (threadIdx.x / 32) * (32 / kLanesPerRow) + lane / kLanesPerRow;  // row group

  // The tile's queries, zero past head_dim and past the last row.
  for (int idx = threadIdx.x; idx < kBr * kHeadDim; idx += kThreads) {
    const int r = idx / kHeadDim, e = idx % kHeadDim;
    const long row = row0 + r;
    float x = 0.0f;
    if (row < row_end && e < d) x = p.q[StackedRowOffset(row, group, kv_head, p.q_stride, d) + e];
    qs[r * kRowStride + e] = x;
  }

  // Slots [0, limit[i]) are visible to this thread's row i; none for rows past the end.
  int limit[kRows];
#pragma unroll
  for (int i = 0; i < kRows; ++i) {
    const long row = row0 + ty + kRowGroups * i;
    limit[i] = row < row_end ? CausalVisible(len, p.q_tokens, static_cast<int>(row / group)) : 0;
  }
  // The tile's last row sees the most slots; key tiles past them are skipped.
  const int key_end = CausalVisible(len, p.q_tokens, static_cast<int>((row_end - 1) / group));

  float m[kRows], l[kRows], acc[kRows][kDims];
#pragma unroll
  for (int i = 0; i < kRows; ++i) {
    m[i] = -INFINITY;
    l[i] = 0.0f;
#pragma unroll
    for (int k = 0; k < kDims; ++k) acc[i][k] = 0.0f;
  }
  const void* k_base = p.block_table != nullptr ? p.k_pool : static_cast<const void*>(p.k);
  const void* v_base = p.block_table != nullptr ? p.v_pool : static_cast<const void*>(p.v);

  for (int j0 = 0; j0 < key_end; j0 += kBc) {
    const int cols = key_end - j0 < kBc ? key_end - j0 : kBc;
    // Gather the tile's K and V rows (previous tile's readers are past the last barrier).
    if (threadIdx.x < cols) row_offset[threadIdx.x] = SlotOffset(p, kv_head, j0 + threadIdx.x);
    __syncthreads();
    for (int idx = threadIdx.x; idx < kBc * kHeadDim; idx += kThreads) {
      const int c = idx / kHeadDim, e = idx % kHeadDim;
      float kx = 0.0f, vx = 0.0f;
      if (c < cols && e < d) {
        kx = LoadElem<kType>(k_base, row_offset[c] + e);
        vx = LoadElem<kType>(v_base, row_offset[c] + e);
      }
      ks[c * kRowStride + e] = kx;
      vs[c * kRowStride + e] = vx;
    }
    __syncthreads();

    // S = Q.K^T for rows ty + 16 i, columns tx + 16 j.
    float s[kRows][kCols];
#pragma unroll
    for (int i = 0; i < kRows; ++i) {
#pragma unroll
      for (int j = 0; j < kCols; ++j) s[i][j] = 0.0f;
    }
#pragma unroll 8
    for (int e = 0; e < kHeadDim; ++e) {
      float qv[kRows], kv[kCols];
#pragma unroll
      for (int i = 0; i < kRows; ++i) qv[i] = qs[(ty + kRowGroups * i) * kRowStride + e];
#pragma unroll
      for (int j = 0; j < kCols; ++j) kv[j] = ks[(tx + kLanesPerRow * j) * kRowStride + e];
#pragma unroll
      for (int i = 0; i < kRows; ++i) {
#pragma unroll
        for (int j = 0; j < kCols; ++j) s[i][j] = fmaf(qv[i], kv[j], s[i][j]);
      }
    }

    // Online softmax per row: mask, new max, rescale, P to shared memory.
#pragma unroll
    for (int i = 0; i < kRows; ++i) {
      float tile_max = -INFINITY;
#pragma unroll
      for (int j = 0; j < kCols; ++j) {
        const int slot = j0 + tx + kLanesPerRow * j;
        s[i][j] = slot < limit[i] ? s[i][j] * scale : -INFINITY;
        tile_max = fmaxf(tile_max, s[i][j]);
      }
      const float m_new = fmaxf(m[i], HalfWarpMax(tile_max));
      // A row that has seen no slot yet keeps max -inf: no weights, nothing to rescale.
      const bool any = m_new != -INFINITY;
      const float correction = any ? expf(m[i] - m_new) : 1.0f;  // 0 on the row's first slots
      float sum = 0.0f;
      float* prow = ps + (ty + kRowGroups * i) * kPStride;
#pragma unroll
      for (int j = 0; j < kCols; ++j) {
        const float w = any ? expf(s[i][j] - m_new) : 0.0f;  // masked: exp(-inf) = 0
        prow[tx + kLanesPerRow * j] = w;
        sum += w;
      }
      l[i] = l[i] * correction + HalfWarpSum(sum);
      m[i] = m_new;
#pragma unroll
      for (int k = 0; k < kDims; ++k) acc[i][k] *= correction;
    }
    __syncthreads();

    // O += P.V for rows ty + 16 i, dims tx + 16 k.
#pragma unroll 4
    for (int c = 0; c < cols; ++c) {
      float pv[kRows], vv[kDims];
#pragma unroll
      for (int i = 0; i < kRows; ++i) pv[i] = ps[(ty + kRowGroups * i) * kPStride + c];
#pragma unroll
      for (int k = 0; k < kDims; ++k) vv[k] = vs[c * kRowStride + tx + kLanesPerRow * k];
#pragma unroll
      for (int i = 0; i < kRows; ++i) {
#pragma unroll
        for (int k = 0; k < kDims; ++k) acc[i][k] = fmaf(pv[i], vv[k], acc[i][k]);
      }
    }
    __syncthreads();  // K, V, P and the row offsets are overwritten by the next tile
  }

#pragma unroll
  for (int i = 0; i < kRows; ++i) {
    const long row = row0 + ty + kRowGroups * i;
    if (row >= row_end) continue;
    float* out = p.out + StackedRowOffset(row, group, kv_head, p.out_stride, d);
    const float inv = l[i] > 0.0f ? 1.0f / l[i] : 0.0f;  // no visible slot: 0, as decode
#pragma unroll
    for (int k = 0; k < kDims; ++k) {
      const int e = tx + kLanesPerRow * k;
      if (e < d) out[e] = acc[i][k] * inv;
    }
  }
}

template <int kHeadDim, DType kType>
absl::Status Launch(const AttentionParams& p, unsigned tiles, cudaStream_t stream) {
  constexpr size_t kShared = PrefillTile<kHeadDim>::kSharedBytes;
  // Every bucket's tile is past the 48 KiB default: opt in (H100 / H200 allow 227 KiB).
  DAPQ_CUDA_RETURN_IF_ERROR(cudaFuncSetAttribute(PrefillKernel<kHeadDim, kType>,
                                                 cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                 static_cast<int>(kShared)));
  PrefillKernel<kHeadDim, kType>
      <<<dim3(tiles, static_cast<unsigned>(p.kv_heads)), kThreads, kShared, stream>>>(p);
  return DAPQ_CUDA_LAUNCH_STATUS("PrefillKernel");
}

template <int kHeadDim>
absl::Status LaunchHeadDim(const AttentionParams& p, unsigned t, cudaStream_t stream) {
  switch (p.block_table != nullptr ? p.kv_dtype : DType::kF32) {
    case DType::kF32:
      return Launch<kHeadDim, DType::kF32>(p, t, stream);
    case DType::kBF16:
      return Launch<kHeadDim, DType::kBF16>(p, t, stream);
    case DType::kF16:
      return Launch<kHeadDim, DType::kF16>(p, t, stream);
  }
  return absl::InvalidArgumentError("AttentionPrefill on CUDA: unknown kv_dtype");
}

}  // namespace

absl::Status LaunchAttentionPrefill(const AttentionParams& p, void* stream) {
  // Before any CUDA call: a machine without a GPU gets this answer too.
  if (p.head_dim > kMaxHeadDim) {
    return absl::UnimplementedError(absl::StrCat("AttentionPrefill on CUDA: head_dim=", p.head_dim,
                                                 " (at most ", kMaxHeadDim, ")"));
  }
  if (p.q_tokens <= 0) return absl::OkStatus();
  // Both kernels give a block 64 query rows (a token's GQA group stacked): one grid for either.
  static_assert(PrefillTile<64>::kBr == PrefillTcLayout::kBr &&
                PrefillTile<128>::kBr == PrefillTcLayout::kBr &&
                PrefillTile<256>::kBr == PrefillTcLayout::kBr);
  const long rows = static_cast<long>(p.q_tokens) * (p.q_heads / p.kv_heads);
  const long tiles = (rows + PrefillTcLayout::kBr - 1) / PrefillTcLayout::kBr;
  if (tiles > INT_MAX || p.kv_heads > 65535) {
    return absl::UnimplementedError(absl::StrCat("AttentionPrefill on CUDA: q_tokens=", p.q_tokens,
                                                 " q_heads=", p.q_heads, " kv_heads=", p.kv_heads,
                                                 " exceed the grid"));
  }
  const auto t = static_cast<unsigned>(tiles);
  const auto s = static_cast<cudaStream_t>(stream);
  if (PrefillUsesTensorCores(p)) return LaunchAttentionPrefillTensorCores(p, t, s);
  if (p.head_dim <= 64) return LaunchHeadDim<64>(p, t, s);
  if (p.head_dim <= 128) return LaunchHeadDim<128>(p, t, s);
  return LaunchHeadDim<256>(p, t, s);
}

}  // namespace dapq::kernels::cuda
