// File: worker/kv_cache.h
// One rank's paged KV cache for one sequence: a view on the rank's block pool
// (kvstore/block_pool.h).
//
// Layout (ARCHITECTURE.md §5): a block holds tokens_per_block (a power of two) consecutive slots
// of ONE (layer, local KV head), keys then values. Every (layer, KV head) of a sequence has
// its own block table (block ids in slot order) and its own valid length, so the `shared`
// storage mode (every head of a layer equally long) and the ragged `per_head` mode after
// per-head compression are the same structure. Slot s of (layer, head) lives in table entry
// s / tokens_per_block at row s % tokens_per_block, stored in the pool's element type (fp32, bf16
// or fp16): writes round fp32 rows into it and Gather widens them back, so callers only ever see
// fp32. The attention kernels read K/V (in the pool's type) through these
// tables and the pool's arena (kernels::AttentionParams::block_table). Besides the slots, each
// table keeps the absolute position of every slot: slots and positions diverge after
// compression (the next token's position is not a slot count).
//
// Blocks are shared copy-on-write: a forked cache (Clone) and a cached prompt prefix
// (AttachPrefix) hold the same blocks, and a cache about to write into a block someone else
// also holds (an append into a partly filled last block, a compaction) copies it first. A pool
// may be capped (max_blocks); running out is ResourceExhausted (expected traffic), with the
// cache's contents unchanged.
//
// Pools with a context arena (kvstore/block_pool.h: block memory on a device, e.g. GPU HBM) are
// reached only through the pool's copies: writes convert fp32 rows in a host buffer and copy
// one contiguous run of slots per block, Gather copies runs back and widens them, copy-on-write
// and compaction copy on the device. A host-arena pool is read and written in place. A failed
// device copy is returned as the pool reports it (Internal on a device fault), with the layer,
// head and slots in the message; host-arena reads and writes cannot fail.
//
// Thread-safety: the pool is thread-safe. A KvCache is owned by one thread at a time (its rank
// thread); it is move-only in spirit (copies share blocks) and returns its references to the
// pool when destroyed or cleared.
#ifndef DAPQ_WORKER_KV_CACHE_H_
#define DAPQ_WORKER_KV_CACHE_H_

#include <cstdint>
#include <memory>
#include <span>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/types.h"
#include "kvstore/block_pool.h"

namespace dapq::worker {

class KvCache {
 public:
  // Draws blocks from `pool` (its head_dim must equal head_dim).
  KvCache(int n_layers, int kv_heads, int head_dim, std::shared_ptr<kvstore::BlockPool> pool);
  // A private, uncapped pool of 16-slot blocks (tools and tests).
  KvCache(int n_layers, int kv_heads, int head_dim);
  ~KvCache();
  KvCache(KvCache&& other) noexcept;
  KvCache& operator=(KvCache&& other) noexcept;
  // A copy sharing every block (a forked sequence): each side copies a shared block before it
  // writes into it.
  KvCache Clone() const;
  KvCache(const KvCache& other);  // Clone()
  KvCache& operator=(const KvCache& other);

  int n_layers() const { return n_layers_; }
  int kv_heads() const { return kv_heads_; }
  int head_dim() const { return head_dim_; }
  int tokens_per_block() const { return tokens_per_block_; }
  const kvstore::BlockPool& pool() const { return *pool_; }

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
  // The blocks ReserveAppend(count) would take from the pool now.
  long BlocksToReserve(int count) const;

  // Block table of (layer, head): the ids of every block reserved so far (at least the ones
  // covering length), in slot order.
  std::span<const kvstore::BlockId> block_ids(int layer, int head) const {
    return block_ids_[Slab(layer, head)];
  }
  int num_blocks(int layer, int head) const {
    return static_cast<int>(block_ids_[Slab(layer, head)].size());
  }
  // Stores fp32 keys k and values v ([head_dim] each; either may be null) in slot `slot`
  // (< num_blocks * tokens_per_block) of (layer, head), rounded to the pool's element type.
  // For slots this cache reserved (ReserveAppend made their blocks private). Errors: a failed
  // device copy (context arenas only; the slot's contents are then unspecified).
  absl::Status WriteSlot(int layer, int head, int slot, const float* k, const float* v);
  // Stores a forward pass's `rows` new keys and values of every head of `layer` in slots
  // [length, length + rows) of each head (reserved by ReserveAppend), through kernels::KvAppend on
  // `stream` (the pool's stream() when `stream` is the default and the pool has a context
  // arena): k and v are [rows, kv_heads, head_dim] with row stride `stride`; `table` is the
  // layer's block table as the attention kernels take it ([kv_heads, blocks_per_head], each
  // row block_ids(layer, head) then padding) and must live where the stream's kernels read it;
  // so must `first_slots` ([kv_heads]: the layer's lengths(), copied there) when the kernels do
  // not read host memory (null: lengths(layer) itself).
  absl::Status AppendRows(int layer, int rows, const float* k, const float* v, int stride,
                          const int32_t* table, int blocks_per_head, kernels::Stream stream = {},
                          const int32_t* first_slots = nullptr);
  // Copies slots [begin, begin + count) of (layer, head) contiguously into k and v
  // ([count, head_dim] each, widened to fp32; either may be null). Slots past length are the ones
  // written but not yet committed (a forward pass's observer). REQUIRES: begin + count <=
  // num_blocks * tokens_per_block. Errors: a failed device copy (context arenas only; k and v
  // are then partly written).
  absl::Status Gather(int layer, int head, int begin, int count, float* k, float* v) const;
  // The pool copies (BlockPool::ReadAsync) that bring slots [begin, begin + count) of (layer,
  // head) to host memory as stored (the pool's element type, slot_bytes() / 2 per row): keys to
  // k_dst, values to v_dst, appended to `out`, one per run of slots inside one block.
  // REQUIRES: as for Gather.
  void SlotCopies(int layer, int head, int begin, int count, std::byte* k_dst, std::byte* v_dst,
                  std::vector<kvstore::BlockPool::HostCopy>& out) const;
  // The first n slots of every head of a layer, contiguous: k and v (either may be null) are
  // resized to [kv_heads, n, head_dim] (head stride n * head_dim). REQUIRES and errors: as
  // Gather's.
  absl::Status GatherLayer(int layer, int n, std::vector<float>* k, std::vector<float>* v) const;

  // Marks `count` more slots (already written after each (layer, head)'s length) valid, at
  // `positions`.
  void Commit(const int32_t* positions, int count);
  // Appends slots to one (layer, head): positions [count], k and v [count, head_dim] (restoring
  // a session from the KV store). ResourceExhausted (nothing changed) when the pool is full.
  absl::Status AppendSlots(int layer, int head, std::span<const int32_t> positions, const float* k,
                           const float* v);
  // AppendSlots whose rows are written later, many slabs at once: on a context arena the rows
  // are converted to the pool's type into `staging` (count * slot_bytes(): the keys, then the
  // values) and the copies that write them are appended to `out`, for BlockPool::WriteAsync; the
  // slots count as appended at once. A host arena writes them here (staging and out unused).
  // REQUIRES: staging outlives the copies; the slots are read only after the copies ran.
  absl::Status AppendSlotsDeferred(int layer, int head, std::span<const int32_t> positions,
                                   const float* k, const float* v, std::byte* staging,
                                   std::vector<kvstore::BlockPool::HostCopy>& out);
  // Runs the deferred copies (BlockPool::WriteAsync, then a wait for the copy stream only: the
  // staging memory may be reused after it) and clears them.
  absl::Status WriteDeferred(std::vector<kvstore::BlockPool::HostCopy>& copies);
  // Keeps only the given slots (ascending, unique, < length) of one (layer, head), moving them
  // to the front in order and returning the blocks past the new end. InvalidArgument for bad
  // indices.
  absl::Status Keep(int layer, int head, std::span<const int32_t> slots);
  // Drops the last `count` slots of every (layer, head) (e.g. DapQ's forward-mode pseudo
  // tokens), returning emptied blocks.
  absl::Status DropLast(int count);
  void Clear();  // every block back to the pool

  // Prefix sharing (kvstore::BlockPool's prefix index). The first `blocks` full blocks of every
  // (layer, head), [blocks][n_layers * kv_heads] (block-major, slab order inside): the ids to
  // publish. REQUIRES: every slab holds at least blocks * tokens_per_block slots.
  std::vector<kvstore::BlockId> PrefixBlocks(int blocks) const;
  // Takes `ids` (as PrefixBlocks lays them out, already retained for this cache) as the first
  // ids.size() / (n_layers * kv_heads) blocks of every slab, at positions 0, 1, ...
  // REQUIRES: the cache is empty.
  void AttachPrefix(std::span<const kvstore::BlockId> ids);

  // Incremental session saves (worker/session_store.h): the leading slots of (layer, head)
  // whose contents and positions have not changed since MarkSaved (appends keep them; a
  // compaction, a drop or a clear lowers it). A fresh or cloned cache has none.
  int unchanged(int layer, int head) const { return unchanged_[Slab(layer, head)]; }
  void MarkSaved() { unchanged_ = lengths_; }

  size_t bytes() const;  // blocks held x block bytes
  size_t slot_bytes() const { return 2 * pool_->element_bytes() * head_dim_; }  // K and V

 private:
  long Slab(int layer, int head) const { return static_cast<long>(layer) * kv_heads_ + head; }
  // Where slot `slot` of `slab`'s keys (values when `values`) lives in the pool. A host address
  // only for a host arena; see SlotOffset otherwise.
  std::byte* SlotAddress(long slab, int slot, bool values) {
    const kvstore::BlockId id = block_ids_[slab][slot / tokens_per_block_];
    return (values ? pool_->values(id) : pool_->keys(id)) +
           static_cast<size_t>(slot % tokens_per_block_) * head_dim_ * pool_->element_bytes();
  }
  const std::byte* SlotAddress(long slab, int slot, bool values) const {
    return const_cast<KvCache*>(this)->SlotAddress(slab, slot, values);
  }
  // Slot `slot` of `slab` on any arena: its block and the byte offset of its keys (values when
  // `values`) inside that block, for the pool's Read/Write/Move.
  std::pair<kvstore::BlockId, size_t> SlotOffset(long slab, int slot, bool values) const {
    const kvstore::BlockId id = block_ids_[slab][slot / tokens_per_block_];
    return {id,
            (values ? pool_->values_offset() : 0) +
                static_cast<size_t>(slot % tokens_per_block_) * head_dim_ * pool_->element_bytes()};
  }
  // Context arenas: rounds `count` fp32 rows (row stride head_dim; k or v may be null) into slots
  // [first, first + count) of `slab`, one Write per run of slots inside one block.
  absl::Status WriteRows(long slab, int first, int count, const float* k, const float* v);
  // AppendSlots' body: writes the rows at once (out null), or stages them (AppendSlotsDeferred).
  absl::Status AppendSlotsTo(int layer, int head, std::span<const int32_t> positions,
                             const float* k, const float* v, std::byte* staging,
                             std::vector<kvstore::BlockPool::HostCopy>* out);
  // Context arenas: Gather's copies and widening, one Read per run of slots inside one block.
  absl::Status GatherRows(long slab, int begin, int count, float* k, float* v) const;
  // Keep's row moves (slots already validated, destination blocks private) through
  // kernels::KvCompact: in place on the CPU for a host arena; on the pool's stream for a context
  // arena, the keep-set and the slab's table uploaded into the context's workspace and every row
  // moved by the device at once (waits for the stream: the upload's host buffer is local).
  absl::Status Compact(long slab, std::span<const int32_t> slots);
  // Returns the blocks of `slab` past those covering `slots` slots to the pool.
  void Shrink(long slab, int slots);
  // Copy-on-write: block `index` of `slab` becomes this cache's own (a copy when shared).
  // ResourceExhausted (nothing changed) when the pool has no block for the copy.
  absl::Status MakeWritable(long slab, int index);
  // Blocks `slab` needs before writing `count` slots after its length: new ones, and a copy
  // of each shared block in that range (a partly filled last one, reserved ones a clone shares).
  int BlocksToAppend(long slab, int count) const;
  // Makes room for those `count` slots with BlocksToAppend(slab, count) blocks taken from
  // `blocks` at `next` (advanced): copies of the shared blocks first, then new blocks. On a
  // failed device copy, the blocks from `next` on are still the caller's.
  absl::Status ExtendForAppend(long slab, int count, std::span<const kvstore::BlockId> blocks,
                               size_t& next);
  // Points `id` at `copy` (a block of refcount 1) holding the shared block's contents, and drops
  // this cache's reference to the shared one. On a failed device copy, releases `copy` and
  // leaves `id` as it was.
  absl::Status ReplaceWithCopy(kvstore::BlockId& id, kvstore::BlockId copy);
  void ReleaseAll();

  int n_layers_, kv_heads_, head_dim_, tokens_per_block_;
  std::shared_ptr<kvstore::BlockPool> pool_;
  std::vector<int32_t> lengths_;                          // [layers * kv_heads]
  std::vector<int32_t> unchanged_;                        // [layers * kv_heads], see unchanged()
  std::vector<std::vector<int32_t>> positions_;           // [layers * kv_heads][length]
  std::vector<std::vector<kvstore::BlockId>> block_ids_;  // [layers * kv_heads][blocks]
};

}  // namespace dapq::worker

#endif  // DAPQ_WORKER_KV_CACHE_H_
