// File: worker/kv_cache.h
// One rank's KV cache for one sequence: for every (layer, local KV head) a contiguous slab of
// [capacity, head_dim] keys (post-RoPE) and values, with its own valid length and the absolute
// position of every slot. Lengths differ between slabs once the cache is compressed with
// per-layer or per-head budgets; positions are kept because slots and positions diverge after
// compression (the next token's position is not a slot count).
// (Paging moves into kvstore/ with the KV store; this is the per-sequence buffer.)
// Thread-safety: owned by one rank thread.
#ifndef DAPQ_WORKER_KV_CACHE_H_
#define DAPQ_WORKER_KV_CACHE_H_

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/status.h"

namespace dapq::worker {

class KvCache {
 public:
  KvCache(int n_layers, int kv_heads, int head_dim);

  int n_layers() const { return n_layers_; }
  int kv_heads() const { return kv_heads_; }
  int head_dim() const { return head_dim_; }
  int capacity() const { return capacity_; }
  // Elements between the slabs of consecutive heads (AttentionParams::kv_head_stride).
  long head_stride() const { return static_cast<long>(capacity_) * head_dim_; }

  // Valid slots of one slab, and of every head of a layer ([kv_heads], for kv_lens).
  int length(int layer, int head) const { return lengths_[Slab(layer, head)]; }
  const int32_t* lengths(int layer) const { return &lengths_[Slab(layer, 0)]; }
  int max_length() const;
  long total_slots() const;  // summed over every slab
  // Absolute positions of a slab's valid slots, in slot order.
  std::span<const int32_t> positions(int layer, int head) const;

  // Grows storage (geometrically, preserving contents) to hold at least `slots` slots per slab.
  // ResourceExhausted if the allocation fails.
  absl::Status Reserve(int slots);

  // Slab of (layer, head): [capacity, head_dim].
  float* keys(int layer, int head) { return k_.data() + Slab(layer, head) * head_stride(); }
  float* values(int layer, int head) { return v_.data() + Slab(layer, head) * head_stride(); }
  const float* keys(int layer, int head) const {
    return k_.data() + Slab(layer, head) * head_stride();
  }
  const float* values(int layer, int head) const {
    return v_.data() + Slab(layer, head) * head_stride();
  }

  // Marks `count` more slots (already written after each slab's length) valid, at `positions`.
  void Commit(const int32_t* positions, int count);
  // Appends slots to one slab: positions [count], k and v [count, head_dim] (restoring a
  // session from the KV store). Grows storage as needed.
  absl::Status AppendSlots(int layer, int head, std::span<const int32_t> positions, const float* k,
                           const float* v);
  // Keeps only the given slots (ascending, unique, < length) of one slab, moving them to the
  // front in order. InvalidArgument for bad indices.
  absl::Status Keep(int layer, int head, std::span<const int32_t> slots);
  // Drops the last `count` slots of every slab (e.g. DapQ's forward-mode pseudo tokens).
  absl::Status DropLast(int count);
  void Clear();

  size_t bytes() const { return (k_.size() + v_.size()) * sizeof(float); }

 private:
  long Slab(int layer, int head) const { return static_cast<long>(layer) * kv_heads_ + head; }
  int n_layers_, kv_heads_, head_dim_;
  int capacity_ = 0;
  std::vector<float> k_, v_;
  std::vector<int32_t> lengths_;                 // [layers * kv_heads]
  std::vector<std::vector<int32_t>> positions_;  // [layers * kv_heads][length]
};

}  // namespace dapq::worker

#endif  // DAPQ_WORKER_KV_CACHE_H_
