// File: kernels/attention.h
// Causal multi-head attention with grouped KV heads (GQA), for prefill and for decode.
// Keys are stored post-RoPE. Scores are q.k / sqrt(head_dim), softmax in fp32.
#ifndef DAPQ_KERNELS_ATTENTION_H_
#define DAPQ_KERNELS_ATTENTION_H_

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/types.h"

namespace dapq::kernels {

// q:   [q_tokens, q_heads, head_dim], token stride q_stride (elements).
// k,v: per KV head a contiguous [kv_capacity, head_dim] slab; head h's slab starts at
//      k + h * kv_head_stride (elements). kv_len slots are valid.
// out: [q_tokens, q_heads, head_dim], token stride out_stride.
// Query head h reads KV head h / (q_heads / kv_heads).
// Causality: query token t sees slots [0, kv_len - q_tokens + t] (the q tokens are the last
// q_tokens slots of the cache). kv_len >= q_tokens.
// kv_lens (optional, [kv_heads]): a valid length per KV head, overriding kv_len — compressed
// caches in per-head storage hold a different number of slots per head.
//
// Paged K/V (block_table set; k, v and kv_head_stride are then unused): every KV head reads its
// slots through a table of block ids into a pool (kvstore/block_pool.h's arena: ids, not
// pointers, so the same tables serve a GPU copy of the pool). block_table is [kv_heads,
// blocks_per_head] (row h is KV head h's table); block b holds tokens_per_block (a power of two)
// consecutive slots as contiguous [tokens_per_block, head_dim] keys at k_pool + b * block_stride
// and values at v_pool + b * block_stride, so slot s of head h's keys are at
//   k_pool + block_table[h * blocks_per_head + s / tokens_per_block] * block_stride
//          + (s % tokens_per_block) * head_dim.
// Ids lie in [0, pool_blocks). Entries past a head's last needed block (ceil(len /
// tokens_per_block)) are not read. The pool holds kv_dtype elements (fp32, bf16 or fp16;
// block_stride counts them); the kernels widen them to fp32 as they read, and all arithmetic
// is fp32. The contiguous layout is fp32 only. For fp32 the
// result is bit-identical to the contiguous layout holding the same slots, for any block size:
// prefill gathers blocks into its key tiles, decode walks them in slot order, and both keep the
// contiguous summation order.
struct AttentionParams {
  int q_tokens = 0, q_heads = 0, kv_heads = 0, head_dim = 0;
  const float* q = nullptr;
  int q_stride = 0;
  const float* k = nullptr;
  const float* v = nullptr;
  long kv_head_stride = 0;
  int kv_len = 0;
  const int32_t* kv_lens = nullptr;
  const int32_t* block_table = nullptr;
  DType kv_dtype = DType::kF32;  // element type of k_pool / v_pool
  const void* k_pool = nullptr;
  const void* v_pool = nullptr;
  long block_stride = 0;  // elements from block id b to b + 1
  long pool_blocks = 0;
  int tokens_per_block = 0;
  int blocks_per_head = 0;
  float* out = nullptr;
  int out_stride = 0;
  // Prefill may round the queries and the softmax weights to the pool's 16-bit type and
  // multiply them with fp32 accumulation: on the CUDA backend on tensor cores (paged bf16 or
  // fp16 pools, head_dim <= 128; kernels/cuda/attention_prefill_tc.cu), on the CPU in oneDNN's
  // bf16 GEMMs (paged bf16 pools, oneDNN and AVX512-BF16; kernels/ref/attention_ref.cc). Each
  // output then moves by at most 2 units of that type's rounding (2^-8 bf16, 2^-11 fp16; fp16 adds
  // 2^-25 per visible slot, for weights below its normal range) of max |v| beyond the exact
  // kernels' result for the rounded queries. Otherwise arithmetic is exact fp32; decode ignores
  // the flag.
  bool round_to_kv_dtype = false;
};

// Prefill: tiled (flash-attention style online softmax), O(tile^2) scratch, never q x kv.
absl::Status AttentionPrefill(const AttentionParams& p, Stream stream = {});
// Decode: q_tokens == 1 (or a few) over the whole cache, streaming each K and V row once;
// O(kv_len) scratch per head.
absl::Status AttentionDecode(const AttentionParams& p, Stream stream = {});
absl::Status ValidateAttention(const AttentionParams& p);
// On the CUDA backend (Stream{Backend::kCuda, stream}) q, k, v, out, block_table, kv_lens and
// the pools are device pointers, so the host checks only what it can read: the shape, and that
// kv_len (which must bound every kv_lens entry there) fits q_tokens and the block tables.
absl::Status ValidateAttentionDevice(const AttentionParams& p);

// The valid length of KV head h's slab.
inline int KvLength(const AttentionParams& p, int kv_head) {
  return p.kv_lens != nullptr ? p.kv_lens[kv_head] : p.kv_len;
}

}  // namespace dapq::kernels

#endif  // DAPQ_KERNELS_ATTENTION_H_
