// File: tests/util/fault_injection_env.h
// A FileEnv that forwards to the POSIX one but can be told to fail: the next N writes with
// ENOSPC (ResourceExhausted) or EIO (Internal), a write that stores only part of the data and
// then fails (a short write / crash mid-write), reads with EIO, reads that return flipped bytes,
// and failing renames. Counters say what was injected. For kvstore tests.
// Thread-safety: thread-safe.
#ifndef DAPQ_TESTS_UTIL_FAULT_INJECTION_ENV_H_
#define DAPQ_TESTS_UTIL_FAULT_INJECTION_ENV_H_

#include <atomic>
#include <string>

#include "absl/strings/str_cat.h"
#include "kvstore/file_env.h"

namespace dapq::testing {

class FaultInjectionEnv final : public kvstore::FileEnv {
 public:
  std::atomic<int> fail_writes_enospc{0};
  std::atomic<int> fail_writes_eio{0};
  std::atomic<int> short_writes{0};  // write half of the data, then fail
  std::atomic<int> fail_reads_eio{0};
  std::atomic<int> corrupt_reads{0};  // flip one byte of what is read
  std::atomic<int> fail_renames{0};

  absl::Status CreateDir(const std::string& dir) override { return base_->CreateDir(dir); }

  absl::Status WriteFile(const std::string& path, absl::string_view data, bool sync) override {
    if (Take(fail_writes_enospc)) {
      return absl::ResourceExhaustedError(
          absl::StrCat("cannot write ", path, ": No space left on device"));
    }
    if (Take(fail_writes_eio)) {
      return absl::InternalError(absl::StrCat("cannot write ", path, ": Input/output error"));
    }
    if (Take(short_writes)) {
      base_->WriteFile(path, data.substr(0, data.size() / 2), sync).IgnoreError();
      return absl::InternalError(absl::StrCat("cannot write ", path, ": short write"));
    }
    return base_->WriteFile(path, data, sync);
  }

  absl::StatusOr<std::string> ReadFile(const std::string& path) override {
    if (Take(fail_reads_eio)) {
      return absl::InternalError(absl::StrCat("cannot read ", path, ": Input/output error"));
    }
    absl::StatusOr<std::string> bytes = base_->ReadFile(path);
    if (bytes.ok() && !bytes->empty() && Take(corrupt_reads)) (*bytes)[bytes->size() / 2] ^= 0x5A;
    return bytes;
  }

  // The same read faults on a range read (a flipped byte lands in the middle of the range).
  absl::StatusOr<std::string> ReadRange(const std::string& path, size_t offset,
                                        size_t size) override {
    if (Take(fail_reads_eio)) {
      return absl::InternalError(absl::StrCat("cannot read ", path, ": Input/output error"));
    }
    absl::StatusOr<std::string> bytes = base_->ReadRange(path, offset, size);
    if (bytes.ok() && !bytes->empty() && Take(corrupt_reads)) (*bytes)[bytes->size() / 2] ^= 0x5A;
    return bytes;
  }

  absl::Status Rename(const std::string& from, const std::string& to) override {
    if (Take(fail_renames)) return absl::InternalError(absl::StrCat("cannot rename ", from));
    return base_->Rename(from, to);
  }
  absl::Status Remove(const std::string& path) override { return base_->Remove(path); }
  absl::StatusOr<std::vector<std::string>> ListDir(const std::string& dir) override {
    return base_->ListDir(dir);
  }
  absl::Status SyncDir(const std::string& dir) override { return base_->SyncDir(dir); }

 private:
  static bool Take(std::atomic<int>& counter) {
    int v = counter.load();
    while (v > 0) {
      if (counter.compare_exchange_weak(v, v - 1)) return true;
    }
    return false;
  }
  kvstore::FileEnv* base_ = kvstore::FileEnv::Posix();
};

}  // namespace dapq::testing

#endif  // DAPQ_TESTS_UTIL_FAULT_INJECTION_ENV_H_
