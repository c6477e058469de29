// File: kernels/kv_compact.h
// Compacts paged KV after a keep-set (compression's last step): for each of `heads` block tables,
// slot i (i < counts[h]) of head h receives the key and value slot keep[h * keep_stride + i]
// held; slots from counts[h] on are left as they were. A head's keep-set is ascending (so
// keep[i] >= i: every row moves towards the front). Rows are copied as stored (no conversion).
// The CPU moves the rows in place in slot order (a row is always read before anything writes
// it). The GPU gathers every kept row into `scratch`, then scatters them to their new slots: two
// passes, since rows move at once there and one row's destination may be another's source.
#ifndef DAPQ_KERNELS_KV_COMPACT_H_
#define DAPQ_KERNELS_KV_COMPACT_H_

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/types.h"

namespace dapq::kernels {

// keep: [heads, keep_stride] slot indices; counts: [heads] (each <= keep_stride); block_table:
// [heads, blocks_per_head] block ids covering every slot read or written; pools as
// AttentionParams' (keys of block b at k_pool + b * block_stride elements of kv_dtype, values at
// v_pool + b * block_stride). scratch: heads * keep_stride * 2 * head_dim elements of kv_dtype
// (the CUDA backend's; the CPU ignores it).
struct KvCompactParams {
  int heads = 0, head_dim = 0;
  const int32_t* keep = nullptr;
  int keep_stride = 0;
  const int32_t* counts = nullptr;
  const int32_t* block_table = nullptr;
  int blocks_per_head = 0;
  int tokens_per_block = 0;
  DType kv_dtype = DType::kF32;
  void* k_pool = nullptr;
  void* v_pool = nullptr;
  long block_stride = 0;
  long pool_blocks = 0;
  void* scratch = nullptr;
};

absl::Status KvCompact(const KvCompactParams& p, Stream stream = {});
// Host checks: the shape, and per head that the count fits, the keep-set is ascending inside
// the head's table and every block it touches lies in the pool.
absl::Status ValidateKvCompact(const KvCompactParams& p);
// The CUDA backend's: the shape and the scratch (keep, counts and the table are device memory).
absl::Status ValidateKvCompactDevice(const KvCompactParams& p);

}  // namespace dapq::kernels

#endif  // DAPQ_KERNELS_KV_COMPACT_H_
