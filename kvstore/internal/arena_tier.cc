// File: kvstore/internal/arena_tier.cc
// ExtentAllocator and ArenaTier.
#include "kvstore/internal/arena_tier.h"

#include <algorithm>
#include <iterator>
#include <optional>

#include "absl/strings/str_cat.h"
#include "common/check.h"

namespace dapq::kvstore::internal {

ExtentAllocator::ExtentAllocator(size_t capacity) : capacity_(capacity), free_bytes_(capacity) {
  if (capacity > 0) free_[0] = capacity;
}

absl::StatusOr<std::vector<Extent>> ExtentAllocator::Allocate(size_t bytes) {
  std::vector<Extent> out;
  if (bytes == 0) return out;
  if (bytes > free_bytes_) {
    return absl::ResourceExhaustedError(
        absl::StrCat("arena: ", bytes, " bytes wanted, ", free_bytes_, " of ", capacity_, " free"));
  }
  auto best = free_.end();
  for (auto it = free_.begin(); it != free_.end(); ++it) {
    if (it->second >= bytes && (best == free_.end() || it->second < best->second)) best = it;
  }
  if (best != free_.end()) {
    out.push_back({best->first, bytes});
    if (best->second > bytes) free_[best->first + bytes] = best->second - bytes;
    free_.erase(best);
  } else {
    // No extent is large enough: scatter over the lowest ones (their total suffices).
    size_t need = bytes;
    auto it = free_.begin();
    while (need > 0) {
      DAPQ_DCHECK(it != free_.end());
      const size_t take = std::min(need, it->second);
      out.push_back({it->first, take});
      if (take < it->second) free_[it->first + take] = it->second - take;
      it = free_.erase(it);
      need -= take;
    }
  }
  free_bytes_ -= bytes;
  return out;
}

void ExtentAllocator::Free(const std::vector<Extent>& extents) {
  for (const Extent& e : extents) {
    if (e.length == 0) continue;
    size_t offset = e.offset, length = e.length;
    auto next = free_.lower_bound(offset);
    DAPQ_DCHECK(next == free_.end() || offset + length <= next->first);
    if (next != free_.begin()) {
      auto prev = std::prev(next);
      DAPQ_DCHECK(prev->first + prev->second <= offset);
      if (prev->first + prev->second == offset) {
        offset = prev->first;
        length += prev->second;
        free_.erase(prev);
      }
    }
    if (next != free_.end() && offset + length == next->first) {
      length += next->second;
      free_.erase(next);
    }
    free_[offset] = length;
    free_bytes_ += e.length;
  }
  DAPQ_DCHECK(free_bytes_ <= capacity_);
}

std::vector<Extent> ExtentAllocator::FreeExtents() const {
  std::vector<Extent> out;
  for (const auto& [offset, length] : free_) out.push_back({offset, length});
  return out;
}

ArenaTier::ArenaTier(const TierOptions& options)
    : IndexedTier(options), arena_(options.capacity_bytes) {}

absl::Status ArenaTier::Put(const std::string& key, std::string block) {
  MutexLock lock(&mu_);
  absl::StatusOr<std::optional<size_t>> previous = Reserve(key, block.size());
  if (!previous.ok()) return previous.status();
  auto old = blocks_.find(key);
  absl::StatusOr<std::vector<Extent>> extents = arena_.Allocate(block.size());
  bool old_released = false;
  if (!extents.ok() && old != blocks_.end()) {
    // The index admitted the new size less the old one: the new block needs the old one's space.
    arena_.Free(old->second);
    blocks_.erase(old);
    old = blocks_.end();
    old_released = true;
    extents = arena_.Allocate(block.size());
  }
  absl::Status s = extents.ok() ? CopyIn(block, *extents) : extents.status();
  if (!s.ok()) {
    if (extents.ok()) arena_.Free(*extents);
    Unreserve(key, old_released ? std::nullopt : *previous);
    return absl::Status(s.code(), absl::StrCat("tier ", options().name, ": put ", key,
                                               old_released ? " (its earlier block is lost)" : "",
                                               ": ", s.message()));
  }
  if (old != blocks_.end()) arena_.Free(old->second);
  blocks_[key] = *std::move(extents);
  return absl::OkStatus();
}

absl::StatusOr<std::string> ArenaTier::Get(const std::string& key) {
  MutexLock lock(&mu_);
  auto it = blocks_.find(key);
  if (it == blocks_.end()) {
    return absl::NotFoundError(absl::StrCat("tier ", options().name, ": no block ", key));
  }
  size_t bytes = 0;
  for (const Extent& e : it->second) bytes += e.length;
  absl::StatusOr<std::string> out = CopyOut(it->second, bytes);
  if (!out.ok()) {
    return absl::Status(out.status().code(), absl::StrCat("tier ", options().name, ": get ", key,
                                                          ": ", out.status().message()));
  }
  return out;
}

absl::Status ArenaTier::Erase(const std::string& key) {
  MutexLock lock(&mu_);
  absl::Status forgotten = Forget(key);
  if (!forgotten.ok()) return forgotten;
  auto it = blocks_.find(key);
  if (it != blocks_.end()) {
    arena_.Free(it->second);
    blocks_.erase(it);
  }
  return absl::OkStatus();
}

}  // namespace dapq::kvstore::internal
