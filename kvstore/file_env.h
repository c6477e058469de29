// File: kvstore/file_env.h
// File I/O behind an injectable interface (LevelDB's Env), so tests can inject faults: short
// writes, ENOSPC, EIO, corrupted bytes. FileEnv::Posix() is the real one; FaultInjectionEnv
// (tests/util/fault_injection_env.h) wraps it. Errors carry the path and errno text; ENOSPC
// maps to ResourceExhausted, ENOENT to NotFound, other I/O errors to Internal.
// Thread-safety: implementations are thread-safe.
#ifndef DAPQ_KVSTORE_FILE_ENV_H_
#define DAPQ_KVSTORE_FILE_ENV_H_

#include <cstddef>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace dapq::kvstore {

class FileEnv {
 public:
  virtual ~FileEnv() = default;
  // Creates `dir` and its parents when missing.
  virtual absl::Status CreateDir(const std::string& dir) = 0;
  // Creates or truncates `path` and writes `data` in large writes; fsync when `sync`.
  virtual absl::Status WriteFile(const std::string& path, absl::string_view data, bool sync) = 0;
  virtual absl::StatusOr<std::string> ReadFile(const std::string& path) = 0;
  // Up to `size` bytes of `path` from `offset` (fewer at the end of the file: the caller checks).
  // The default reads the whole file; the POSIX one preads just the range.
  virtual absl::StatusOr<std::string> ReadRange(const std::string& path, size_t offset,
                                                size_t size);
  // Appends `data` to `path` (created when missing), without fsync. The default reads the file
  // and rewrites it; the POSIX one opens it O_APPEND.
  virtual absl::Status AppendFile(const std::string& path, absl::string_view data);
  // Atomic replace (rename(2)).
  virtual absl::Status Rename(const std::string& from, const std::string& to) = 0;
  virtual absl::Status Remove(const std::string& path) = 0;
  // Names (not paths) of the entries of `dir`.
  virtual absl::StatusOr<std::vector<std::string>> ListDir(const std::string& dir) = 0;
  // fsync of a directory, making renames inside it durable.
  virtual absl::Status SyncDir(const std::string& dir) = 0;

  // The process-wide POSIX implementation (never deleted).
  static FileEnv* Posix();
};

}  // namespace dapq::kvstore

#endif  // DAPQ_KVSTORE_FILE_ENV_H_
