// File: kvstore/block_manager.h
// The paged KV block pool's bookkeeping (ARCHITECTURE.md §5), plain CPU code: a fixed number of
// blocks of `tokens_per_block` tokens (a power of two); per sequence a block table for every
// (layer, KV head) slot list — one table per layer in `shared` storage, one per (layer, head)
// in `per_head` storage (ragged lengths after compression); reference counts so sequences can
// share blocks (Fork: copy-on-write prefixes). Running out of blocks is expected traffic:
// Append returns ResourceExhausted and changes nothing.
// Thread-safety: thread-safe (one mutex); Table() returns a copy.
#ifndef DAPQ_KVSTORE_BLOCK_MANAGER_H_
#define DAPQ_KVSTORE_BLOCK_MANAGER_H_

#include <cstdint>
#include <map>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "common/mutex.h"

namespace dapq::kvstore {

using BlockId = int32_t;
using SeqId = int64_t;

enum class TableLayout { kShared = 0, kPerHead = 1 };

struct BlockManagerOptions {
  int num_blocks = 0;
  int tokens_per_block = 16;  // power of two
  absl::Status Validate() const;
};

struct BlockTable {
  std::vector<BlockId> blocks;
  int num_tokens = 0;
};

class BlockManager {
 public:
  static absl::StatusOr<std::unique_ptr<BlockManager>> Create(const BlockManagerOptions& options);

  int num_blocks() const { return options_.num_blocks; }
  int tokens_per_block() const { return options_.tokens_per_block; }
  int NumFree() const ABSL_LOCKS_EXCLUDED(mu_);
  int RefCount(BlockId block) const ABSL_LOCKS_EXCLUDED(mu_);

  // Registers a sequence with n_layers x (1 or kv_heads) empty tables. AlreadyExists if known.
  absl::Status AddSequence(SeqId seq, int n_layers, int kv_heads, TableLayout layout)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Appends `count` tokens to every table of the sequence, allocating blocks as needed. A table
  // whose last block is shared (refcount > 1) gets a private copy first (copy-on-write; the
  // returned list names (source, destination) pairs the caller must copy).
  // ResourceExhausted (nothing changed) when the free blocks do not suffice.
  absl::StatusOr<std::vector<std::pair<BlockId, BlockId>>> Append(SeqId seq, int count)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Shrinks one table to `num_tokens` tokens (compaction moved the kept tokens to the front),
  // releasing the blocks past the end.
  absl::Status Truncate(SeqId seq, int layer, int head, int num_tokens) ABSL_LOCKS_EXCLUDED(mu_);
  // New sequence `dst` sharing every block of `src` (refcounts incremented).
  absl::Status Fork(SeqId src, SeqId dst) ABSL_LOCKS_EXCLUDED(mu_);
  // Releases the sequence's references; blocks reaching refcount 0 return to the free list.
  absl::Status Free(SeqId seq) ABSL_LOCKS_EXCLUDED(mu_);

  // `head` is ignored in shared layout. NotFound for an unknown sequence, OutOfRange indices.
  absl::StatusOr<BlockTable> Table(SeqId seq, int layer, int head) const ABSL_LOCKS_EXCLUDED(mu_);
  int NumSequences() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  struct Sequence {
    int n_layers = 0, heads = 0;  // heads = 1 in shared layout
    TableLayout layout = TableLayout::kShared;
    std::vector<BlockTable> tables;  // [layer * heads + head]
  };
  explicit BlockManager(const BlockManagerOptions& options);
  absl::StatusOr<BlockTable*> FindTable(SeqId seq, int layer, int head)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Release(BlockId block) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const BlockManagerOptions options_;
  mutable Mutex mu_;
  std::vector<BlockId> free_ ABSL_GUARDED_BY(mu_);
  std::vector<int> refcount_ ABSL_GUARDED_BY(mu_);
  std::map<SeqId, Sequence> sequences_ ABSL_GUARDED_BY(mu_);
};

}  // namespace dapq::kvstore

#endif  // DAPQ_KVSTORE_BLOCK_MANAGER_H_
