// File: kvstore/block_manager.cc
// Free list, refcounts and block tables.
#include "kvstore/block_manager.h"

#include "absl/strings/str_cat.h"

namespace dapq::kvstore {
namespace {
int BlocksFor(int tokens, int per_block) { return (tokens + per_block - 1) / per_block; }
}  // namespace

absl::Status BlockManagerOptions::Validate() const {
  if (num_blocks <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("kvstore: num_blocks=", num_blocks, " must be > 0"));
  }
  if (tokens_per_block <= 0 || (tokens_per_block & (tokens_per_block - 1)) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("kvstore: tokens_per_block=", tokens_per_block, " must be a power of two"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<BlockManager>> BlockManager::Create(const BlockManagerOptions& o) {
  absl::Status s = o.Validate();
  if (!s.ok()) return s;
  return std::unique_ptr<BlockManager>(new BlockManager(o));
}

BlockManager::BlockManager(const BlockManagerOptions& options)
    : options_(options), refcount_(options.num_blocks, 0) {
  free_.reserve(options.num_blocks);
  for (BlockId b = options.num_blocks - 1; b >= 0; --b) free_.push_back(b);  // pop gives 0 first
}

int BlockManager::NumFree() const {
  MutexLock lock(&mu_);
  return static_cast<int>(free_.size());
}

int BlockManager::RefCount(BlockId block) const {
  MutexLock lock(&mu_);
  return block >= 0 && block < options_.num_blocks ? refcount_[block] : 0;
}

int BlockManager::NumSequences() const {
  MutexLock lock(&mu_);
  return static_cast<int>(sequences_.size());
}

absl::Status BlockManager::AddSequence(SeqId seq, int n_layers, int kv_heads, TableLayout layout) {
  if (n_layers <= 0 || kv_heads <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("kvstore: n_layers=", n_layers, " kv_heads=", kv_heads, " must be > 0"));
  }
  MutexLock lock(&mu_);
  if (sequences_.count(seq)) {
    return absl::AlreadyExistsError(absl::StrCat("kvstore: sequence ", seq, " already exists"));
  }
  Sequence s;
  s.n_layers = n_layers;
  s.heads = layout == TableLayout::kShared ? 1 : kv_heads;
  s.layout = layout;
  s.tables.resize(static_cast<size_t>(n_layers) * s.heads);
  sequences_.emplace(seq, std::move(s));
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::pair<BlockId, BlockId>>> BlockManager::Append(SeqId seq,
                                                                              int count) {
  if (count < 0) return absl::InvalidArgumentError(absl::StrCat("kvstore: append count=", count));
  MutexLock lock(&mu_);
  auto it = sequences_.find(seq);
  if (it == sequences_.end()) {
    return absl::NotFoundError(absl::StrCat("kvstore: unknown sequence ", seq));
  }
  const int tpb = options_.tokens_per_block;
  // Count first, so a failure changes nothing.
  long needed = 0;
  for (const BlockTable& t : it->second.tables) {
    needed += BlocksFor(t.num_tokens + count, tpb) - static_cast<long>(t.blocks.size());
    const bool partial_tail = t.num_tokens % tpb != 0 && count > 0;
    if (partial_tail && refcount_[t.blocks.back()] > 1) ++needed;  // copy-on-write
  }
  if (needed > static_cast<long>(free_.size())) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "kvstore: ", needed, " blocks needed, ", free_.size(), " free of ", options_.num_blocks));
  }
  std::vector<std::pair<BlockId, BlockId>> copies;
  auto take = [this] {
    const BlockId b = free_.back();
    free_.pop_back();
    refcount_[b] = 1;
    return b;
  };
  for (BlockTable& t : it->second.tables) {
    if (t.num_tokens % tpb != 0 && count > 0 && refcount_[t.blocks.back()] > 1) {
      const BlockId fresh = take();
      copies.emplace_back(t.blocks.back(), fresh);
      --refcount_[t.blocks.back()];
      t.blocks.back() = fresh;
    }
    t.num_tokens += count;
    while (static_cast<int>(t.blocks.size()) < BlocksFor(t.num_tokens, tpb))
      t.blocks.push_back(take());
  }
  return copies;
}

absl::StatusOr<BlockTable*> BlockManager::FindTable(SeqId seq, int layer, int head) {
  auto it = sequences_.find(seq);
  if (it == sequences_.end()) {
    return absl::NotFoundError(absl::StrCat("kvstore: unknown sequence ", seq));
  }
  Sequence& s = it->second;
  if (s.layout == TableLayout::kShared) head = 0;
  if (layer < 0 || layer >= s.n_layers || head < 0 || head >= s.heads) {
    return absl::OutOfRangeError(absl::StrCat("kvstore: table (layer ", layer, ", head ", head,
                                              ") outside ", s.n_layers, " x ", s.heads));
  }
  return &s.tables[static_cast<size_t>(layer) * s.heads + head];
}

absl::Status BlockManager::Truncate(SeqId seq, int layer, int head, int num_tokens) {
  MutexLock lock(&mu_);
  absl::StatusOr<BlockTable*> t = FindTable(seq, layer, head);
  if (!t.ok()) return t.status();
  BlockTable& table = **t;
  if (num_tokens < 0 || num_tokens > table.num_tokens) {
    return absl::InvalidArgumentError(absl::StrCat("kvstore: truncate to ", num_tokens,
                                                   " tokens, table holds ", table.num_tokens));
  }
  const int keep = BlocksFor(num_tokens, options_.tokens_per_block);
  while (static_cast<int>(table.blocks.size()) > keep) {
    Release(table.blocks.back());
    table.blocks.pop_back();
  }
  table.num_tokens = num_tokens;
  return absl::OkStatus();
}

absl::Status BlockManager::Fork(SeqId src, SeqId dst) {
  MutexLock lock(&mu_);
  auto it = sequences_.find(src);
  if (it == sequences_.end()) {
    return absl::NotFoundError(absl::StrCat("kvstore: unknown sequence ", src));
  }
  if (sequences_.count(dst)) {
    return absl::AlreadyExistsError(absl::StrCat("kvstore: sequence ", dst, " already exists"));
  }
  Sequence copy = it->second;
  for (const BlockTable& t : copy.tables) {
    for (BlockId b : t.blocks) ++refcount_[b];
  }
  sequences_.emplace(dst, std::move(copy));
  return absl::OkStatus();
}

absl::Status BlockManager::Free(SeqId seq) {
  MutexLock lock(&mu_);
  auto it = sequences_.find(seq);
  if (it == sequences_.end()) {
    return absl::NotFoundError(absl::StrCat("kvstore: unknown sequence ", seq));
  }
  for (const BlockTable& t : it->second.tables) {
    for (BlockId b : t.blocks) Release(b);
  }
  sequences_.erase(it);
  return absl::OkStatus();
}

void BlockManager::Release(BlockId block) {
  if (--refcount_[block] == 0) free_.push_back(block);
}

absl::StatusOr<BlockTable> BlockManager::Table(SeqId seq, int layer, int head) const {
  MutexLock lock(&mu_);
  absl::StatusOr<BlockTable*> t = const_cast<BlockManager*>(this)->FindTable(seq, layer, head);
  if (!t.ok()) return t.status();
  return **t;
}

}  // namespace dapq::kvstore
