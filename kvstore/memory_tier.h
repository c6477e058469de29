// File: kvstore/memory_tier.h
// A tier in process memory: the `device` tier of CPU builds and the `host` tier (pinned host
// memory comes with the CUDA build). Blocks are held as encoded bytes.
// Thread-safety: thread-safe.
#ifndef DAPQ_KVSTORE_MEMORY_TIER_H_
#define DAPQ_KVSTORE_MEMORY_TIER_H_

#include <map>
#include <memory>

#include "absl/base/thread_annotations.h"
#include "common/mutex.h"
#include "kvstore/indexed_tier.h"

namespace dapq::kvstore {

class MemoryTier final : public IndexedTier {
 public:
  static absl::StatusOr<std::unique_ptr<MemoryTier>> Create(const TierOptions& options);

  absl::Status Put(const std::string& key, std::string block) override;
  absl::StatusOr<std::string> Get(const std::string& key) override;
  absl::Status Erase(const std::string& key) override;

 private:
  explicit MemoryTier(const TierOptions& options) : IndexedTier(options) {}
  mutable Mutex mu_;
  std::map<std::string, std::string> blocks_ ABSL_GUARDED_BY(mu_);
};

}  // namespace dapq::kvstore

#endif  // DAPQ_KVSTORE_MEMORY_TIER_H_
