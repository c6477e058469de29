// File: kernels/paged_index.h
// The index arithmetic every attention kernel shares, written once for the CPU kernels
// (kernels/ref/) and the CUDA kernels (kernels/cuda/): where a slot of a paged KV head lives in
// the block pool, how many slots a causal query sees, and how split-KV decoding (flash-decoding)
// cuts a head's slots into parts. Functions are `__host__ __device__` under nvcc and plain
// inline functions elsewhere, so CPU unit tests (paged_index_test.cc) check the exact code the
// GPU runs. No CUDA types, no allocation, no error paths: callers validate their parameters
// first (kernels/validate.cc).
#ifndef DAPQ_KERNELS_PAGED_INDEX_H_
#define DAPQ_KERNELS_PAGED_INDEX_H_

#include <cstdint>

#if defined(__CUDACC__)
#define DAPQ_HOST_DEVICE __host__ __device__
#else
#define DAPQ_HOST_DEVICE
#endif

namespace dapq::kernels {

// Element offset, from the pool's base, of row `row` (< tokens_per_block) of the block with id
// `block_id` (keys and values use the same offsets from their own bases: AttentionParams'
// k_pool / v_pool and block_stride).
DAPQ_HOST_DEVICE inline long PagedBlockRow(int32_t block_id, int row, long block_stride,
                                           int head_dim) {
  return static_cast<long>(block_id) * block_stride + static_cast<long>(row) * head_dim;
}

// Element offset of slot `slot` of a KV head whose block table is `table` (the head's row of
// AttentionParams::block_table); tokens_per_block is a power of two.
DAPQ_HOST_DEVICE inline long PagedSlot(const int32_t* table, int slot, int tokens_per_block,
                                       long block_stride, int head_dim) {
  return PagedBlockRow(table[slot / tokens_per_block], slot % tokens_per_block, block_stride,
                       head_dim);
}

// Slots query token t (of q_tokens, the last q_tokens slots of a head holding kv_len) sees:
// [0, CausalVisible(...)) — causality for decode and for a prefill tile's last row.
DAPQ_HOST_DEVICE inline int CausalVisible(int kv_len, int q_tokens, int t) {
  return kv_len - q_tokens + t + 1;
}

// Prefill kernels stack a KV head's GQA group into rows: row r is query token r / group and query
// head kv_head * group + r % group, so each key tile serves the whole group. The element offset
// of that (token, head) in a [token][query head][head_dim] array whose tokens lie token_stride
// elements apart (AttentionParams::q / out with q_stride / out_stride).
DAPQ_HOST_DEVICE inline long StackedRowOffset(long row, int group, int kv_head, int token_stride,
                                              int head_dim) {
  return (row / group) * token_stride +
         (static_cast<long>(kv_head) * group + row % group) * head_dim;
}

struct SlotRange {
  int begin = 0, end = 0;
};

// Part `part` of `parts` of slots [0, len): parts start on multiples of `unit` slots (so a paged
// cache with blocks of up to `unit` slots is cut at block boundaries, and paged and contiguous
// caches split alike); together the parts cover [0, len) exactly, in order, without overlap; a
// part may be empty when len is short.
DAPQ_HOST_DEVICE inline SlotRange SplitPart(int len, int part, int parts, int unit) {
  const long units = (static_cast<long>(len) + unit - 1) / unit;
  const long begin = units * part / parts * unit;
  const long end = units * (part + 1) / parts * unit;
  SlotRange r;
  r.begin = static_cast<int>(begin < len ? begin : len);
  r.end = static_cast<int>(end < len ? end : len);
  return r;
}

// How many parts each (query token, KV head) pair's cache is cut into: enough that `tasks`
// pairs times parts fill `workers` (CPU threads, or GPU thread blocks the SMs hold at once),
// never parts shorter than min_slots, at least 1.
DAPQ_HOST_DEVICE inline int SplitCount(int tasks, int workers, int longest, int min_slots) {
  if (tasks <= 0 || tasks >= workers || longest < 2 * min_slots) return 1;
  const int wanted = (workers + tasks - 1) / tasks;
  const int most = longest / min_slots;
  return wanted < most ? wanted : most;
}

}  // namespace dapq::kernels

#endif  // DAPQ_KERNELS_PAGED_INDEX_H_
