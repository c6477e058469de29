// File: worker/kv_cache.h
// One rank's paged KV cache for one sequence, and the per-rank block pool it draws from.
//
// Layout (ARCHITECTURE.md §5): a block holds tokens_per_block (a power of two) consecutive slots
// of ONE (layer, local KV head): keys [tokens_per_block, head_dim] (post-RoPE) and values
// [tokens_per_block, head_dim], fp32. Every (layer, KV head) of a sequence has its own block
// table (the block pointers in slot order) and its own valid length, so the `shared` storage
// mode (every head of a layer equally long) and the ragged `per_head` mode after per-head
// compression are the same structure. Slot s of (layer, head) lives in table entry
// s / tokens_per_block at row s % tokens_per_block; the attention kernels read K/V through these
// tables (kernels::AttentionParams::k_blocks). Besides the slots, each table keeps the absolute
// position of every slot: slots and positions diverge after compression (the next token's
// position is not a slot count).
//
// Blocks come from a KvBlockPool shared by every sequence of a rank (RankModel owns it), so
// sessions share the rank's memory; a pool may be capped (max_blocks), and running out is
// ResourceExhausted (expected traffic), with the cache unchanged.
//
// Thread-safety: KvBlockPool is thread-safe (one mutex around the free list; block memory never
// moves). A KvCache is owned by one thread at a time (its rank thread); it is move-only and
// returns its blocks to the pool when destroyed or cleared.
#ifndef DAPQ_WORKER_KV_CACHE_H_
#define DAPQ_WORKER_KV_CACHE_H_

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/mutex.h"

namespace dapq::worker {

// A pool of KV blocks of one shape, allocated lazily in chunks of kBlocksPerChunk blocks whose
// memory stays put until the pool is destroyed (freed blocks go back to a free list). A chunk
// holds the keys of its blocks, in id order, then their values, so that blocks allocated
// together (a prefill's) are contiguous per K and V and stream like a slab.
class KvBlockPool {
 public:
  static constexpr int kBlocksPerChunk = 256;
  struct Block {
    int32_t id = -1;
    float* k = nullptr;  // keys [tokens_per_block, head_dim]
    float* v = nullptr;  // values [tokens_per_block, head_dim]
  };

  // tokens_per_block: a power of two; max_blocks: the cap (0: grow while memory lasts).
  static absl::StatusOr<std::shared_ptr<KvBlockPool>> Create(int head_dim, int tokens_per_block,
                                                             long max_blocks = 0);

  int head_dim() const { return head_dim_; }
  int tokens_per_block() const { return tokens_per_block_; }
  long max_blocks() const { return max_blocks_; }
  size_t block_bytes() const { return 2 * block_elems_ * sizeof(float); }
  long blocks_in_use() const ABSL_LOCKS_EXCLUDED(mu_);
  long blocks_allocated() const ABSL_LOCKS_EXCLUDED(mu_);  // in use + free

  // Appends `count` blocks to `out`: all of them, or none and ResourceExhausted (the cap, or the
  // memory for a new chunk).
  absl::Status Allocate(int count, std::vector<Block>& out) ABSL_LOCKS_EXCLUDED(mu_);
  // Returns blocks (ids from Allocate, each once).
  void Free(std::span<const int32_t> ids) ABSL_LOCKS_EXCLUDED(mu_);

 private:
  KvBlockPool(int head_dim, int tokens_per_block, long max_blocks);

  const int head_dim_, tokens_per_block_;
  const long max_blocks_;
  const size_t block_elems_;  // tokens_per_block * head_dim (per K or V)
  mutable Mutex mu_;
  std::vector<std::unique_ptr<float[]>> chunks_ ABSL_GUARDED_BY(mu_);
  std::vector<int32_t> free_ ABSL_GUARDED_BY(mu_);
  long in_use_ ABSL_GUARDED_BY(mu_) = 0;
};

// Read-only view of one (layer, KV head)'s block table: blocks [ceil(length / tokens_per_block)]
// pointers, each to [tokens_per_block, head_dim] keys (k_blocks) or values (v_blocks).
struct KvBlockTable {
  const float* const* k_blocks = nullptr;
  const float* const* v_blocks = nullptr;
  int tokens_per_block = 0;
  int length = 0;
};

class KvCache {
 public:
  // Draws blocks from `pool` (its head_dim must equal head_dim).
  KvCache(int n_layers, int kv_heads, int head_dim, std::shared_ptr<KvBlockPool> pool);
  // A private, uncapped pool of 16-slot blocks (tools and tests).
  KvCache(int n_layers, int kv_heads, int head_dim);
  ~KvCache();
  KvCache(KvCache&& other) noexcept;
  KvCache& operator=(KvCache&& other) noexcept;
  // A deep copy in new blocks of the same pool (a forked sequence); ResourceExhausted when the
  // pool cannot hold it.
  absl::StatusOr<KvCache> Clone() const;
  // Clone() that aborts when the pool is full: for tools copying sequences on uncapped pools.
  KvCache(const KvCache& other);
  KvCache& operator=(const KvCache& other);

  int n_layers() const { return n_layers_; }
  int kv_heads() const { return kv_heads_; }
  int head_dim() const { return head_dim_; }
  int tokens_per_block() const { return tokens_per_block_; }
  const KvBlockPool& pool() const { return *pool_; }

  // Valid slots of one (layer, head), and of every head of a layer ([kv_heads], for kv_lens).
  int length(int layer, int head) const { return lengths_[Slab(layer, head)]; }
  const int32_t* lengths(int layer) const { return &lengths_[Slab(layer, 0)]; }
  int max_length() const;
  long total_slots() const;  // summed over every (layer, head)
  // Absolute positions of a (layer, head)'s valid slots, in slot order.
  std::span<const int32_t> positions(int layer, int head) const;

  // Makes room for `count` more slots after every (layer, head)'s length, taking blocks from the
  // pool. ResourceExhausted (nothing allocated) when the pool cannot supply them.
  absl::Status ReserveAppend(int count);

  // Block table of (layer, head): k_blocks/v_blocks hold every block reserved so far
  // (num_blocks(); at least the ones covering length).
  KvBlockTable table(int layer, int head) const;
  int num_blocks(int layer, int head) const {
    return static_cast<int>(k_blocks_[Slab(layer, head)].size());
  }
  // Slot `slot` (< num_blocks * tokens_per_block) of (layer, head): [head_dim] keys or values.
  float* key_slot(int layer, int head, int slot) {
    return k_blocks_[Slab(layer, head)][slot / tokens_per_block_] +
           static_cast<long>(slot % tokens_per_block_) * head_dim_;
  }
  float* value_slot(int layer, int head, int slot) {
    return v_blocks_[Slab(layer, head)][slot / tokens_per_block_] +
           static_cast<long>(slot % tokens_per_block_) * head_dim_;
  }
  // Copies slots [begin, begin + count) of (layer, head) contiguously into k and v
  // ([count, head_dim] each; either may be null). Slots past length are the ones written but
  // not yet committed (a forward pass's observer). REQUIRES: begin + count <= num_blocks *
  // tokens_per_block.
  void Gather(int layer, int head, int begin, int count, float* k, float* v) const;
  // The first n slots of every head of a layer, contiguous: k and v (either may be null) are
  // resized to [kv_heads, n, head_dim] (head stride n * head_dim). REQUIRES: as Gather's.
  void GatherLayer(int layer, int n, std::vector<float>* k, std::vector<float>* v) const;

  // Marks `count` more slots (already written after each (layer, head)'s length) valid, at
  // `positions`.
  void Commit(const int32_t* positions, int count);
  // Appends slots to one (layer, head): positions [count], k and v [count, head_dim] (restoring
  // a session from the KV store). ResourceExhausted (nothing changed) when the pool is full.
  absl::Status AppendSlots(int layer, int head, std::span<const int32_t> positions, const float* k,
                           const float* v);
  // Keeps only the given slots (ascending, unique, < length) of one (layer, head), moving them
  // to the front in order and returning the blocks past the new end. InvalidArgument for bad
  // indices.
  absl::Status Keep(int layer, int head, std::span<const int32_t> slots);
  // Drops the last `count` slots of every (layer, head) (e.g. DapQ's forward-mode pseudo
  // tokens), returning emptied blocks.
  absl::Status DropLast(int count);
  void Clear();  // every block back to the pool

  size_t bytes() const;  // blocks held x block bytes

 private:
  long Slab(int layer, int head) const { return static_cast<long>(layer) * kv_heads_ + head; }
  // Returns the blocks of `slab` past those covering `slots` slots to the pool.
  void Shrink(long slab, int slots);
  void ReleaseAll();

  int n_layers_, kv_heads_, head_dim_, tokens_per_block_;
  std::shared_ptr<KvBlockPool> pool_;
  std::vector<int32_t> lengths_;                 // [layers * kv_heads]
  std::vector<std::vector<int32_t>> positions_;  // [layers * kv_heads][length]
  std::vector<std::vector<int32_t>> block_ids_;  // [layers * kv_heads][blocks]
  std::vector<std::vector<float*>> k_blocks_, v_blocks_;
};

}  // namespace dapq::worker

#endif  // DAPQ_WORKER_KV_CACHE_H_
