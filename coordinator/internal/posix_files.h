// File: coordinator/internal/posix_files.h
// Two POSIX file helpers of the batch store:
//   LockFile: an exclusive, non-blocking flock() on a lock file, held until destruction (or the
//     process dies: the kernel drops it), so two processes never own one store at once.
//   AtomicFileWriter: writes `<path>.tmp-XXXXXX`, and Commit() fsyncs it, renames it over
//     `path` and fsyncs the directory, so readers see the old file or the whole new one.
//     An uncommitted writer deletes its temp file.
// Errors name the path and strerror(errno) (absl::ErrnoToStatus codes).
// Thread-safety: none; each object is used by one thread at a time. Both are move-only owners
// of their file descriptor.
#ifndef DAPQ_COORDINATOR_INTERNAL_POSIX_FILES_H_
#define DAPQ_COORDINATOR_INTERNAL_POSIX_FILES_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace dapq::coordinator::internal {

class LockFile {
 public:
  // Creates `path` if missing. FailedPrecondition when another holder has it locked.
  static absl::StatusOr<LockFile> Acquire(const std::string& path);
  LockFile(LockFile&& other) noexcept;
  LockFile& operator=(LockFile&&) = delete;
  LockFile(const LockFile&) = delete;
  ~LockFile();

 private:
  explicit LockFile(int fd) : fd_(fd) {}
  int fd_;
};

class AtomicFileWriter {
 public:
  static absl::StatusOr<AtomicFileWriter> Create(const std::string& path);
  AtomicFileWriter(AtomicFileWriter&& other) noexcept;
  AtomicFileWriter& operator=(AtomicFileWriter&&) = delete;
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  ~AtomicFileWriter();

  absl::Status Append(absl::string_view data);
  absl::Status Commit();

 private:
  AtomicFileWriter(std::string path, std::string temp_path, int fd)
      : path_(std::move(path)), temp_path_(std::move(temp_path)), fd_(fd) {}
  absl::Status Flush();

  std::string path_;
  std::string temp_path_;
  int fd_;  // -1 once committed
  std::string buffer_;
};

}  // namespace dapq::coordinator::internal

#endif  // DAPQ_COORDINATOR_INTERNAL_POSIX_FILES_H_
