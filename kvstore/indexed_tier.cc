// File: kvstore/indexed_tier.cc
// Key/size accounting shared by the tiers, and block key validation.
#include "kvstore/indexed_tier.h"

#include "absl/strings/str_cat.h"

namespace dapq::kvstore {

bool IndexedTier::Contains(const std::string& key) const {
  MutexLock lock(&mu_);
  return sizes_.count(key) > 0;
}

std::vector<std::string> IndexedTier::Keys() const {
  MutexLock lock(&mu_);
  std::vector<std::string> keys;
  for (const auto& [k, size] : sizes_) keys.push_back(k);
  return keys;
}

size_t IndexedTier::used_bytes() const {
  MutexLock lock(&mu_);
  return used_;
}

absl::StatusOr<std::optional<size_t>> IndexedTier::Reserve(const std::string& key, size_t bytes) {
  MutexLock lock(&mu_);
  auto it = sizes_.find(key);
  std::optional<size_t> previous;
  if (it != sizes_.end()) previous = it->second;
  const size_t after = used_ - previous.value_or(0) + bytes;
  if (after > options_.capacity_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "tier ", options_.name, ": block ", key, " of ", bytes, " bytes does not fit (", used_,
        " of ", options_.capacity_bytes, " bytes used)"));
  }
  used_ = after;
  sizes_[key] = bytes;
  return previous;
}

void IndexedTier::Adopt(const std::string& key, size_t bytes) {
  MutexLock lock(&mu_);
  auto it = sizes_.find(key);
  used_ = used_ - (it == sizes_.end() ? 0 : it->second) + bytes;
  sizes_[key] = bytes;
}

void IndexedTier::Unreserve(const std::string& key, std::optional<size_t> previous) {
  MutexLock lock(&mu_);
  auto it = sizes_.find(key);
  if (it == sizes_.end()) return;
  used_ -= it->second;
  if (previous.has_value()) {
    it->second = *previous;
    used_ += *previous;
  } else {
    sizes_.erase(it);
  }
}

absl::Status IndexedTier::Forget(const std::string& key) {
  MutexLock lock(&mu_);
  auto it = sizes_.find(key);
  if (it == sizes_.end()) {
    return absl::NotFoundError(absl::StrCat("tier ", options_.name, ": no block ", key));
  }
  used_ -= it->second;
  sizes_.erase(it);
  return absl::OkStatus();
}

absl::Status IndexedTier::CheckHeld(const std::string& key) const {
  MutexLock lock(&mu_);
  if (sizes_.count(key) > 0) return absl::OkStatus();
  return absl::NotFoundError(absl::StrCat("tier ", options_.name, ": no block ", key));
}

absl::Status ValidateBlockKey(const std::string& key) {
  if (key.empty() || key.size() > 256) {
    return absl::InvalidArgumentError(
        absl::StrCat("key: must be 1-256 characters, got ", key.size()));
  }
  for (char c : key) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '-' || c == '.';
    if (!ok)
      return absl::InvalidArgumentError(absl::StrCat("key: '", key, "' has a bad character"));
  }
  return absl::OkStatus();
}

}  // namespace dapq::kvstore
