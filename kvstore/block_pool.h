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
// Memory, two kinds of arena:
//  - host (no execution context): the arena reserves its whole address range up front
//    (max_blocks blocks, or the machine's RAM when uncapped) without committing it, and commits
//    kBlocksPerChunk blocks at a time, so the base never moves. The host reads and writes block
//    memory directly through keys()/values().
//  - context (Create with a kernels::ExecutionContext): the whole capped arena is allocated once
//    through the context (GPU HBM for a CUDA context) and every block counts as committed from
//    the start. The host never dereferences it: it reaches block memory only through Read,
//    Write, Move and CopyBlock, which are copies on the context's stream, and ReadAsync /
//    WriteAsync, many ranges at once on the pool's copy stream (a second stream of the same
//    device, ordered against the first by events). A CPU context gives a
//    host-memory context arena that takes exactly the GPU's copy path (tests).
// Both behave the same otherwise (ids, reference counts, prefix index, the cap). Running out
// (the cap, or memory) is ResourceExhausted with nothing allocated: expected traffic.
// Thread-safety: thread-safe (one mutex); the pool serialises its own copies on the context, but
// the context must not be used by another thread at the same time (kernels/device.h). Block
// memory is not synchronised: a block's holder writes it, and shared blocks are read-only by
// contract. Ownership: the pool shares ownership of its context and frees the arena before it.
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
#include "kernels/device.h"
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
  // dtype: the element type of the stored keys and values; context: null for a host arena, else
  // the context whose device holds a context arena of max_blocks blocks, allocated here at once
  // (max_blocks must be > 0: InvalidArgument otherwise; ResourceExhausted naming the bytes and
  // the device when the device cannot hold it).
  static absl::StatusOr<std::shared_ptr<BlockPool>> Create(
      int head_dim, int tokens_per_block, long max_blocks = 0,
      kernels::DType dtype = kernels::DType::kF32,
      std::shared_ptr<kernels::ExecutionContext> context = nullptr);
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

  // Whether the arena lives in the context's memory (Create with a context); the context's
  // device (cpu without one), the stream kernels writing the arena run on (Stream{} without
  // one), and the context itself (null without one).
  bool context_arena() const { return context_ != nullptr; }
  kernels::Device device() const { return context_ ? context_->device() : kernels::Device{}; }
  kernels::Stream stream() const { return context_ ? context_->stream() : kernels::Stream{}; }
  kernels::ExecutionContext* context() const { return context_.get(); }

  // Arena addressing: block b's keys at keys_base() + b * block_stride() elements of dtype(),
  // its values at values_base() + b * block_stride(); keys(b) and values(b) are those addresses.
  // On a context arena they are device addresses (for kernels on stream()): the host must not
  // dereference them; use Read/Write/Move/CopyBlock.
  const std::byte* keys_base() const { return base_; }
  const std::byte* values_base() const { return base_ + block_elems_ * element_bytes(); }
  long block_stride() const { return static_cast<long>(2 * block_elems_); }
  std::byte* keys(BlockId id) { return base_ + id * block_bytes(); }
  std::byte* values(BlockId id) { return keys(id) + block_elems_ * element_bytes(); }
  const std::byte* keys(BlockId id) const { return base_ + id * block_bytes(); }
  const std::byte* values(BlockId id) const { return keys(id) + block_elems_ * element_bytes(); }
  // Where the values start inside a block, in bytes (the keys start at 0).
  size_t values_offset() const { return block_elems_ * element_bytes(); }

  // Byte-level block access for both arenas. Offsets are bytes from the start of a block (keys at
  // 0, values at values_offset()); [offset, offset + bytes) must lie inside the block and the ids
  // in [0, capacity()) (OutOfRange otherwise, nothing copied). REQUIRES: the caller holds the
  // blocks it names (for a host arena, that is what makes their memory committed). A host arena
  // copies with memcpy/memmove; a context arena with the context's CopyAsync, in its stream's
  // order after the kernels already enqueued there. Errors of the context's copies (Internal on
  // a device fault) are returned as they are.
  //
  // Copies block src's keys and values over block dst's.
  absl::Status CopyBlock(BlockId dst, BlockId src);
  // Copies `bytes` of block `id` at `offset` into host memory. On a context arena a
  // device-to-host copy followed by Synchronize(): the host buffer is complete on return. Simple
  // and correct, not overlapped: many blocks go out through ReadAsync instead.
  absl::Status Read(BlockId id, size_t offset, void* host_dst, size_t bytes) const;
  // One range ReadAsync copies out (or WriteAsync in): `bytes` of block `id` at `offset`, and
  // the host memory they go to (come from).
  struct HostCopy {
    BlockId id = 0;
    size_t offset = 0;
    void* host = nullptr;
    size_t bytes = 0;
  };
  // Copies every range into host memory without synchronising stream(). On a context arena the
  // copies run on the pool's copy stream (a second stream of the same device, made on first
  // use), after the work enqueued on stream() so far; the returned event completes once all of
  // them have, and kernels enqueued on stream() meanwhile run beside them. The host buffers must
  // stay valid until then (and be pinned, kernels::MemoryKind::kPinnedHost, for the copies to be
  // asynchronous). A host arena copies at once and returns a completed event. Every range is
  // checked as for Read first (OutOfRange: nothing copied). Copying from a block nobody holds
  // any more is the caller's error (its memory may be reused).
  absl::StatusOr<kernels::Event> ReadAsync(std::span<const HostCopy> copies) const
      ABSL_LOCKS_EXCLUDED(copy_mu_);
  // The other way: copies every range from host memory into the blocks on the copy stream, after
  // the work enqueued on stream() so far; work enqueued on stream() afterwards waits for them
  // (on the device: the host does not wait). The host buffers must stay valid until the returned
  // event completes (WaitCopies). A host arena copies at once. Ranges checked as for Write.
  absl::StatusOr<kernels::Event> WriteAsync(std::span<const HostCopy> copies)
      ABSL_LOCKS_EXCLUDED(copy_mu_);
  // Whether the copies before `event` (ReadAsync's or WriteAsync's) have completed; never blocks.
  absl::StatusOr<bool> CopiesDone(const kernels::Event& event) const ABSL_LOCKS_EXCLUDED(copy_mu_);
  // Blocks the host until the copies enqueued so far have completed: it waits for the
  // copy stream only, never for stream().
  absl::Status WaitCopies() const ABSL_LOCKS_EXCLUDED(copy_mu_);
  // Copies `bytes` from host memory into block `id` at `offset`. On a context arena a
  // host-to-device copy followed by Synchronize(), so host_src need only stay valid for the
  // call (and need not be pinned); not overlapped either.
  absl::Status Write(BlockId id, size_t offset, const void* host_src, size_t bytes);
  // Copies `bytes` inside the arena, from block src at src_offset to block dst at dst_offset
  // (compaction moves rows this way). The ranges must not overlap (InvalidArgument otherwise,
  // on both arenas). On a context arena a device-to-device copy left in flight on the stream:
  // later copies and kernels on the stream see it.
  absl::Status Move(BlockId dst, size_t dst_offset, BlockId src, size_t src_offset, size_t bytes);

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

  // A host arena at `base` (reserved_bytes mmapped), or a context arena (`arena` allocated
  // through `context`, whose blocks are all committed at once).
  BlockPool(int head_dim, int tokens_per_block, long max_blocks, long capacity,
            kernels::DType dtype, std::byte* base, size_t reserved_bytes);
  BlockPool(int head_dim, int tokens_per_block, long max_blocks, long capacity,
            kernels::DType dtype, std::shared_ptr<kernels::ExecutionContext> context,
            kernels::DeviceMemory arena);
  // OutOfRange unless the ids are in [0, capacity) and [offset, offset + bytes) inside a block.
  absl::Status CheckRange(BlockId id, size_t offset, size_t bytes) const;
  // ReadAsync (kDeviceToHost) and WriteAsync (kHostToDevice).
  absl::StatusOr<kernels::Event> CopyRanges(std::span<const HostCopy> copies,
                                            kernels::CopyKind kind) const
      ABSL_LOCKS_EXCLUDED(copy_mu_);
  // The context's CopyAsync, followed by Synchronize() when `wait`. REQUIRES: a context arena.
  absl::Status ContextCopy(void* dst, const void* src, size_t bytes, kernels::CopyKind kind,
                           bool wait) const ABSL_LOCKS_EXCLUDED(copy_mu_);
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
  // Declared before arena_: the arena is freed through the context, before it.
  const std::shared_ptr<kernels::ExecutionContext> context_;
  kernels::DeviceMemory arena_;  // a context arena; empty for a host arena
  std::byte* const base_;
  const size_t reserved_bytes_;  // a host arena's mmapped bytes; 0 for a context arena
  mutable Mutex copy_mu_;        // serialises the pool's use of context_
  // ReadAsync's stream (a context arena's; made on first use). Declared after arena_, so it is
  // destroyed first (the destructor waits for its copies before).
  mutable std::unique_ptr<kernels::ExecutionContext> copy_context_ ABSL_GUARDED_BY(copy_mu_);
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
