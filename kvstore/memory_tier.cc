// File: kvstore/memory_tier.cc
// MemoryTier, TierOptions validation and Tier's default PutBatch.
#include "kvstore/memory_tier.h"

#include <set>

#include "absl/strings/str_cat.h"

namespace dapq::kvstore {

absl::Status TierOptions::Validate() const {
  if (name.empty()) return absl::InvalidArgumentError("tier: empty name");
  if (capacity_bytes == 0) {
    return absl::InvalidArgumentError(absl::StrCat("tier ", name, ": capacity_bytes must be > 0"));
  }
  if (!(low_watermark > 0 && low_watermark <= high_watermark && high_watermark <= 1.0)) {
    return absl::InvalidArgumentError(absl::StrCat("tier ", name,
                                                   ": need 0 < low_watermark <= high_watermark "
                                                   "<= 1; got ",
                                                   low_watermark, ", ", high_watermark));
  }
  return absl::OkStatus();
}

absl::Status CheckDistinctKeys(const std::string& tier,
                               const std::vector<std::pair<std::string, std::string>>& blocks) {
  std::set<std::string> seen;
  for (const auto& [key, block] : blocks) {
    if (!seen.insert(key).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("tier ", tier, ": key ", key, " appears twice in one batch"));
    }
  }
  return absl::OkStatus();
}

absl::Status Tier::PutBatch(std::vector<std::pair<std::string, std::string>> blocks) {
  if (absl::Status s = CheckDistinctKeys(options().name, blocks); !s.ok()) return s;
  for (size_t i = 0; i < blocks.size(); ++i) {
    const absl::Status s = Put(blocks[i].first, std::move(blocks[i].second));
    if (!s.ok()) {
      for (size_t j = 0; j < i; ++j) Erase(blocks[j].first).IgnoreError();
      return s;
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<MemoryTier>> MemoryTier::Create(const TierOptions& options) {
  absl::Status s = options.Validate();
  if (!s.ok()) return s;
  return std::unique_ptr<MemoryTier>(new MemoryTier(options));
}

absl::Status MemoryTier::Put(const std::string& key, std::string block) {
  MutexLock lock(&mu_);  // held across Reserve so the map and the index agree
  absl::Status reserved = Reserve(key, block.size()).status();
  if (!reserved.ok()) return reserved;
  blocks_[key] = std::move(block);
  return absl::OkStatus();
}

absl::StatusOr<std::string> MemoryTier::Get(const std::string& key) {
  MutexLock lock(&mu_);
  auto it = blocks_.find(key);
  if (it == blocks_.end()) return CheckHeld(key);  // NotFound naming the tier
  return it->second;
}

absl::Status MemoryTier::Erase(const std::string& key) {
  MutexLock lock(&mu_);
  absl::Status forgotten = Forget(key);
  if (forgotten.ok()) blocks_.erase(key);
  return forgotten;
}

}  // namespace dapq::kvstore
