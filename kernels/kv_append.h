// File: kernels/kv_append.h
// Writes a step's new keys and values into a paged KV pool: token t of KV head h goes to slot
// first_slots[h] + t of that head, addressed through its block table exactly as the attention
// kernels read it (kernels/attention.h, kernels/paged_index.h), rounded to the pool's element
// type (to nearest, ties to even: kernels/types.h's conversions).
#ifndef DAPQ_KERNELS_KV_APPEND_H_
#define DAPQ_KERNELS_KV_APPEND_H_

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/types.h"

namespace dapq::kernels {

// k, v: [tokens, kv_heads, head_dim] fp32, token row stride src_stride (elements).
// first_slots: [kv_heads]; block_table: [kv_heads, blocks_per_head] block ids in
// [0, pool_blocks) covering every written slot; pools as AttentionParams' (keys of block b at
// k_pool + b * block_stride elements of kv_dtype, values at v_pool + b * block_stride).
struct KvAppendParams {
  int tokens = 0, kv_heads = 0, head_dim = 0;
  const float* k = nullptr;
  const float* v = nullptr;
  int src_stride = 0;
  const int32_t* first_slots = nullptr;
  const int32_t* block_table = nullptr;
  int blocks_per_head = 0;
  int tokens_per_block = 0;
  DType kv_dtype = DType::kF32;
  void* k_pool = nullptr;
  void* v_pool = nullptr;
  long block_stride = 0;
  long pool_blocks = 0;
};

absl::Status KvAppend(const KvAppendParams& p, Stream stream = {});
// Host checks: the shape, and that every written slot's block id lies in the pool.
absl::Status ValidateKvAppend(const KvAppendParams& p);
// The CUDA backend's: the shape only (first_slots and the table are device memory).
absl::Status ValidateKvAppendDevice(const KvAppendParams& p);

}  // namespace dapq::kernels

#endif  // DAPQ_KERNELS_KV_APPEND_H_
