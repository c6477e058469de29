// File: kvstore/block_pool.h
// One rank's paged KV block pool (ARCHITECTURE.md §5): fixed-size blocks named by int32 ids in
// one arena, block b at base + b * block_stride, so block tables hold ids, never pointers, and
// the same tables can later live in GPU memory. A block holds tokens_per_block (a power of two)
// consecutive slots of one (layer, KV head): keys [tokens_per_block, head_dim] (post-RoPE) then
// values [tokens_per_block, head_dim], in the pool's element type (fp32, bf16 or fp16:
// --kv_dtype). fp32 is the exact reference; the 2-byte types halve every block.
//
// Blocks are reference-counted: sequences share blocks (a forked sequence, a cached prompt
// prefix), and a holder that writes into a shared block copies it first (copy-on-write;
// worker/kv_cache.h does that). A block returns to the free list when its last reference goes.
//
// Prefix index: full blocks of a prompt, keyed by a hash chain over its tokens (PrefixKeys),
// stay in the pool after their sequence ends, so a later prompt starting with the same tokens
// takes them instead of prefilling them again. The index holds one reference per block; a block
// only the index holds is "cached" and counts as free: Allocate evicts cached entries, least
// recently used first, when the free list runs short.
//
// Memory: the arena reserves its whole address range up front (max_blocks blocks, or the
// machine's RAM when uncapped) without committing it, and commits kBlocksPerChunk blocks at a
// time, so the base never moves. Running out (the cap, or memory) is ResourceExhausted with
// nothing allocated: expected traffic.
// Thread-safety: thread-safe (one mutex). Block memory is not synchronised: a block's holder
// writes it, and shared blocks are read-only by contract.
#ifndef DAPQ_KVSTORE_BLOCK_POOL_H_
#define DAPQ_KVSTORE_BLOCK_POOL_H_

#include <cstddef>
#include <cstdint>
#include <list>
#include <memory>
#include <span>
#include <unordered_map>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/mutex.h"
#include "kernels/types.h"

namespace dapq::kvstore {

using BlockId = int32_t;

// The chain keys of the full token blocks of `tokens`: key i covers tokens [0, (i + 1) *
// tokens_per_block), hashing block i's tokens seeded with key i - 1. Identical prefixes give
// identical keys; a key also depends on every earlier token.
std::vector<uint64_t> PrefixKeys(std::span<const int> tokens, int tokens_per_block);

class BlockPool {
 public:
  static constexpr int kBlocksPerChunk = 256;

  // tokens_per_block: a power of two; max_blocks: the cap (0: grow while memory lasts);
  // dtype: the element type of the stored keys and values.
  static absl::StatusOr<std::shared_ptr<BlockPool>> Create(
      int head_dim, int tokens_per_block, long max_blocks = 0,
      kernels::DType dtype = kernels::DType::kF32);
  ~BlockPool();
  BlockPool(const BlockPool&) = delete;
  BlockPool& operator=(const BlockPool&) = delete;

  int head_dim() const { return head_dim_; }
  int tokens_per_block() const { return tokens_per_block_; }
  long max_blocks() const { return max_blocks_; }
  long capacity() const { return capacity_; }  // ids are in [0, capacity)
  kernels::DType dtype() const { return dtype_; }
  size_t element_bytes() const { return static_cast<size_t>(kernels::DTypeSize(dtype_)); }
  size_t block_bytes() const { return 2 * block_elems_ * element_bytes(); }

  // Arena addressing: block b's keys at keys_base() + b * block_stride() elements of dtype(),
  // its values at values_base() + b * block_stride(); keys(b) and values(b) are those addresses.
  const std::byte* keys_base() const { return base_; }
  const std::byte* values_base() const { return base_ + block_elems_ * element_bytes(); }
  long block_stride() const { return static_cast<long>(2 * block_elems_); }
  std::byte* keys(BlockId id) { return base_ + id * block_bytes(); }
  std::byte* values(BlockId id) { return keys(id) + block_elems_ * element_bytes(); }
  const std::byte* keys(BlockId id) const { return base_ + id * block_bytes(); }
  const std::byte* values(BlockId id) const { return keys(id) + block_elems_ * element_bytes(); }

  // Blocks held by sequences (excludes the blocks only the prefix index holds).
  long blocks_in_use() const ABSL_LOCKS_EXCLUDED(mu_);
  long blocks_allocated() const ABSL_LOCKS_EXCLUDED(mu_);  // committed memory, in blocks
  // The most blocks ever referenced at once (held by sequences or the prefix index).
  long peak_blocks_referenced() const ABSL_LOCKS_EXCLUDED(mu_);
  long blocks_cached() const ABSL_LOCKS_EXCLUDED(mu_);  // in the prefix index
  long cached_idle() const ABSL_LOCKS_EXCLUDED(mu_);    // ... and held by nothing else
  long prefix_entries() const ABSL_LOCKS_EXCLUDED(mu_);
  int RefCount(BlockId id) const ABSL_LOCKS_EXCLUDED(mu_);

  // Appends `count` new blocks (reference count 1) to `out`: all of them, or none and
  // ResourceExhausted (the cap or memory, after evicting what the prefix index alone holds).
  absl::Status Allocate(int count, std::vector<BlockId>& out) ABSL_LOCKS_EXCLUDED(mu_);
  // One more reference to each block (held ones).
  void Retain(std::span<const BlockId> ids) ABSL_LOCKS_EXCLUDED(mu_);
  // Drops one reference to each block; blocks reaching zero return to the free list.
  void Release(std::span<const BlockId> ids) ABSL_LOCKS_EXCLUDED(mu_);

  // Prefix index. An entry is one key of a chain and the blocks of that token block, in the
  // caller's order (per_entry ids: one per (layer, KV head)).
  // Adds the entries of keys[i] -> blocks[i * per_entry, (i + 1) * per_entry) that are not yet
  // present (the index retains their blocks); present ones are marked recently used.
  void InsertPrefix(std::span<const uint64_t> keys, std::span<const BlockId> blocks, int per_entry)
      ABSL_LOCKS_EXCLUDED(mu_);
  // The longest run keys[0..n) present in the index: appends their blocks (per_entry per key,
  // retained for the caller) to `out` and returns n.
  int LookupPrefix(std::span<const uint64_t> keys, int per_entry, std::vector<BlockId>& out)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Drops every entry (the index's references).
  void ClearPrefixes() ABSL_LOCKS_EXCLUDED(mu_);

 private:
  struct Entry {
    uint64_t key = 0;
    std::vector<BlockId> blocks;
  };
  using Lru = std::list<Entry>;  // most recently used first

  BlockPool(int head_dim, int tokens_per_block, long max_blocks, long capacity,
            kernels::DType dtype, std::byte* base, size_t reserved_bytes);
  void ReleaseLocked(BlockId id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RetainLocked(BlockId id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void EvictLocked(Lru::iterator it) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Blocks Allocate could hand out without evicting.
  long AvailableLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status CommitChunkLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const int head_dim_, tokens_per_block_;
  const long max_blocks_;
  const long capacity_;
  const size_t block_elems_;  // tokens_per_block * head_dim (per K or V)
  const kernels::DType dtype_;
  std::byte* const base_;
  const size_t reserved_bytes_;
  mutable Mutex mu_;
  long committed_ ABSL_GUARDED_BY(mu_) = 0;  // blocks [0, committed_) are backed
  std::vector<BlockId> free_ ABSL_GUARDED_BY(mu_);
  std::vector<int32_t> refcount_ ABSL_GUARDED_BY(mu_);  // [committed_]
  std::vector<uint8_t> cached_ ABSL_GUARDED_BY(mu_);    // in the prefix index
  long referenced_ ABSL_GUARDED_BY(mu_) = 0;            // blocks with a reference
  long peak_referenced_ ABSL_GUARDED_BY(mu_) = 0;       // the most referenced_ has been
  long cached_count_ ABSL_GUARDED_BY(mu_) = 0;
  long cached_idle_ ABSL_GUARDED_BY(mu_) = 0;  // cached with reference count 1
  Lru lru_ ABSL_GUARDED_BY(mu_);
  std::unordered_map<uint64_t, Lru::iterator> index_ ABSL_GUARDED_BY(mu_);
};

}  // namespace dapq::kvstore

#endif  // DAPQ_KVSTORE_BLOCK_POOL_H_
