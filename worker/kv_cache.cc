// File: worker/kv_cache.cc
// KvCache's block tables, slot bookkeeping, copy-on-write and compaction.
#include "worker/kv_cache.h"

#include <algorithm>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "common/check.h"
#include "common/status_macros.h"
#include "kernels/convert.h"
#include "kernels/kv_append.h"
#include "kernels/kv_compact.h"

namespace dapq::worker {

KvCache::KvCache(int n_layers, int kv_heads, int head_dim, std::shared_ptr<kvstore::BlockPool> pool)
    : n_layers_(n_layers),
      kv_heads_(kv_heads),
      head_dim_(head_dim),
      tokens_per_block_(pool->tokens_per_block()),
      pool_(std::move(pool)),
      lengths_(static_cast<size_t>(n_layers) * kv_heads, 0),
      unchanged_(lengths_.size(), 0),
      positions_(lengths_.size()),
      block_ids_(lengths_.size()) {
  DAPQ_CHECK(pool_->head_dim() == head_dim)
      << "kv cache: pool head_dim " << pool_->head_dim() << " != " << head_dim;
}

KvCache::KvCache(int n_layers, int kv_heads, int head_dim)
    : KvCache(n_layers, kv_heads, head_dim, *kvstore::BlockPool::Create(head_dim, 16)) {}

KvCache::~KvCache() { ReleaseAll(); }

KvCache::KvCache(KvCache&& other) noexcept
    : n_layers_(other.n_layers_),
      kv_heads_(other.kv_heads_),
      head_dim_(other.head_dim_),
      tokens_per_block_(other.tokens_per_block_),
      pool_(std::move(other.pool_)),
      lengths_(std::move(other.lengths_)),
      unchanged_(std::move(other.unchanged_)),
      positions_(std::move(other.positions_)),
      block_ids_(std::move(other.block_ids_)) {
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
  unchanged_ = std::move(other.unchanged_);
  positions_ = std::move(other.positions_);
  block_ids_ = std::move(other.block_ids_);
  other.block_ids_.clear();
  return *this;
}

KvCache KvCache::Clone() const {
  KvCache copy(n_layers_, kv_heads_, head_dim_, pool_);
  copy.lengths_ = lengths_;
  copy.positions_ = positions_;
  copy.block_ids_ = block_ids_;
  for (const auto& ids : block_ids_) pool_->Retain(ids);
  return copy;
}

KvCache::KvCache(const KvCache& other) : KvCache(other.Clone()) {}

KvCache& KvCache::operator=(const KvCache& other) {
  if (this != &other) *this = other.Clone();
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
  pool_->Release(std::span<const kvstore::BlockId>(ids).subspan(keep));
  ids.resize(keep);
}

absl::Status KvCache::ReplaceWithCopy(kvstore::BlockId& id, kvstore::BlockId copy) {
  // CopyBlock serves both arenas (a memmove on the host one).
  if (absl::Status s = pool_->CopyBlock(copy, id); !s.ok()) {
    pool_->Release(std::span<const kvstore::BlockId>(&copy, 1));
    return s;
  }
  const kvstore::BlockId shared = id;
  id = copy;
  pool_->Release(std::span<const kvstore::BlockId>(&shared, 1));
  return absl::OkStatus();
}

absl::Status KvCache::MakeWritable(long slab, int index) {
  kvstore::BlockId& id = block_ids_[slab][index];
  if (pool_->RefCount(id) <= 1) return absl::OkStatus();
  std::vector<kvstore::BlockId> fresh;
  absl::Status s = pool_->Allocate(1, fresh);
  if (!s.ok()) {
    return absl::ResourceExhaustedError(
        absl::StrCat("kv cache: no block to copy a shared block into: ", s.message()));
  }
  return ReplaceWithCopy(id, fresh[0]);
}

absl::Status KvCache::ExtendForAppend(long slab, int count,
                                      std::span<const kvstore::BlockId> blocks, size_t& next) {
  const long tpb = tokens_per_block_;
  std::vector<kvstore::BlockId>& ids = block_ids_[slab];
  const long want = (lengths_[slab] + count + tpb - 1) / tpb;
  for (long b = lengths_[slab] / tpb; b < std::min<long>(want, ids.size()); ++b) {
    if (pool_->RefCount(ids[b]) > 1) DAPQ_RETURN_IF_ERROR(ReplaceWithCopy(ids[b], blocks[next++]));
  }
  while (static_cast<long>(ids.size()) < want) ids.push_back(blocks[next++]);
  return absl::OkStatus();
}

int KvCache::BlocksToAppend(long slab, int count) const {
  if (count <= 0) return 0;
  const long tpb = tokens_per_block_;
  const std::vector<kvstore::BlockId>& ids = block_ids_[slab];
  const long first = lengths_[slab] / tpb;
  const long want = (lengths_[slab] + count + tpb - 1) / tpb;
  int needed = static_cast<int>(std::max<long>(0, want - static_cast<long>(ids.size())));
  for (long b = first; b < std::min<long>(want, ids.size()); ++b) {
    if (pool_->RefCount(ids[b]) > 1) ++needed;
  }
  return needed;
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

long KvCache::BlocksToReserve(int count) const {
  long needed = 0;
  for (size_t slab = 0; slab < lengths_.size(); ++slab) {
    needed += BlocksToAppend(static_cast<long>(slab), count);
  }
  return needed;
}

absl::Status KvCache::ReserveAppend(int count) {
  if (count < 0) return absl::InvalidArgumentError(absl::StrCat("kv cache: reserve ", count));
  const int needed = static_cast<int>(BlocksToReserve(count));
  if (needed == 0) return absl::OkStatus();
  std::vector<kvstore::BlockId> blocks;
  blocks.reserve(needed);
  absl::Status s = pool_->Allocate(needed, blocks);
  if (!s.ok()) {
    return absl::ResourceExhaustedError(
        absl::StrCat("kv cache: no room for ", count, " more slots: ", s.message()));
  }
  size_t next = 0;
  for (size_t slab = 0; slab < lengths_.size(); ++slab) {
    if (absl::Status s = ExtendForAppend(static_cast<long>(slab), count, blocks, next); !s.ok()) {
      pool_->Release(std::span<const kvstore::BlockId>(blocks).subspan(next));
      return s;
    }
  }
  return absl::OkStatus();
}

absl::Status KvCache::WriteSlot(int layer, int head, int slot, const float* k, const float* v) {
  const long slab = Slab(layer, head);
  DAPQ_DCHECK(slot >= 0 && slot < static_cast<long>(block_ids_[slab].size()) * tokens_per_block_);
  const kernels::DType dtype = pool_->dtype();
  unchanged_[slab] = std::min(unchanged_[slab], slot);
  if (pool_->context_arena()) {
    if (absl::Status s = WriteRows(slab, slot, 1, k, v); !s.ok()) {
      return absl::Status(s.code(), absl::StrCat("kv cache: writing slot ", slot, " of layer ",
                                                 layer, " head ", head, ": ", s.message()));
    }
    return absl::OkStatus();
  }
  if (k != nullptr) kernels::ConvertFromFloat(k, dtype, SlotAddress(slab, slot, false), head_dim_);
  if (v != nullptr) kernels::ConvertFromFloat(v, dtype, SlotAddress(slab, slot, true), head_dim_);
  return absl::OkStatus();
}

absl::Status KvCache::WriteRows(long slab, int first, int count, const float* k, const float* v) {
  const int tpb = tokens_per_block_;
  const long d = head_dim_;
  const size_t row_bytes = d * pool_->element_bytes();
  std::vector<std::byte> staging(std::min(count, tpb) * row_bytes);
  for (int s = first; s < first + count;) {
    // A run of slots inside one block is contiguous in the pool.
    const int n = std::min(tpb - s % tpb, first + count - s);
    const long off = static_cast<long>(s - first) * d;
    for (int part = 0; part < 2; ++part) {
      const float* src = part == 0 ? k : v;
      if (src == nullptr) continue;
      kernels::ConvertFromFloat(src + off, pool_->dtype(), staging.data(), n * d);
      const auto [id, offset] = SlotOffset(slab, s, part == 1);
      DAPQ_RETURN_IF_ERROR(pool_->Write(id, offset, staging.data(), n * row_bytes));
    }
    s += n;
  }
  return absl::OkStatus();
}

absl::Status KvCache::AppendRows(int layer, int rows, const float* k, const float* v, int stride,
                                 const int32_t* table, int blocks_per_head, kernels::Stream stream,
                                 const int32_t* first_slots) {
  if (rows == 0) return absl::OkStatus();
  // Appends start at each head's length, never below unchanged(): session saves stay valid.
  kernels::KvAppendParams p;
  p.tokens = rows;
  p.kv_heads = kv_heads_;
  p.head_dim = head_dim_;
  p.k = k;
  p.v = v;
  p.src_stride = stride;
  p.first_slots = first_slots != nullptr ? first_slots : lengths(layer);
  p.block_table = table;
  p.blocks_per_head = blocks_per_head;
  p.tokens_per_block = tokens_per_block_;
  p.kv_dtype = pool_->dtype();
  p.k_pool = pool_->keys(0);
  p.v_pool = pool_->values(0);
  p.block_stride = pool_->block_stride();
  p.pool_blocks = pool_->capacity();
  if (stream.backend == kernels::Backend::kCpu && stream.handle == nullptr &&
      pool_->context_arena()) {
    stream = pool_->stream();  // the default stream: the arena's own
  }
  return kernels::KvAppend(p, stream);
}

absl::Status KvCache::Gather(int layer, int head, int begin, int count, float* k, float* v) const {
  const long slab = Slab(layer, head);
  DAPQ_DCHECK(begin >= 0 &&
              begin + count <= static_cast<long>(block_ids_[slab].size()) * tokens_per_block_);
  if (pool_->context_arena()) {
    if (absl::Status s = GatherRows(slab, begin, count, k, v); !s.ok()) {
      return absl::Status(s.code(),
                          absl::StrCat("kv cache: reading slots [", begin, ", ", begin + count,
                                       ") of layer ", layer, " head ", head, ": ", s.message()));
    }
    return absl::OkStatus();
  }
  const int tpb = tokens_per_block_;
  const long d = head_dim_;
  const kernels::DType dtype = pool_->dtype();
  for (int s = begin; s < begin + count;) {
    // A run of slots inside one block is contiguous in the pool.
    const int n = std::min(tpb - s % tpb, begin + count - s);
    const long off = static_cast<long>(s - begin) * d;
    if (k != nullptr) kernels::ConvertToFloat(dtype, SlotAddress(slab, s, false), k + off, n * d);
    if (v != nullptr) kernels::ConvertToFloat(dtype, SlotAddress(slab, s, true), v + off, n * d);
    s += n;
  }
  return absl::OkStatus();
}

void KvCache::SlotCopies(int layer, int head, int begin, int count, std::byte* k_dst,
                         std::byte* v_dst, std::vector<kvstore::BlockPool::HostCopy>& out) const {
  const long slab = Slab(layer, head);
  const size_t row_bytes = head_dim_ * pool_->element_bytes();
  for (int s = begin; s < begin + count;) {
    const int n = std::min(tokens_per_block_ - s % tokens_per_block_, begin + count - s);
    const size_t off = static_cast<size_t>(s - begin) * row_bytes;
    for (const bool values : {false, true}) {
      const auto [id, offset] = SlotOffset(slab, s, values);
      out.push_back({id, offset, (values ? v_dst : k_dst) + off, n * row_bytes});
    }
    s += n;
  }
}

absl::Status KvCache::GatherRows(long slab, int begin, int count, float* k, float* v) const {
  const int tpb = tokens_per_block_;
  const long d = head_dim_;
  const kernels::DType dtype = pool_->dtype();
  const size_t row_bytes = d * pool_->element_bytes();
  // fp32 rows land in the output directly; 2-byte rows are widened from a host buffer.
  std::vector<std::byte> staging(dtype == kernels::DType::kF32 ? 0
                                                               : std::min(count, tpb) * row_bytes);
  for (int s = begin; s < begin + count;) {
    const int n = std::min(tpb - s % tpb, begin + count - s);
    const long off = static_cast<long>(s - begin) * d;
    for (int part = 0; part < 2; ++part) {
      float* dst = part == 0 ? k : v;
      if (dst == nullptr) continue;
      const auto [id, offset] = SlotOffset(slab, s, part == 1);
      if (dtype == kernels::DType::kF32) {
        DAPQ_RETURN_IF_ERROR(pool_->Read(id, offset, dst + off, n * row_bytes));
      } else {
        DAPQ_RETURN_IF_ERROR(pool_->Read(id, offset, staging.data(), n * row_bytes));
        kernels::ConvertToFloat(dtype, staging.data(), dst + off, n * d);
      }
    }
    s += n;
  }
  return absl::OkStatus();
}

absl::Status KvCache::GatherLayer(int layer, int n, std::vector<float>* k,
                                  std::vector<float>* v) const {
  const size_t stride = static_cast<size_t>(n) * head_dim_;
  if (k != nullptr) k->resize(stride * kv_heads_);
  if (v != nullptr) v->resize(stride * kv_heads_);
  for (int h = 0; h < kv_heads_; ++h) {
    DAPQ_RETURN_IF_ERROR(Gather(layer, h, 0, n, k != nullptr ? k->data() + h * stride : nullptr,
                                v != nullptr ? v->data() + h * stride : nullptr));
  }
  return absl::OkStatus();
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
  return AppendSlotsTo(layer, head, positions, k, v, nullptr, nullptr);
}

absl::Status KvCache::AppendSlotsDeferred(int layer, int head, std::span<const int32_t> positions,
                                          const float* k, const float* v, std::byte* staging,
                                          std::vector<kvstore::BlockPool::HostCopy>& out) {
  return AppendSlotsTo(layer, head, positions, k, v, staging, &out);
}

absl::Status KvCache::WriteDeferred(std::vector<kvstore::BlockPool::HostCopy>& copies) {
  if (copies.empty()) return absl::OkStatus();
  DAPQ_RETURN_IF_ERROR(pool_->WriteAsync(copies).status());
  DAPQ_RETURN_IF_ERROR(pool_->WaitCopies());
  copies.clear();
  return absl::OkStatus();
}

absl::Status KvCache::AppendSlotsTo(int layer, int head, std::span<const int32_t> positions,
                                    const float* k, const float* v, std::byte* staging,
                                    std::vector<kvstore::BlockPool::HostCopy>* out) {
  if (layer < 0 || layer >= n_layers_ || head < 0 || head >= kv_heads_) {
    return absl::OutOfRangeError(absl::StrCat("kv cache: slab (", layer, ", ", head, ") outside ",
                                              n_layers_, " x ", kv_heads_));
  }
  const long slab = Slab(layer, head);
  const int count = static_cast<int>(positions.size());
  std::vector<kvstore::BlockId> blocks;
  if (absl::Status s = pool_->Allocate(BlocksToAppend(slab, count), blocks); !s.ok()) {
    return absl::ResourceExhaustedError(
        absl::StrCat("kv cache: no room to restore ", count, " slots: ", s.message()));
  }
  size_t next = 0;
  if (absl::Status s = ExtendForAppend(slab, count, blocks, next); !s.ok()) {
    pool_->Release(std::span<const kvstore::BlockId>(blocks).subspan(next));
    return s;
  }
  const int start = lengths_[slab];
  if (pool_->context_arena() && out != nullptr) {
    unchanged_[slab] = std::min(unchanged_[slab], start);
    const long d = head_dim_;
    const size_t row_bytes = d * pool_->element_bytes();
    for (int s = start; s < start + count;) {
      const int n = std::min(tokens_per_block_ - s % tokens_per_block_, start + count - s);
      for (const bool values : {false, true}) {
        const long row = s - start;
        std::byte* host = staging + ((values ? count : 0) + row) * row_bytes;
        kernels::ConvertFromFloat((values ? v : k) + row * d, pool_->dtype(), host, n * d);
        const auto [id, offset] = SlotOffset(slab, s, values);
        out->push_back({id, offset, host, n * row_bytes});
      }
      s += n;
    }
  } else if (pool_->context_arena()) {
    unchanged_[slab] = std::min(unchanged_[slab], start);
    DAPQ_RETURN_IF_ERROR(WriteRows(slab, start, count, k, v));
  } else {
    for (int i = 0; i < count; ++i) {
      DAPQ_RETURN_IF_ERROR(WriteSlot(layer, head, start + i, k + static_cast<long>(i) * head_dim_,
                                     v + static_cast<long>(i) * head_dim_));
    }
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
  // Copy-on-write: the blocks this compaction writes into become private first.
  for (size_t i = 0; i < slots.size(); ++i) {
    if (slots[i] == static_cast<int>(i)) continue;
    const int block = static_cast<int>(i) / tokens_per_block_;
    DAPQ_RETURN_IF_ERROR(MakeWritable(slab, block));
    i = static_cast<size_t>(block + 1) * tokens_per_block_ - 1;  // the rest of this block
  }
  DAPQ_RETURN_IF_ERROR(Compact(slab, slots));
  std::vector<int32_t>& pos = positions_[slab];
  for (size_t i = 0; i < slots.size(); ++i) {
    if (slots[i] == static_cast<int>(i)) continue;
    unchanged_[slab] = std::min(unchanged_[slab], static_cast<int>(i));
    pos[i] = pos[slots[i]];
  }
  pos.resize(slots.size());
  lengths_[slab] = static_cast<int32_t>(slots.size());
  unchanged_[slab] = std::min(unchanged_[slab], lengths_[slab]);
  Shrink(slab, lengths_[slab]);
  return absl::OkStatus();
}

absl::Status KvCache::Compact(long slab, std::span<const int32_t> slots) {
  if (slots.empty()) return absl::OkStatus();
  const std::vector<kvstore::BlockId>& ids = block_ids_[slab];
  const int32_t count = static_cast<int32_t>(slots.size());
  kernels::KvCompactParams p;
  p.heads = 1;
  p.head_dim = head_dim_;
  p.keep = slots.data();
  p.keep_stride = count;
  p.counts = &count;
  p.block_table = ids.data();
  p.blocks_per_head = static_cast<int>(ids.size());
  p.tokens_per_block = tokens_per_block_;
  p.kv_dtype = pool_->dtype();
  p.k_pool = pool_->keys(0);
  p.v_pool = pool_->values(0);
  p.block_stride = pool_->block_stride();
  p.pool_blocks = pool_->capacity();
  // A host arena: the CPU kernel moves the rows in place, reading the host arrays above.
  if (!pool_->context_arena()) return kernels::KvCompact(p);
  // A context arena: the keep-set, the table and the count uploaded together into the
  // context's workspace, followed by the kernel's scratch.
  kernels::ExecutionContext& context = *pool_->context();
  std::vector<int32_t> ints(slots.begin(), slots.end());
  ints.insert(ints.end(), ids.begin(), ids.end());
  ints.push_back(count);
  const size_t ints_bytes = (ints.size() * sizeof(int32_t) + 255) / 256 * 256;
  const size_t scratch_bytes = slots.size() * 2 * head_dim_ * pool_->element_bytes();
  DAPQ_ASSIGN_OR_RETURN(void* workspace, context.Workspace(ints_bytes + scratch_bytes));
  auto* device_ints = static_cast<int32_t*>(workspace);
  DAPQ_RETURN_IF_ERROR(context.CopyAsync(device_ints, ints.data(), ints.size() * sizeof(int32_t),
                                         kernels::CopyKind::kHostToDevice));
  p.keep = device_ints;
  p.block_table = device_ints + slots.size();
  p.counts = device_ints + slots.size() + ids.size();
  p.scratch = static_cast<char*>(workspace) + ints_bytes;
  DAPQ_RETURN_IF_ERROR(context.MakeCurrent());  // the launch goes to the pool's device
  DAPQ_RETURN_IF_ERROR(kernels::KvCompact(p, pool_->stream()));
  // `ints` is freed on return: wait for the copy (compaction runs once per request, not per
  // token).
  return context.Synchronize();
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
    unchanged_[slab] = std::min(unchanged_[slab], lengths_[slab]);
    positions_[slab].resize(lengths_[slab]);
    Shrink(static_cast<long>(slab), lengths_[slab]);
  }
  return absl::OkStatus();
}

std::vector<kvstore::BlockId> KvCache::PrefixBlocks(int blocks) const {
  std::vector<kvstore::BlockId> out;
  out.reserve(static_cast<size_t>(blocks) * block_ids_.size());
  for (int b = 0; b < blocks; ++b) {
    for (size_t slab = 0; slab < block_ids_.size(); ++slab) {
      DAPQ_DCHECK(lengths_[slab] >= (b + 1) * tokens_per_block_);
      out.push_back(block_ids_[slab][b]);
    }
  }
  return out;
}

void KvCache::AttachPrefix(std::span<const kvstore::BlockId> ids) {
  const size_t slabs = block_ids_.size();
  DAPQ_CHECK(max_length() == 0 && ids.size() % slabs == 0);
  const int blocks = static_cast<int>(ids.size() / slabs);
  const int slots = blocks * tokens_per_block_;
  ReleaseAll();  // reserved but empty blocks, if any
  for (size_t slab = 0; slab < slabs; ++slab) {
    std::vector<kvstore::BlockId>& table = block_ids_[slab];
    for (int b = 0; b < blocks; ++b) table.push_back(ids[static_cast<size_t>(b) * slabs + slab]);
    positions_[slab].resize(slots);
    std::iota(positions_[slab].begin(), positions_[slab].end(), 0);
    lengths_[slab] = slots;
  }
}

void KvCache::Clear() {
  std::fill(lengths_.begin(), lengths_.end(), 0);
  std::fill(unchanged_.begin(), unchanged_.end(), 0);
  for (auto& p : positions_) p.clear();
  ReleaseAll();
}

}  // namespace dapq::worker
