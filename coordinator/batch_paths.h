// File: coordinator/batch_paths.h
// Which server-side files a batch request may name (issue #16: no arbitrary paths from clients).
// A client's jsonl_path and output_path must resolve, after following every symbolic link, to a
// place under the coordinator's --batch_dir; without a --batch_dir, paths are refused and items
// must come inline. An input must be a regular file of at most kMaxBatchFileBytes; an output's
// directory must exist inside the batch directory (the file itself is replaced atomically, so a
// link in its place is replaced, never followed).
// Thread-safety: a BatchPaths is immutable after Create.
#ifndef DAPQ_COORDINATOR_BATCH_PATHS_H_
#define DAPQ_COORDINATOR_BATCH_PATHS_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace dapq::coordinator {

inline constexpr int64_t kMaxBatchFileBytes = int64_t{1} << 30;

class BatchPaths {
 public:
  // `dir`: the batch directory ("" = no server-side paths). NotFound when it does not exist.
  static absl::StatusOr<BatchPaths> Create(const std::string& dir);

  // The resolved input file; InvalidArgument naming `field` (outside the directory, not a
  // regular file, too large), NotFound when it does not exist, FailedPrecondition without a
  // batch directory.
  absl::StatusOr<std::string> Input(const std::string& path, const std::string& field) const;
  // The output file with its directory resolved; the same errors.
  absl::StatusOr<std::string> Output(const std::string& path, const std::string& field) const;

  const std::string& dir() const { return dir_; }

 private:
  explicit BatchPaths(std::string dir) : dir_(std::move(dir)) {}
  absl::Status Inside(const std::string& resolved, const std::string& path,
                      const std::string& field) const;
  absl::Status Configured(const std::string& field) const;

  std::string dir_;  // resolved, no trailing slash; "" = none
};

}  // namespace dapq::coordinator

#endif  // DAPQ_COORDINATOR_BATCH_PATHS_H_
