// File: worker/kv_cache.cc
// KvCache growth and slot bookkeeping.
#include "worker/kv_cache.h"

#include <algorithm>
#include <cstring>
#include <new>

#include "absl/strings/str_cat.h"

namespace dapq::worker {

KvCache::KvCache(int n_layers, int kv_heads, int head_dim)
    : n_layers_(n_layers), kv_heads_(kv_heads), head_dim_(head_dim) {}

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
  const size_t used = static_cast<size_t>(length_) * head_dim_;
  for (long slab = 0; slab < static_cast<long>(n_layers_) * kv_heads_ && used > 0; ++slab) {
    std::memcpy(k.data() + slab * new_stride, k_.data() + slab * old_stride, used * sizeof(float));
    std::memcpy(v.data() + slab * new_stride, v_.data() + slab * old_stride, used * sizeof(float));
  }
  k_.swap(k);
  v_.swap(v);
  capacity_ = new_capacity;
  return absl::OkStatus();
}

void KvCache::Commit(const int32_t* positions, int count) {
  positions_.insert(positions_.end(), positions, positions + count);
  length_ += count;
}

void KvCache::Clear() {
  length_ = 0;
  positions_.clear();
}

}  // namespace dapq::worker
