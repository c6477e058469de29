// File: kvstore/memory_tier.cc
// MemoryTier and TierOptions validation.
#include "kvstore/memory_tier.h"

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

absl::StatusOr<std::unique_ptr<MemoryTier>> MemoryTier::Create(const TierOptions& options) {
  absl::Status s = options.Validate();
  if (!s.ok()) return s;
  return std::unique_ptr<MemoryTier>(new MemoryTier(options));
}

absl::Status MemoryTier::Put(const std::string& key, std::string block) {
  MutexLock lock(&mu_);
  auto it = blocks_.find(key);
  const size_t old = it == blocks_.end() ? 0 : it->second.size();
  if (used_ - old + block.size() > options_.capacity_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "tier ", options_.name, ": block ", key, " of ", block.size(), " bytes does not fit (",
        used_, " of ", options_.capacity_bytes, " bytes used)"));
  }
  used_ = used_ - old + block.size();
  blocks_[key] = std::move(block);
  return absl::OkStatus();
}

absl::StatusOr<std::string> MemoryTier::Get(const std::string& key) {
  MutexLock lock(&mu_);
  auto it = blocks_.find(key);
  if (it == blocks_.end()) {
    return absl::NotFoundError(absl::StrCat("tier ", options_.name, ": no block ", key));
  }
  return it->second;
}

absl::Status MemoryTier::Erase(const std::string& key) {
  MutexLock lock(&mu_);
  auto it = blocks_.find(key);
  if (it == blocks_.end()) {
    return absl::NotFoundError(absl::StrCat("tier ", options_.name, ": no block ", key));
  }
  used_ -= it->second.size();
  blocks_.erase(it);
  return absl::OkStatus();
}

bool MemoryTier::Contains(const std::string& key) const {
  MutexLock lock(&mu_);
  return blocks_.count(key) > 0;
}

std::vector<std::string> MemoryTier::Keys() const {
  MutexLock lock(&mu_);
  std::vector<std::string> keys;
  for (const auto& [k, v] : blocks_) keys.push_back(k);
  return keys;
}

size_t MemoryTier::used_bytes() const {
  MutexLock lock(&mu_);
  return used_;
}

}  // namespace dapq::kvstore
