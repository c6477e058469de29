// File: kernels/ref/attention_simd.h
// The vectorised inner loops of the CPU attention (attention_ref.cc): one decode head (scores,
// softmax and the weighted value sum for one query token's GQA group over one KV head, reading
// fp32, bf16 or fp16 K/V rows and widening them in registers), and the softmax's
// exponentials. AVX-512F or AVX2+FMA+F16C as cpu_isa.h picks, portable C++ otherwise.
// A head is decoded in chunks of slots (a few hundred; the chunk's keys, then its values, while
// the hardware still holds them), merged through their row maxima as flash-decoding merges
// split parts. The results do not depend on how the slots are split into blocks or on the
// cache's dtype once widened: the chunks are fixed slot ranges, every score is one dot product
// through the same additions, and the values are summed in slot order within a chunk. They may
// differ in the last bits between instruction sets.
// Thread-safety: reentrant (scratch is the caller's).
#ifndef DAPQ_KERNELS_REF_ATTENTION_SIMD_H_
#define DAPQ_KERNELS_REF_ATTENTION_SIMD_H_

#include <cstdint>

#include "kernels/types.h"

namespace dapq::kernels::ref {

// One decode head: for each query g of the group, out_g = softmax(scale * q_g . K^T) V over
// `len` slots.
struct DecodeHeadArgs {
  int head_dim = 0, group = 0, len = 0;
  float scale = 1.0f;
  const float* q = nullptr;  // [group, head_dim]
  float* out = nullptr;      // [group, head_dim]
  // K/V rows in `dtype`: slot s of the keys at k + (table[s / tokens_per_block] * block_stride
  // + s % tokens_per_block * head_dim) elements; without a table, at k + s * head_dim (values
  // likewise at v).
  DType dtype = DType::kF32;
  const void* k = nullptr;
  const void* v = nullptr;
  const int32_t* table = nullptr;
  long block_stride = 0;
  int tokens_per_block = 0;
  float* scores = nullptr;    // scratch [group, min(len, kDecodeChunkSlots)]
  float* acc = nullptr;       // scratch [group, head_dim]
  float* stats = nullptr;     // scratch [2 * group]
  float* inv_sums = nullptr;  // [group]: receives 1 / each query's sum of exponentials
  // Optional [group]: receives each query's largest score (split-KV decode combines partial
  // results through it and inv_sums).
  float* row_max = nullptr;
};
void DecodeHead(const DecodeHeadArgs& a);

// The most slots DecodeHead scores at once (the scratch `scores` needs group rows of
// min(len, this)): 1024, a bound on every instruction set's chunk.
inline constexpr int kDecodeChunkSlots = 1024;

// x[i] = exp(x[i] - shift) for i < n; returns their sum (x[i] - shift <= 0 expected: a row max).
float ExpShiftedSum(float* x, int n, float shift);
// ExpShiftedSum for a bf16 P: out[i] = bf16(exp(x[i] - shift)) for i < n (to nearest even);
// returns the sum of the rounded values, so that weights and their sum agree. x is unchanged.
float ExpShiftedSumBf16(const float* x, int n, float shift, uint16_t* out);
// The largest of x[0..n) (n >= 1).
float RowMax(const float* x, int n);

}  // namespace dapq::kernels::ref

#endif  // DAPQ_KERNELS_REF_ATTENTION_SIMD_H_
