// File: kvstore/indexed_tier.h
// The bookkeeping every tier shares: which keys it holds, their sizes, and the bytes used
// against its capacity. Reserve() checks and records a block's size in one step, before the
// (slow) write, so concurrent Puts cannot overfill a tier; a failed write rolls back with
// Unreserve(). Tiers derive from it and implement Put/Get/Erase around it.
// Thread-safety: thread-safe (its own mutex; never held during a tier's I/O).
#ifndef DAPQ_KVSTORE_INDEXED_TIER_H_
#define DAPQ_KVSTORE_INDEXED_TIER_H_

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "common/mutex.h"
#include "kvstore/tier.h"

namespace dapq::kvstore {

class IndexedTier : public Tier {
 public:
  const TierOptions& options() const final { return options_; }
  bool Contains(const std::string& key) const final;
  std::vector<std::string> Keys() const final;
  size_t used_bytes() const final;

 protected:
  explicit IndexedTier(const TierOptions& options) : options_(options) {}

  // Records `key` at `bytes` (replacing its earlier size) if the tier has room; returns the
  // earlier size (nullopt if the key was new). ResourceExhausted naming the tier otherwise.
  absl::StatusOr<std::optional<size_t>> Reserve(const std::string& key, size_t bytes);
  // Records a block found at start-up (recovery), even past the capacity: it is never dropped.
  void Adopt(const std::string& key, size_t bytes);
  // Undoes a Reserve whose write failed: back to `previous` (nullopt: the key is forgotten).
  void Unreserve(const std::string& key, std::optional<size_t> previous);
  // Forgets `key`; NotFound naming the tier if it was not held.
  absl::Status Forget(const std::string& key);
  // NotFound naming the tier unless `key` is held.
  absl::Status CheckHeld(const std::string& key) const;

 private:
  const TierOptions options_;
  mutable Mutex mu_;
  std::map<std::string, size_t> sizes_ ABSL_GUARDED_BY(mu_);
  size_t used_ ABSL_GUARDED_BY(mu_) = 0;
};

// Block keys as tiers and peers accept them: 1-256 characters of [A-Za-z0-9_.-] (safe as file
// names and Redis keys). InvalidArgument naming the key otherwise.
absl::Status ValidateBlockKey(const std::string& key);

}  // namespace dapq::kvstore

#endif  // DAPQ_KVSTORE_INDEXED_TIER_H_
