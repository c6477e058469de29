// File: kvstore/internal/arena_tier.h
// The CPU half of the CUDA tiers (cuda_tiers.h), kept free of CUDA so that the CPU build
// compiles and tests it: an allocator of byte extents over one fixed-size arena, and ArenaTier,
// a Tier whose blocks live in such an arena (GPU memory for `device`, pinned host memory for
// `host`) while subclasses supply the copies in and out.
//
// The arena is reserved whole when a tier is created, so no allocation happens on the transfer
// path (cudaMalloc / cudaFree would synchronize the device). A block takes one free extent when
// one is large enough (the smallest such) and is otherwise scattered over several, so the arena
// never refuses a block that the tier's capacity accounting admits: fragmentation costs extra
// copies, never capacity.
#ifndef DAPQ_KVSTORE_INTERNAL_ARENA_TIER_H_
#define DAPQ_KVSTORE_INTERNAL_ARENA_TIER_H_

#include <cstddef>
#include <map>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "common/mutex.h"
#include "kvstore/indexed_tier.h"

namespace dapq::kvstore::internal {

// `length` bytes at byte `offset` of an arena.
struct Extent {
  size_t offset = 0;
  size_t length = 0;
  bool operator==(const Extent&) const = default;
};

// Free space of an arena of `capacity` bytes, all free at first.
// Thread-safety: not thread-safe (its owner's lock guards it).
class ExtentAllocator {
 public:
  explicit ExtentAllocator(size_t capacity);

  // Extents totalling exactly `bytes` (none for 0): the smallest free extent that holds them
  // all, else pieces taken from the lowest offsets up. ResourceExhausted, taking nothing, when
  // fewer than `bytes` bytes are free.
  absl::StatusOr<std::vector<Extent>> Allocate(size_t bytes);
  // Returns extents from Allocate (merged with free neighbours).
  void Free(const std::vector<Extent>& extents);

  size_t capacity() const { return capacity_; }
  size_t free_bytes() const { return free_bytes_; }
  // Free extents, lowest offset first (tests).
  std::vector<Extent> FreeExtents() const;

 private:
  const size_t capacity_;
  size_t free_bytes_;
  std::map<size_t, size_t> free_;  // offset -> length; disjoint, never adjacent
};

// Tier over an arena of options.capacity_bytes: Put/Get/Erase with the Tier contract (tier.h),
// the copies left to CopyIn/CopyOut. A failed copy leaves the tier as it was, except when it
// replaces a block whose space the new one had to reuse (the arena had no other room): that key
// is then gone from the tier, and the error says so.
// Thread-safety: thread-safe; one copy at a time per tier (CopyIn/CopyOut run under its lock).
class ArenaTier : public IndexedTier {
 public:
  absl::Status Put(const std::string& key, std::string block) final;
  absl::StatusOr<std::string> Get(const std::string& key) final;
  absl::Status Erase(const std::string& key) final;

 protected:
  explicit ArenaTier(const TierOptions& options);

  // Copies `block` into the arena at `extents` (their lengths sum to block.size()).
  // REQUIRES: called by ArenaTier only, under its lock.
  virtual absl::Status CopyIn(const std::string& block, const std::vector<Extent>& extents) = 0;
  // The `bytes` bytes stored at `extents`, in order. REQUIRES: as CopyIn.
  virtual absl::StatusOr<std::string> CopyOut(const std::vector<Extent>& extents, size_t bytes) = 0;

 private:
  Mutex mu_;  // held across Reserve and the copies so the index, arena and map agree
  ExtentAllocator arena_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::vector<Extent>> blocks_ ABSL_GUARDED_BY(mu_);
};

}  // namespace dapq::kvstore::internal

#endif  // DAPQ_KVSTORE_INTERNAL_ARENA_TIER_H_
