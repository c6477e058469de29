// File: kernels/cuda/attention_prefill_tc.cu
// Paged causal prefill attention on tensor cores, for bf16 and fp16 pools when the caller allows
// the queries and the softmax weights to be rounded to the pool's type
// (AttentionParams::round_to_kv_dtype): S = Q.K^T and O += P.V are WMMA 16x16x16 products of
// 16-bit operands with fp32 accumulation; the online softmax, its running max and sum, and the
// output accumulator stay fp32. Same contract, GQA row stacking, causal masking and tile order
// as the CUDA-core kernel (attention_prefill.cu), which serves every other case.
//
// Tile: 64 query rows x 64 key slots, four warps of 16 rows each; the layout (strides, offsets,
// lane ownership) is kernels/prefill_tc_layout.h, unit-tested on the CPU. Per key tile: gather
// K and V rows from the pool through the block table into shared memory as they are (16 bytes
// at a time when TcVectorLoads allows), zero past the tile's slots and head_dim; each warp
// computes its 16 x 64 scores into shared memory (fp32), two lanes per row take the softmax
// (mask, new max, correction, weights rounded to the pool's type into P, the row sum of the
// rounded weights), rescale the row's O in shared memory, and the warp adds P.V to O through
// accumulator fragments loaded from and stored back to shared memory (WMMA leaves the
// accumulator's element layout unspecified, so rescaling goes through shared memory). The
// warps touch only their own rows of S, P, O and the statistics; the block synchronises only
// around the K/V tile.
// Shared memory: 72,960 B (head_dim bucket 64) or 113,920 B (128) per block.
// This kernel has been compiled but, at the time of writing, never run on a GPU (no GPU was
// available). Parity: tests/parity/attention_prefill_parity_test.cc (AttentionPrefillTensorCores).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include <cmath>
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "common/cuda_status.h"
#include "kernels/cuda/attention_prefill_tc.h"
#include "kernels/cuda/kv_pool_access.cuh"
#include "kernels/paged_index.h"
#include "kernels/prefill_tc_layout.h"

namespace dapq::kernels::cuda {
namespace {

namespace wmma = ::nvcuda::wmma;
using L = PrefillTcLayout;

template <DType kType>
struct Elem16;
template <>
struct Elem16<DType::kBF16> {
  using T = __nv_bfloat16;
  static __device__ __forceinline__ T Round(float x) { return __float2bfloat16_rn(x); }
  static __device__ __forceinline__ float Widen(T x) { return __bfloat162float(x); }
};
template <>
struct Elem16<DType::kF16> {
  using T = __half;
  static __device__ __forceinline__ T Round(float x) { return __float2half_rn(x); }
  static __device__ __forceinline__ float Widen(T x) { return __half2float(x); }
};

// Copies the tile's K and V rows (cols slots from row_offset) into ks / vs as they are, zero
// past the slots and past head_dim d.
template <int kHeadDim, typename T>
__device__ __forceinline__ void LoadKeyTile(const AttentionParams& p, const long* row_offset,
                                            int cols, bool vector_loads, T* ks, T* vs) {
  constexpr L kL = MakePrefillTcLayout(kHeadDim);
  const auto* k_pool = static_cast<const T*>(p.k_pool);
  const auto* v_pool = static_cast<const T*>(p.v_pool);
  if (vector_loads) {
    constexpr int kChunks = kHeadDim / 8;  // 16 bytes each
    for (int idx = threadIdx.x; idx < L::kBc * kChunks; idx += L::kThreads) {
      const int c = idx / kChunks, e = (idx % kChunks) * 8;
      uint4 kx = make_uint4(0, 0, 0, 0), vx = kx;
      if (c < cols && e < p.head_dim) {
        kx = *reinterpret_cast<const uint4*>(k_pool + row_offset[c] + e);
        vx = *reinterpret_cast<const uint4*>(v_pool + row_offset[c] + e);
      }
      *reinterpret_cast<uint4*>(ks + c * kL.qkv_stride + e) = kx;
      *reinterpret_cast<uint4*>(vs + c * kL.qkv_stride + e) = vx;
    }
    return;
  }
  const T zero = T();
  for (int idx = threadIdx.x; idx < L::kBc * kHeadDim; idx += L::kThreads) {
    const int c = idx / kHeadDim, e = idx % kHeadDim;
    const bool valid = c < cols && e < p.head_dim;
    ks[c * kL.qkv_stride + e] = valid ? k_pool[row_offset[c] + e] : zero;
    vs[c * kL.qkv_stride + e] = valid ? v_pool[row_offset[c] + e] : zero;
  }
}

// grid (query tiles, kv_heads), L::kThreads threads, MakePrefillTcLayout(kHeadDim).bytes of
// dynamic shared memory; p is paged with kv_dtype == kType, p.head_dim <= kHeadDim.
template <int kHeadDim, DType kType>
__global__ void __launch_bounds__(L::kThreads)
    PrefillTcKernel(AttentionParams p, bool vector_loads) {
  using E = Elem16<kType>;
  using T = typename E::T;
  constexpr L kL = MakePrefillTcLayout(kHeadDim);
  constexpr int kFrag = L::kFragment;
  extern __shared__ __align__(128) unsigned char shared[];
  long* row_offset = reinterpret_cast<long*>(shared);
  T* qs = reinterpret_cast<T*>(shared + kL.q);
  T* ks = reinterpret_cast<T*>(shared + kL.k);
  T* vs = reinterpret_cast<T*>(shared + kL.v);
  float* ss = reinterpret_cast<float*>(shared + kL.s);
  T* ps = reinterpret_cast<T*>(shared + kL.p);
  float* os = reinterpret_cast<float*>(shared + kL.o);
  float* row_max = reinterpret_cast<float*>(shared + kL.stats);
  float* row_sum = row_max + L::kBr;

  const int d = p.head_dim, group = p.q_heads / p.kv_heads;
  const int kv_head = blockIdx.y;
  // The last tiles see the most keys: start them first.
  const long row0 = static_cast<long>(gridDim.x - 1 - blockIdx.x) * L::kBr;
  const long total_rows = static_cast<long>(p.q_tokens) * group;
  const long row_end = row0 + L::kBr < total_rows ? row0 + L::kBr : total_rows;
  const int len = p.kv_lens != nullptr ? p.kv_lens[kv_head] : p.kv_len;
  const float scale = 1.0f / sqrtf(static_cast<float>(d));
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int warp_row0 = warp * L::kWarpRows;

  // The tile's queries rounded to the pool's type, zero past head_dim and the last row; O and
  // the row statistics start empty.
  for (int idx = threadIdx.x; idx < L::kBr * kHeadDim; idx += L::kThreads) {
    const int r = idx / kHeadDim, e = idx % kHeadDim;
    const long row = row0 + r;
    float x = 0.0f;
    if (row < row_end && e < d) x = p.q[StackedRowOffset(row, group, kv_head, p.q_stride, d) + e];
    qs[r * kL.qkv_stride + e] = E::Round(x);
    os[r * kL.o_stride + e] = 0.0f;
  }
  for (int r = threadIdx.x; r < L::kBr; r += L::kThreads) {
    row_max[r] = -INFINITY;
    row_sum[r] = 0.0f;
  }

  // This lane's row in the softmax and the output, and the slots it sees (none past the end).
  const int my_row = warp_row0 + TcLaneRow(lane);
  const int my_col = TcLaneColumn(lane);
  const int my_dim = TcLaneDim(lane, kHeadDim);
  const long row = row0 + my_row;
  const int limit =
      row < row_end ? CausalVisible(len, p.q_tokens, static_cast<int>(row / group)) : 0;
  const int key_end = CausalVisible(len, p.q_tokens, static_cast<int>((row_end - 1) / group));

  for (int j0 = 0; j0 < key_end; j0 += L::kBc) {
    const int cols = key_end - j0 < L::kBc ? key_end - j0 : L::kBc;
    if (threadIdx.x < cols) row_offset[threadIdx.x] = SlotOffset(p, kv_head, j0 + threadIdx.x);
    __syncthreads();  // also orders the queries' and statistics' initialisation before use
    LoadKeyTile<kHeadDim>(p, row_offset, cols, vector_loads, ks, vs);
    __syncthreads();

    // S = Q.K^T for the warp's 16 rows (K stored [slot][dim] is K^T in column-major order).
    {
      wmma::fragment<wmma::accumulator, kFrag, kFrag, kFrag, float> s[L::kBc / kFrag];
#pragma unroll
      for (int n = 0; n < L::kBc / kFrag; ++n) wmma::fill_fragment(s[n], 0.0f);
#pragma unroll
      for (int kk = 0; kk < kHeadDim; kk += kFrag) {
        wmma::fragment<wmma::matrix_a, kFrag, kFrag, kFrag, T, wmma::row_major> a;
        wmma::load_matrix_sync(a, qs + warp_row0 * kL.qkv_stride + kk, kL.qkv_stride);
#pragma unroll
        for (int n = 0; n < L::kBc / kFrag; ++n) {
          wmma::fragment<wmma::matrix_b, kFrag, kFrag, kFrag, T, wmma::col_major> b;
          wmma::load_matrix_sync(b, ks + n * kFrag * kL.qkv_stride + kk, kL.qkv_stride);
          wmma::mma_sync(s[n], a, b, s[n]);
        }
      }
#pragma unroll
      for (int n = 0; n < L::kBc / kFrag; ++n) {
        wmma::store_matrix_sync(ss + warp_row0 * kL.s_stride + n * kFrag, s[n], kL.s_stride,
                                wmma::mem_row_major);
      }
    }
    __syncwarp();

    // Online softmax of this lane's 32 columns of its row; the row's two lanes combine by
    // shuffles.
    {
      const float* srow = ss + my_row * kL.s_stride;
      float tile_max = -INFINITY;
      for (int j = my_col; j < my_col + L::kBc / 2; ++j) {
        const float x = j0 + j < limit ? srow[j] * scale : -INFINITY;
        tile_max = fmaxf(tile_max, x);
      }
      tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 1));
      const float m_old = row_max[my_row];
      const float m_new = fmaxf(m_old, tile_max);
      // A row that has seen no slot yet keeps max -inf: no weights, nothing to rescale.
      const bool any = m_new != -INFINITY;
      const float correction = any ? expf(m_old - m_new) : 1.0f;
      T* prow = ps + my_row * kL.p_stride;
      float sum = 0.0f;
      for (int j = my_col; j < my_col + L::kBc / 2; ++j) {
        const float w = any && j0 + j < limit ? expf(srow[j] * scale - m_new) : 0.0f;
        const T rounded = E::Round(w);
        prow[j] = rounded;
        sum += E::Widen(rounded);  // the weights P.V uses, so the output stays a convex mean
      }
      sum += __shfl_xor_sync(0xffffffffu, sum, 1);
      float* orow = os + my_row * kL.o_stride;
      for (int e = my_dim; e < my_dim + kHeadDim / 2; ++e) orow[e] *= correction;
      __syncwarp();  // both lanes have read the row's old statistics
      if (my_col == 0) {
        row_sum[my_row] = row_sum[my_row] * correction + sum;
        row_max[my_row] = m_new;
      }
    }
    __syncwarp();

    // O += P.V for the warp's 16 rows, one 16-dim slice of O at a time.
#pragma unroll
    for (int n = 0; n < kHeadDim / kFrag; ++n) {
      wmma::fragment<wmma::accumulator, kFrag, kFrag, kFrag, float> o;
      float* oslice = os + warp_row0 * kL.o_stride + n * kFrag;
      wmma::load_matrix_sync(o, oslice, kL.o_stride, wmma::mem_row_major);
#pragma unroll
      for (int kk = 0; kk < L::kBc; kk += kFrag) {
        wmma::fragment<wmma::matrix_a, kFrag, kFrag, kFrag, T, wmma::row_major> a;
        wmma::fragment<wmma::matrix_b, kFrag, kFrag, kFrag, T, wmma::row_major> b;
        wmma::load_matrix_sync(a, ps + warp_row0 * kL.p_stride + kk, kL.p_stride);
        wmma::load_matrix_sync(b, vs + kk * kL.qkv_stride + n * kFrag, kL.qkv_stride);
        wmma::mma_sync(o, a, b, o);
      }
      wmma::store_matrix_sync(oslice, o, kL.o_stride, wmma::mem_row_major);
    }
    __syncthreads();  // K, V and the row offsets are overwritten by the next tile
  }
  __syncwarp();

  if (row >= row_end) return;
  float* out = p.out + StackedRowOffset(row, group, kv_head, p.out_stride, d);
  const float l = row_sum[my_row];
  const float inv = l > 0.0f ? 1.0f / l : 0.0f;  // no visible slot: 0, as decode
  const float* orow = os + my_row * kL.o_stride;
  for (int e = my_dim; e < my_dim + kHeadDim / 2 && e < d; ++e) out[e] = orow[e] * inv;
}

template <int kHeadDim, DType kType>
absl::Status Launch(const AttentionParams& p, unsigned tiles, cudaStream_t stream) {
  constexpr size_t kShared = MakePrefillTcLayout(kHeadDim).bytes;
  DAPQ_CUDA_RETURN_IF_ERROR(cudaFuncSetAttribute(PrefillTcKernel<kHeadDim, kType>,
                                                 cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                 static_cast<int>(kShared)));
  const bool vector_loads =
      TcVectorLoads(p.head_dim, p.block_stride, reinterpret_cast<uintptr_t>(p.k_pool),
                    reinterpret_cast<uintptr_t>(p.v_pool));
  PrefillTcKernel<kHeadDim, kType>
      <<<dim3(tiles, static_cast<unsigned>(p.kv_heads)), L::kThreads, kShared, stream>>>(
          p, vector_loads);
  return DAPQ_CUDA_LAUNCH_STATUS("PrefillTcKernel");
}

}  // namespace

absl::Status LaunchAttentionPrefillTensorCores(const AttentionParams& p, unsigned tiles,
                                               cudaStream_t stream) {
  const bool bf16 = p.kv_dtype == DType::kBF16;
  if (p.head_dim <= 64) {
    return bf16 ? Launch<64, DType::kBF16>(p, tiles, stream)
                : Launch<64, DType::kF16>(p, tiles, stream);
  }
  return bf16 ? Launch<128, DType::kBF16>(p, tiles, stream)
              : Launch<128, DType::kF16>(p, tiles, stream);
}

}  // namespace dapq::kernels::cuda
