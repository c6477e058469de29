// File: kvstore/disk_tier.h
// The disk tier, under a per-rank directory, in two layouts that coexist:
//  - Put: one file per block, written as `<key>.blk.tmp`, fsynced, then renamed to `<key>.blk`
//    (and the directory fsynced), so a crash leaves either the old state or the whole block;
//  - PutBatch (the store's spills): one segment file `seg-<n>.seg` per batch, written with one
//    large contiguous write as `seg-<n>.seg.tmp`, one fsync, rename, directory fsync. A segment
//    is a header ("DQSEG001", block count) then, per block, its key length, block size, key and
//    block bytes back to back. An in-memory index maps each key to (segment, offset, size); Get
//    preads just that range. A block of a segment that is erased or replaced while others in it
//    are live is appended to `seg-<n>.dead` (not fsynced: like the unlink of a block file,
//    erasure is not crash-durable); the segment file is deleted with its last live block.
//    There is no other compaction.
// Open() recovers the index after a restart: temp files (partial writes) are deleted, every
// block file and every block of a segment is verified (block_codec checksum); files that fail
// are deleted and counted, a segment keeps the blocks that verify (a damaged tail or block is
// counted as corrupt; a segment with none left is deleted). A key found twice (a crash between
// storing its new copy and retiring the old one) keeps the copy in the newest segment, and a
// segment copy wins over a block file. Get verifies again: a block corrupted on disk after it was
// written returns DataLoss and is never used. All I/O goes through a FileEnv.
// Keys: ValidateBlockKey.
// Thread-safety: thread-safe.
#ifndef DAPQ_KVSTORE_DISK_TIER_H_
#define DAPQ_KVSTORE_DISK_TIER_H_

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "common/mutex.h"
#include "kvstore/file_env.h"
#include "kvstore/indexed_tier.h"

namespace dapq::kvstore {

struct DiskRecovery {
  int recovered = 0;       // valid blocks indexed (block files and segment blocks)
  int discarded_temp = 0;  // partial writes removed (block and segment temp files)
  int discarded_corrupt = 0;
  int segments = 0;  // segment files kept
};

class DiskTier final : public IndexedTier {
 public:
  // `env` must outlive the tier (nullptr = FileEnv::Posix()).
  static absl::StatusOr<std::unique_ptr<DiskTier>> Open(const TierOptions& options,
                                                        const std::string& dir,
                                                        FileEnv* env = nullptr);

  // ResourceExhausted when over capacity or the disk is full (ENOSPC); nothing is left behind.
  absl::Status Put(const std::string& key, std::string block) override;
  // One segment file, one fsync. All or nothing (Tier::PutBatch): on any failure no key of the
  // batch is stored or changed and no file is left behind; the error names the segment and the
  // batch's first key.
  absl::Status PutBatch(std::vector<std::pair<std::string, std::string>> blocks) override;
  absl::StatusOr<std::string> Get(const std::string& key) override;
  absl::Status Erase(const std::string& key) override;
  const DiskRecovery& recovery() const { return recovery_; }
  // Path of the segment file holding `key` ("" when it is in a block file or absent). Tests.
  std::string SegmentPathOf(const std::string& key) const;

 private:
  struct Location {
    int64_t segment = -1;  // -1: the block file <key>.blk
    size_t offset = 0;
    size_t size = 0;
  };
  struct Segment {
    int live = 0;  // its blocks still indexed; its erased ones are listed in seg-<n>.dead
  };

  DiskTier(const TierOptions& options, std::string dir, FileEnv* env)
      : IndexedTier(options), dir_(std::move(dir)), env_(env) {}
  absl::Status Recover();
  void RecoverSegment(int64_t n, const std::string& bytes, const std::set<std::string>& dead)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(seg_mu_);
  // Records `key` at `loc`, retiring its earlier location (unlinks a block file it replaced in a
  // segment; marks a segment copy dead, deleting the segment with its last live block).
  void PlaceLocked(const std::string& key, const Location& loc)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(seg_mu_);
  absl::Status RetireLocked(const std::string& key, const Location& loc)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(seg_mu_);
  std::string PathOf(const std::string& key) const { return dir_ + "/" + key + ".blk"; }
  std::string SegPath(int64_t n) const;
  std::string DeadPath(int64_t n) const;

  const std::string dir_;
  FileEnv* const env_;
  DiskRecovery recovery_;
  std::atomic<int64_t> next_segment_{0};
  mutable Mutex seg_mu_;  // locations_ and segments_ (taken before IndexedTier's)
  std::map<std::string, Location> locations_ ABSL_GUARDED_BY(seg_mu_);
  std::map<int64_t, Segment> segments_ ABSL_GUARDED_BY(seg_mu_);
};

}  // namespace dapq::kvstore

#endif  // DAPQ_KVSTORE_DISK_TIER_H_
