// File: kernels/prefill_tc_layout.h
// The index arithmetic of the tensor-core prefill attention kernel
// (kernels/cuda/attention_prefill_tc.cu), written once for the kernel and for CPU unit tests
// (prefill_tc_layout_test.cc): the shared-memory layout of a tile (where Q, K, V, the scores S,
// the 16-bit weights P, the fp32 output accumulator O and the row statistics live, with the
// strides and alignment WMMA's 16x16x16 fragments need), which rows and columns each lane of a
// warp owns in the softmax and the output, and when a pool's rows may be loaded 16 bytes at a
// time; and which prefills take that kernel. No CUDA types; constexpr where the kernel needs
// compile-time sizes.
//
// Tile: kBr = 64 query rows (a GQA group's heads stacked per token, as the CUDA-core kernel does)
// by kBc = 64 key slots, four warps, each owning 16 rows: S = Q.K^T and O += P.V are WMMA
// products on that warp's 16 rows; the softmax of a row is done by two lanes, 32 columns each.
#ifndef DAPQ_KERNELS_PREFILL_TC_LAYOUT_H_
#define DAPQ_KERNELS_PREFILL_TC_LAYOUT_H_

#include <cstddef>
#include <cstdint>

#include "kernels/attention.h"
#include "kernels/paged_index.h"

namespace dapq::kernels {

struct PrefillTcLayout {
  static constexpr int kBr = 64;        // query rows per tile
  static constexpr int kBc = 64;        // key slots per tile
  static constexpr int kWarps = 4;      // each owns kWarpRows rows
  static constexpr int kWarpRows = 16;  // one WMMA fragment's rows
  static constexpr int kThreads = 32 * kWarps;
  static constexpr int kFragment = 16;  // WMMA m = n = k
  static constexpr size_t kAlign = 128;

  int head_dim = 0;  // the bucket: 64 or 128 (the real head_dim may be smaller, zero-padded)
  // Row strides in elements. 16-bit rows (Q, K, V, P) are padded by 8 elements and fp32 rows (S,
  // O) by 4: WMMA needs multiples of 8 and 4, and the padding shifts successive rows across the
  // shared-memory banks.
  int qkv_stride = 0, s_stride = 0, p_stride = 0, o_stride = 0;
  // Byte offsets from the start of dynamic shared memory, each a multiple of kAlign: the tile's
  // row offsets in the pool (kBc longs) first, then Q, K, V (16-bit), S (fp32), P (16-bit), O
  // (fp32), and the row statistics (max, sum, correction: 3 x kBr fp32).
  size_t q = 0, k = 0, v = 0, s = 0, p = 0, o = 0, stats = 0;
  size_t bytes = 0;  // dynamic shared memory per block
};

DAPQ_HOST_DEVICE constexpr size_t AlignUp(size_t n, size_t a) { return (n + a - 1) / a * a; }

// The layout for a head-dim bucket (a multiple of 16; the kernel instantiates 64 and 128).
DAPQ_HOST_DEVICE constexpr PrefillTcLayout MakePrefillTcLayout(int head_dim) {
  using L = PrefillTcLayout;
  L l;
  l.head_dim = head_dim;
  l.qkv_stride = head_dim + 8;
  l.s_stride = L::kBc + 4;
  l.p_stride = L::kBc + 8;
  l.o_stride = head_dim + 4;
  constexpr size_t kHalf = 2, kFloat = 4;
  l.q = AlignUp(sizeof(long) * L::kBc, L::kAlign);
  l.k = AlignUp(l.q + kHalf * L::kBr * l.qkv_stride, L::kAlign);
  l.v = AlignUp(l.k + kHalf * L::kBc * l.qkv_stride, L::kAlign);
  l.s = AlignUp(l.v + kHalf * L::kBc * l.qkv_stride, L::kAlign);
  l.p = AlignUp(l.s + kFloat * L::kBr * l.s_stride, L::kAlign);
  l.o = AlignUp(l.p + kHalf * L::kBr * l.p_stride, L::kAlign);
  l.stats = AlignUp(l.o + kFloat * L::kBr * l.o_stride, L::kAlign);
  l.bytes = l.stats + kFloat * 3 * L::kBr;
  return l;
}

// The softmax's share of a warp's 16 rows: lane -> row (0..15 within the warp) and its first
// column (0 or 32) of the tile's kBc; the two lanes of a row are adjacent (a shuffle with xor 1
// combines them).
DAPQ_HOST_DEVICE constexpr int TcLaneRow(int lane) { return lane / 2; }
DAPQ_HOST_DEVICE constexpr int TcLaneColumn(int lane) {
  return (lane % 2) * (PrefillTcLayout::kBc / 2);
}
// The same lane's half of the output row (rescaling O and writing it out): [first, first +
// head_dim / 2) of the bucket's head_dim.
DAPQ_HOST_DEVICE constexpr int TcLaneDim(int lane, int head_dim) {
  return (lane % 2) * head_dim / 2;
}

// Whether K and V rows can be copied 8 elements (16 bytes) at a time: every row offset the block
// table yields (block * block_stride + slot * head_dim) is then a multiple of 8 elements, the
// bases are 16-byte aligned, and a row holds whole chunks.
DAPQ_HOST_DEVICE inline bool TcVectorLoads(int head_dim, long block_stride, uintptr_t k_pool,
                                           uintptr_t v_pool) {
  return head_dim % 8 == 0 && block_stride % 8 == 0 && k_pool % 16 == 0 && v_pool % 16 == 0;
}

// The largest head_dim the tensor-core kernel takes (its buckets are 64 and 128).
inline constexpr int kTensorCoreMaxHeadDim = 128;

// Whether AttentionPrefill on the CUDA backend runs the tensor-core kernel: the caller allows
// rounding (round_to_kv_dtype), the pool is paged bf16 or fp16, head_dim fits a bucket. Every
// other prefill runs the exact fp32 kernel.
inline bool PrefillUsesTensorCores(const AttentionParams& p) {
  return p.round_to_kv_dtype && p.block_table != nullptr &&
         (p.kv_dtype == DType::kBF16 || p.kv_dtype == DType::kF16) &&
         p.head_dim <= kTensorCoreMaxHeadDim;
}

}  // namespace dapq::kernels

#endif  // DAPQ_KERNELS_PREFILL_TC_LAYOUT_H_
