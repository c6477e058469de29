// File: kvstore/disk_tier.h
// The disk tier: one file per block under a per-rank directory, written as `<key>.blk.tmp`,
// fsynced, then renamed to `<key>.blk` (and the directory fsynced), so a crash leaves either
// the old state or the whole block. Open() recovers the index after a restart: temp files
// (partial writes) are deleted, and every block file is verified (block_codec checksum);
// files that fail are deleted and counted. Get verifies again: a block corrupted on disk after
// it was written returns DataLoss and is never used. All I/O goes through a FileEnv.
// Keys: ValidateBlockKey.
// Thread-safety: thread-safe.
#ifndef DAPQ_KVSTORE_DISK_TIER_H_
#define DAPQ_KVSTORE_DISK_TIER_H_

#include <memory>

#include "kvstore/file_env.h"
#include "kvstore/indexed_tier.h"

namespace dapq::kvstore {

struct DiskRecovery {
  int recovered = 0;       // valid blocks indexed
  int discarded_temp = 0;  // partial writes removed
  int discarded_corrupt = 0;
};

class DiskTier final : public IndexedTier {
 public:
  // `env` must outlive the tier (nullptr = FileEnv::Posix()).
  static absl::StatusOr<std::unique_ptr<DiskTier>> Open(const TierOptions& options,
                                                        const std::string& dir,
                                                        FileEnv* env = nullptr);

  // ResourceExhausted when over capacity or the disk is full (ENOSPC); nothing is left behind.
  absl::Status Put(const std::string& key, std::string block) override;
  absl::StatusOr<std::string> Get(const std::string& key) override;
  absl::Status Erase(const std::string& key) override;
  const DiskRecovery& recovery() const { return recovery_; }

 private:
  DiskTier(const TierOptions& options, std::string dir, FileEnv* env)
      : IndexedTier(options), dir_(std::move(dir)), env_(env) {}
  absl::Status Recover();
  std::string PathOf(const std::string& key) const { return dir_ + "/" + key + ".blk"; }

  const std::string dir_;
  FileEnv* const env_;
  DiskRecovery recovery_;
};

}  // namespace dapq::kvstore

#endif  // DAPQ_KVSTORE_DISK_TIER_H_
