// File: worker/kv_cache.cc
// KvCache growth, slot bookkeeping and compaction.
#include "worker/kv_cache.h"

#include <algorithm>
#include <cstring>
#include <new>

#include "absl/strings/str_cat.h"

namespace dapq::worker {

KvCache::KvCache(int n_layers, int kv_heads, int head_dim)
    : n_layers_(n_layers),
      kv_heads_(kv_heads),
      head_dim_(head_dim),
      lengths_(static_cast<size_t>(n_layers) * kv_heads, 0),
      positions_(static_cast<size_t>(n_layers) * kv_heads) {}

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

absl::Status KvCache::Reserve(int slots) {
  if (slots <= capacity_) return absl::OkStatus();
  const int new_capacity = std::max(slots, std::max(16, capacity_ + capacity_ / 2));
  const size_t total = static_cast<size_t>(n_layers_) * kv_heads_ * new_capacity * head_dim_;
  std::vector<float> k, v;
  try {
    k.resize(total);
    v.resize(total);
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(absl::StrCat("kv cache: cannot allocate ",
                                                     2 * total * sizeof(float), " bytes for ",
                                                     new_capacity, " slots"));
  }
  const long old_stride = head_stride();
  const long new_stride = static_cast<long>(new_capacity) * head_dim_;
  for (long slab = 0; slab < static_cast<long>(lengths_.size()); ++slab) {
    const size_t used = static_cast<size_t>(lengths_[slab]) * head_dim_ * sizeof(float);
    if (used == 0) continue;
    std::memcpy(k.data() + slab * new_stride, k_.data() + slab * old_stride, used);
    std::memcpy(v.data() + slab * new_stride, v_.data() + slab * old_stride, used);
  }
  k_.swap(k);
  v_.swap(v);
  capacity_ = new_capacity;
  return absl::OkStatus();
}

void KvCache::Commit(const int32_t* positions, int count) {
  for (size_t slab = 0; slab < lengths_.size(); ++slab) {
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
  absl::Status s = Reserve(lengths_[slab] + count);
  if (!s.ok()) return s;
  const size_t bytes = static_cast<size_t>(count) * head_dim_ * sizeof(float);
  std::memcpy(keys(layer, head) + static_cast<long>(lengths_[slab]) * head_dim_, k, bytes);
  std::memcpy(values(layer, head) + static_cast<long>(lengths_[slab]) * head_dim_, v, bytes);
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
  float* k = keys(layer, head);
  float* v = values(layer, head);
  std::vector<int32_t>& pos = positions_[slab];
  for (size_t i = 0; i < slots.size(); ++i) {
    const long src = slots[i];
    if (src == static_cast<long>(i)) continue;
    std::memmove(k + i * head_dim_, k + src * head_dim_, head_dim_ * sizeof(float));
    std::memmove(v + i * head_dim_, v + src * head_dim_, head_dim_ * sizeof(float));
    pos[i] = pos[src];
  }
  pos.resize(slots.size());
  lengths_[slab] = static_cast<int32_t>(slots.size());
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
  }
  return absl::OkStatus();
}

void KvCache::Clear() {
  std::fill(lengths_.begin(), lengths_.end(), 0);
  for (auto& p : positions_) p.clear();
}

}  // namespace dapq::worker
