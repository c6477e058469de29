// File: worker/kv_cache.h
// One rank's KV cache for one sequence: for every layer and local KV head a contiguous slab of
// [capacity, head_dim] keys (post-RoPE) and values, plus the absolute position of every slot.
// Slots and positions are distinct on purpose: after compression the cache holds fewer slots
// than the positions consumed, and the next token's position is not length().
// (Paging moves into kvstore/ with the KV store; this is the per-sequence buffer.)
// Thread-safety: owned by one rank thread.
#ifndef DAPQ_WORKER_KV_CACHE_H_
#define DAPQ_WORKER_KV_CACHE_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"

namespace dapq::worker {

class KvCache {
 public:
  KvCache(int n_layers, int kv_heads, int head_dim);

  int length() const { return length_; }
  int capacity() const { return capacity_; }
  int n_layers() const { return n_layers_; }
  int kv_heads() const { return kv_heads_; }
  int head_dim() const { return head_dim_; }
  // Elements between the slabs of consecutive heads (AttentionParams::kv_head_stride).
  long head_stride() const { return static_cast<long>(capacity_) * head_dim_; }

  // Grows storage (geometrically, preserving contents) to hold at least `slots` slots.
  // ResourceExhausted if the allocation fails.
  absl::Status Reserve(int slots);

  // Slab of (layer, head): [capacity, head_dim].
  float* keys(int layer, int head) { return k_.data() + Offset(layer, head); }
  float* values(int layer, int head) { return v_.data() + Offset(layer, head); }
  const float* keys(int layer, int head) const { return k_.data() + Offset(layer, head); }
  const float* values(int layer, int head) const { return v_.data() + Offset(layer, head); }

  const std::vector<int32_t>& positions() const { return positions_; }
  // Marks `count` more slots (already written in every layer) as valid, at `positions`.
  void Commit(const int32_t* positions, int count);
  void Clear();

  size_t bytes() const { return (k_.size() + v_.size()) * sizeof(float); }

 private:
  long Offset(int layer, int head) const {
    return (static_cast<long>(layer) * kv_heads_ + head) * head_stride();
  }
  int n_layers_, kv_heads_, head_dim_;
  int capacity_ = 0;
  int length_ = 0;
  std::vector<float> k_, v_;
  std::vector<int32_t> positions_;
};

}  // namespace dapq::worker

#endif  // DAPQ_WORKER_KV_CACHE_H_
