// File: kvstore/disk_tier.cc
// Durable block files: temp + fsync + rename, recovery on open, verification on read.
#include "kvstore/disk_tier.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "kvstore/block_codec.h"

namespace dapq::kvstore {
namespace {

constexpr char kBlockSuffix[] = ".blk";
constexpr char kTempSuffix[] = ".blk.tmp";

}  // namespace

absl::StatusOr<std::unique_ptr<DiskTier>> DiskTier::Open(const TierOptions& options,
                                                         const std::string& dir, FileEnv* env) {
  DAPQ_RETURN_IF_ERROR(options.Validate());
  if (dir.empty()) return absl::InvalidArgumentError("disk tier: empty directory");
  std::unique_ptr<DiskTier> tier(new DiskTier(options, dir, env ? env : FileEnv::Posix()));
  DAPQ_RETURN_IF_ERROR(tier->env_->CreateDir(dir));
  DAPQ_RETURN_IF_ERROR(tier->Recover());
  return tier;
}

absl::Status DiskTier::Recover() {
  DAPQ_ASSIGN_OR_RETURN(std::vector<std::string> names, env_->ListDir(dir_));
  for (const std::string& name : names) {
    const std::string path = dir_ + "/" + name;
    if (absl::EndsWith(name, kTempSuffix)) {
      DAPQ_RETURN_IF_ERROR(env_->Remove(path));
      ++recovery_.discarded_temp;
      continue;
    }
    if (!absl::EndsWith(name, kBlockSuffix)) continue;
    absl::StatusOr<std::string> bytes = env_->ReadFile(path);
    if (!bytes.ok() || !VerifyBlock(*bytes).ok()) {
      DAPQ_RETURN_IF_ERROR(env_->Remove(path));
      ++recovery_.discarded_corrupt;
      continue;
    }
    const std::string key = name.substr(0, name.size() - (sizeof(kBlockSuffix) - 1));
    Adopt(key, bytes->size());
    ++recovery_.recovered;
  }
  return absl::OkStatus();
}

absl::Status DiskTier::Put(const std::string& key, std::string block) {
  DAPQ_RETURN_IF_ERROR(ValidateBlockKey(key));
  DAPQ_ASSIGN_OR_RETURN(const std::optional<size_t> previous, Reserve(key, block.size()));
  const std::string temp = dir_ + "/" + key + kTempSuffix;
  absl::Status s = env_->WriteFile(temp, block, /*sync=*/true);
  if (s.ok()) s = env_->Rename(temp, PathOf(key));
  if (s.ok()) s = env_->SyncDir(dir_);
  if (!s.ok()) {
    Unreserve(key, previous);
    env_->Remove(temp).IgnoreError();  // best effort: recovery deletes it otherwise
    return absl::Status(s.code(),
                        absl::StrCat("disk tier: spilling block ", key, ": ", s.message()));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> DiskTier::Get(const std::string& key) {
  DAPQ_RETURN_IF_ERROR(CheckHeld(key));
  absl::StatusOr<std::string> bytes = env_->ReadFile(PathOf(key));
  if (!bytes.ok()) {
    if (absl::IsNotFound(bytes.status())) {
      return absl::DataLossError(absl::StrCat("disk tier: block file of ", key, " is missing"));
    }
    return bytes.status();
  }
  if (absl::Status v = VerifyBlock(*bytes); !v.ok()) {
    return absl::DataLossError(
        absl::StrCat("disk tier: block ", key, " failed verification: ", v.message()));
  }
  return bytes;
}

absl::Status DiskTier::Erase(const std::string& key) {
  DAPQ_RETURN_IF_ERROR(Forget(key));
  absl::Status s = env_->Remove(PathOf(key));
  return absl::IsNotFound(s) ? absl::OkStatus() : s;
}

}  // namespace dapq::kvstore
