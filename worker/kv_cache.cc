// File: worker/kv_cache.cc
// The KV block pool, and KvCache's block tables, slot bookkeeping and compaction.
#include "worker/kv_cache.h"

#include <algorithm>
#include <cstring>
#include <new>

#include "absl/strings/str_cat.h"
#include "common/check.h"

namespace dapq::worker {

absl::StatusOr<std::shared_ptr<KvBlockPool>> KvBlockPool::Create(int head_dim, int tokens_per_block,
                                                                 long max_blocks) {
  if (head_dim <= 0) return absl::InvalidArgumentError(absl::StrCat("head_dim=", head_dim));
  if (tokens_per_block <= 0 || (tokens_per_block & (tokens_per_block - 1)) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("kv pool: tokens_per_block=", tokens_per_block, " must be a power of two"));
  }
  if (max_blocks < 0 || max_blocks > INT32_MAX) {
    return absl::InvalidArgumentError(absl::StrCat("kv pool: max_blocks=", max_blocks));
  }
  return std::shared_ptr<KvBlockPool>(new KvBlockPool(head_dim, tokens_per_block, max_blocks));
}

KvBlockPool::KvBlockPool(int head_dim, int tokens_per_block, long max_blocks)
    : head_dim_(head_dim),
      tokens_per_block_(tokens_per_block),
      max_blocks_(max_blocks),
      block_elems_(static_cast<size_t>(tokens_per_block) * head_dim) {}

long KvBlockPool::blocks_in_use() const {
  MutexLock lock(&mu_);
  return in_use_;
}

long KvBlockPool::blocks_allocated() const {
  MutexLock lock(&mu_);
  return static_cast<long>(chunks_.size()) * kBlocksPerChunk;
}

absl::Status KvBlockPool::Allocate(int count, std::vector<Block>& out) {
  if (count <= 0) return absl::OkStatus();
  MutexLock lock(&mu_);
  if (max_blocks_ > 0 && in_use_ + count > max_blocks_) {
    return absl::ResourceExhaustedError(absl::StrCat("kv pool: ", count, " blocks requested, ",
                                                     max_blocks_ - in_use_, " of ", max_blocks_,
                                                     " free"));
  }
  const size_t chunk_elems = 2 * block_elems_ * kBlocksPerChunk;
  while (static_cast<long>(free_.size()) < count) {
    if (static_cast<long>(chunks_.size() + 1) * kBlocksPerChunk > INT32_MAX) {
      return absl::ResourceExhaustedError("kv pool: block ids exhausted");
    }
    std::unique_ptr<float[]> chunk(new (std::nothrow) float[chunk_elems]());
    if (chunk == nullptr) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "kv pool: cannot allocate ", chunk_elems * sizeof(float), " bytes for more blocks"));
    }
    const int32_t first = static_cast<int32_t>(chunks_.size()) * kBlocksPerChunk;
    chunks_.push_back(std::move(chunk));
    // Highest id first so that blocks are handed out in ascending order.
    for (int i = kBlocksPerChunk - 1; i >= 0; --i) free_.push_back(first + i);
  }
  for (int i = 0; i < count; ++i) {
    const int32_t id = free_.back();
    free_.pop_back();
    float* chunk = chunks_[id / kBlocksPerChunk].get();
    const size_t offset = static_cast<size_t>(id % kBlocksPerChunk) * block_elems_;
    out.push_back({id, chunk + offset, chunk + kBlocksPerChunk * block_elems_ + offset});
  }
  in_use_ += count;
  return absl::OkStatus();
}

void KvBlockPool::Free(std::span<const int32_t> ids) {
  if (ids.empty()) return;
  MutexLock lock(&mu_);
  // In reverse, so that the blocks are handed out again in their old order.
  for (auto it = ids.rbegin(); it != ids.rend(); ++it) {
    DAPQ_DCHECK(*it >= 0 && *it < static_cast<long>(chunks_.size()) * kBlocksPerChunk);
    free_.push_back(*it);
  }
  in_use_ -= static_cast<long>(ids.size());
}

KvCache::KvCache(int n_layers, int kv_heads, int head_dim, std::shared_ptr<KvBlockPool> pool)
    : n_layers_(n_layers),
      kv_heads_(kv_heads),
      head_dim_(head_dim),
      tokens_per_block_(pool->tokens_per_block()),
      pool_(std::move(pool)),
      lengths_(static_cast<size_t>(n_layers) * kv_heads, 0),
      positions_(lengths_.size()),
      block_ids_(lengths_.size()),
      k_blocks_(lengths_.size()),
      v_blocks_(lengths_.size()) {
  DAPQ_CHECK(pool_->head_dim() == head_dim)
      << "kv cache: pool head_dim " << pool_->head_dim() << " != " << head_dim;
}

KvCache::KvCache(int n_layers, int kv_heads, int head_dim)
    : KvCache(n_layers, kv_heads, head_dim, *KvBlockPool::Create(head_dim, 16)) {}

KvCache::~KvCache() { ReleaseAll(); }

KvCache::KvCache(KvCache&& other) noexcept
    : n_layers_(other.n_layers_),
      kv_heads_(other.kv_heads_),
      head_dim_(other.head_dim_),
      tokens_per_block_(other.tokens_per_block_),
      pool_(std::move(other.pool_)),
      lengths_(std::move(other.lengths_)),
      positions_(std::move(other.positions_)),
      block_ids_(std::move(other.block_ids_)),
      k_blocks_(std::move(other.k_blocks_)),
      v_blocks_(std::move(other.v_blocks_)) {
  other.block_ids_.clear();
}

KvCache& KvCache::operator=(KvCache&& other) noexcept {
  if (this == &other) return *this;
  ReleaseAll();
  n_layers_ = other.n_layers_;
  kv_heads_ = other.kv_heads_;
  head_dim_ = other.head_dim_;
  tokens_per_block_ = other.tokens_per_block_;
  pool_ = std::move(other.pool_);
  lengths_ = std::move(other.lengths_);
  positions_ = std::move(other.positions_);
  block_ids_ = std::move(other.block_ids_);
  k_blocks_ = std::move(other.k_blocks_);
  v_blocks_ = std::move(other.v_blocks_);
  other.block_ids_.clear();
  return *this;
}

absl::StatusOr<KvCache> KvCache::Clone() const {
  KvCache copy(n_layers_, kv_heads_, head_dim_, pool_);
  for (int l = 0; l < n_layers_; ++l) {
    for (int h = 0; h < kv_heads_; ++h) {
      const int n = length(l, h);
      std::vector<float> k(static_cast<size_t>(n) * head_dim_), v(k.size());
      Gather(l, h, 0, n, k.data(), v.data());
      absl::Status s = copy.AppendSlots(l, h, positions(l, h), k.data(), v.data());
      if (!s.ok()) return s;
    }
  }
  return copy;
}

namespace {
KvCache CloneOrDie(const KvCache& cache) {
  absl::StatusOr<KvCache> copy = cache.Clone();
  DAPQ_CHECK(copy.ok()) << copy.status();
  return *std::move(copy);
}
}  // namespace

KvCache::KvCache(const KvCache& other) : KvCache(CloneOrDie(other)) {}

KvCache& KvCache::operator=(const KvCache& other) {
  if (this != &other) *this = CloneOrDie(other);
  return *this;
}

void KvCache::ReleaseAll() {
  if (pool_ == nullptr) return;
  for (size_t slab = 0; slab < block_ids_.size(); ++slab) Shrink(static_cast<long>(slab), 0);
}

void KvCache::Shrink(long slab, int slots) {
  const size_t keep = (static_cast<size_t>(slots) + tokens_per_block_ - 1) / tokens_per_block_;
  std::vector<int32_t>& ids = block_ids_[slab];
  if (ids.size() <= keep) return;
  pool_->Free(std::span<const int32_t>(ids).subspan(keep));
  ids.resize(keep);
  k_blocks_[slab].resize(keep);
  v_blocks_[slab].resize(keep);
}

int KvCache::max_length() const {
  return lengths_.empty() ? 0 : *std::max_element(lengths_.begin(), lengths_.end());
}

long KvCache::total_slots() const {
  long total = 0;
  for (int32_t l : lengths_) total += l;
  return total;
}

std::span<const int32_t> KvCache::positions(int layer, int head) const {
  return positions_[Slab(layer, head)];
}

size_t KvCache::bytes() const {
  size_t blocks = 0;
  for (const auto& ids : block_ids_) blocks += ids.size();
  return blocks * pool_->block_bytes();
}

absl::Status KvCache::ReserveAppend(int count) {
  if (count < 0) return absl::InvalidArgumentError(absl::StrCat("kv cache: reserve ", count));
  const long tpb = tokens_per_block_;
  int needed = 0;
  std::vector<int> per_slab(lengths_.size());
  for (size_t slab = 0; slab < lengths_.size(); ++slab) {
    const long want = (lengths_[slab] + count + tpb - 1) / tpb;
    per_slab[slab] = static_cast<int>(std::max<long>(0, want - block_ids_[slab].size()));
    needed += per_slab[slab];
  }
  if (needed == 0) return absl::OkStatus();
  std::vector<KvBlockPool::Block> blocks;
  blocks.reserve(needed);
  absl::Status s = pool_->Allocate(needed, blocks);
  if (!s.ok()) {
    return absl::ResourceExhaustedError(
        absl::StrCat("kv cache: no room for ", count, " more slots: ", s.message()));
  }
  size_t next = 0;
  for (size_t slab = 0; slab < lengths_.size(); ++slab) {
    for (int i = 0; i < per_slab[slab]; ++i, ++next) {
      block_ids_[slab].push_back(blocks[next].id);
      k_blocks_[slab].push_back(blocks[next].k);
      v_blocks_[slab].push_back(blocks[next].v);
    }
  }
  return absl::OkStatus();
}

KvBlockTable KvCache::table(int layer, int head) const {
  const long slab = Slab(layer, head);
  KvBlockTable t;
  t.k_blocks = k_blocks_[slab].data();
  t.v_blocks = v_blocks_[slab].data();
  t.tokens_per_block = tokens_per_block_;
  t.length = lengths_[slab];
  return t;
}

void KvCache::Gather(int layer, int head, int begin, int count, float* k, float* v) const {
  const long slab = Slab(layer, head);
  DAPQ_DCHECK(begin >= 0 &&
              begin + count <= static_cast<long>(k_blocks_[slab].size()) * tokens_per_block_);
  const int tpb = tokens_per_block_;
  const long d = head_dim_;
  for (int s = begin; s < begin + count;) {
    const int in_block = s % tpb;
    const int n = std::min(tpb - in_block, begin + count - s);
    const long off = static_cast<long>(s - begin) * d;
    if (k != nullptr) std::copy_n(k_blocks_[slab][s / tpb] + in_block * d, n * d, k + off);
    if (v != nullptr) std::copy_n(v_blocks_[slab][s / tpb] + in_block * d, n * d, v + off);
    s += n;
  }
}

void KvCache::GatherLayer(int layer, int n, std::vector<float>* k, std::vector<float>* v) const {
  const size_t stride = static_cast<size_t>(n) * head_dim_;
  if (k != nullptr) k->resize(stride * kv_heads_);
  if (v != nullptr) v->resize(stride * kv_heads_);
  for (int h = 0; h < kv_heads_; ++h) {
    Gather(layer, h, 0, n, k != nullptr ? k->data() + h * stride : nullptr,
           v != nullptr ? v->data() + h * stride : nullptr);
  }
}

void KvCache::Commit(const int32_t* positions, int count) {
  for (size_t slab = 0; slab < lengths_.size(); ++slab) {
    DAPQ_DCHECK(static_cast<long>(block_ids_[slab].size()) * tokens_per_block_ >=
                lengths_[slab] + count);
    positions_[slab].insert(positions_[slab].end(), positions, positions + count);
    lengths_[slab] += count;
  }
}

absl::Status KvCache::AppendSlots(int layer, int head, std::span<const int32_t> positions,
                                  const float* k, const float* v) {
  if (layer < 0 || layer >= n_layers_ || head < 0 || head >= kv_heads_) {
    return absl::OutOfRangeError(absl::StrCat("kv cache: slab (", layer, ", ", head, ") outside ",
                                              n_layers_, " x ", kv_heads_));
  }
  const long slab = Slab(layer, head);
  const int count = static_cast<int>(positions.size());
  const long tpb = tokens_per_block_;
  const long want = (lengths_[slab] + count + tpb - 1) / tpb;
  const int more = static_cast<int>(std::max<long>(0, want - block_ids_[slab].size()));
  if (more > 0) {
    std::vector<KvBlockPool::Block> blocks;
    absl::Status s = pool_->Allocate(more, blocks);
    if (!s.ok()) {
      return absl::ResourceExhaustedError(
          absl::StrCat("kv cache: no room to restore ", count, " slots: ", s.message()));
    }
    for (const KvBlockPool::Block& b : blocks) {
      block_ids_[slab].push_back(b.id);
      k_blocks_[slab].push_back(b.k);
      v_blocks_[slab].push_back(b.v);
    }
  }
  const int start = lengths_[slab];
  for (int i = 0; i < count; ++i) {
    std::memcpy(key_slot(layer, head, start + i), k + static_cast<long>(i) * head_dim_,
                head_dim_ * sizeof(float));
    std::memcpy(value_slot(layer, head, start + i), v + static_cast<long>(i) * head_dim_,
                head_dim_ * sizeof(float));
  }
  positions_[slab].insert(positions_[slab].end(), positions.begin(), positions.end());
  lengths_[slab] += count;
  return absl::OkStatus();
}

absl::Status KvCache::Keep(int layer, int head, std::span<const int32_t> slots) {
  const long slab = Slab(layer, head);
  const int len = lengths_[slab];
  for (size_t i = 0; i < slots.size(); ++i) {
    if (slots[i] < 0 || slots[i] >= len || (i > 0 && slots[i] <= slots[i - 1])) {
      return absl::InvalidArgumentError(
          absl::StrCat("kv cache: keep-set of layer ", layer, " head ", head,
                       " must be ascending slots in [0, ", len, "); got ", slots[i], " at ", i));
    }
  }
  std::vector<int32_t>& pos = positions_[slab];
  for (size_t i = 0; i < slots.size(); ++i) {
    const int src = slots[i];
    if (src == static_cast<int>(i)) continue;
    // src > i: moving forward never overwrites a slot still to be read.
    std::memmove(key_slot(layer, head, static_cast<int>(i)), key_slot(layer, head, src),
                 head_dim_ * sizeof(float));
    std::memmove(value_slot(layer, head, static_cast<int>(i)), value_slot(layer, head, src),
                 head_dim_ * sizeof(float));
    pos[i] = pos[src];
  }
  pos.resize(slots.size());
  lengths_[slab] = static_cast<int32_t>(slots.size());
  Shrink(slab, lengths_[slab]);
  return absl::OkStatus();
}

absl::Status KvCache::DropLast(int count) {
  for (int32_t l : lengths_) {
    if (count < 0 || count > l) {
      return absl::InvalidArgumentError(
          absl::StrCat("kv cache: cannot drop ", count, " slots from a slab of ", l));
    }
  }
  for (size_t slab = 0; slab < lengths_.size(); ++slab) {
    lengths_[slab] -= count;
    positions_[slab].resize(lengths_[slab]);
    Shrink(static_cast<long>(slab), lengths_[slab]);
  }
  return absl::OkStatus();
}

void KvCache::Clear() {
  std::fill(lengths_.begin(), lengths_.end(), 0);
  for (auto& p : positions_) p.clear();
  ReleaseAll();
}

}  // namespace dapq::worker
