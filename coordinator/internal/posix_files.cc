// File: coordinator/internal/posix_files.cc
// LockFile (flock) and AtomicFileWriter (temp file, fsync, rename, directory fsync).
#include "coordinator/internal/posix_files.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"

namespace dapq::coordinator::internal {
namespace {

absl::Status ErrnoError(int err, absl::string_view what, absl::string_view path) {
  return absl::ErrnoToStatus(err, absl::StrCat(what, " ", path));
}

absl::Status SyncDirectoryOf(const std::string& path) {
  std::filesystem::path parent = std::filesystem::path(path).parent_path();
  if (parent.empty()) parent = std::filesystem::path(".");
  const std::string dir = parent.string();
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return ErrnoError(errno, "cannot open directory", dir);
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0) return ErrnoError(err, "cannot fsync directory", dir);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<LockFile> LockFile::Acquire(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoError(errno, "cannot create lock file", path);
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    ::close(fd);
    if (err == EWOULDBLOCK) {
      return absl::FailedPreconditionError(
          absl::StrCat("lock file ", path, " is held: the store is open in another process"));
    }
    return ErrnoError(err, "cannot lock", path);
  }
  return LockFile(fd);
}

LockFile::LockFile(LockFile&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}

LockFile::~LockFile() {
  if (fd_ >= 0) ::close(fd_);  // drops the flock
}

absl::StatusOr<AtomicFileWriter> AtomicFileWriter::Create(const std::string& path) {
  std::string temp = path + ".tmp-XXXXXX";
  std::vector<char> name(temp.begin(), temp.end());
  name.push_back('\0');
  const int fd = ::mkostemp(name.data(), O_CLOEXEC);
  if (fd < 0) return ErrnoError(errno, "cannot create temp file for", path);
  temp.assign(name.data());
  if (::fchmod(fd, 0644) != 0) {
    const int err = errno;
    ::close(fd);
    ::unlink(temp.c_str());
    return ErrnoError(err, "cannot chmod", temp);
  }
  return AtomicFileWriter(path, std::move(temp), fd);
}

AtomicFileWriter::AtomicFileWriter(AtomicFileWriter&& other) noexcept
    : path_(std::move(other.path_)),
      temp_path_(std::move(other.temp_path_)),
      fd_(std::exchange(other.fd_, -1)),
      buffer_(std::move(other.buffer_)) {}

AtomicFileWriter::~AtomicFileWriter() {
  if (fd_ >= 0) {
    ::close(fd_);
    ::unlink(temp_path_.c_str());
  }
}

absl::Status AtomicFileWriter::Append(absl::string_view data) {
  if (fd_ < 0) return absl::FailedPreconditionError(absl::StrCat(path_, ": already committed"));
  buffer_.append(data.data(), data.size());
  constexpr size_t kFlushBytes = 1 << 20;
  return buffer_.size() >= kFlushBytes ? Flush() : absl::OkStatus();
}

absl::Status AtomicFileWriter::Flush() {
  size_t done = 0;
  while (done < buffer_.size()) {
    const ssize_t n = ::write(fd_, buffer_.data() + done, buffer_.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoError(errno, "cannot write", temp_path_);
    }
    done += static_cast<size_t>(n);
  }
  buffer_.clear();
  return absl::OkStatus();
}

absl::Status AtomicFileWriter::Commit() {
  if (fd_ < 0) return absl::FailedPreconditionError(absl::StrCat(path_, ": already committed"));
  absl::Status s = Flush();
  if (s.ok() && ::fsync(fd_) != 0) s = ErrnoError(errno, "cannot fsync", temp_path_);
  if (!s.ok()) return s;  // the destructor removes the temp file
  const int fd = std::exchange(fd_, -1);
  if (::close(fd) != 0) {
    s = ErrnoError(errno, "cannot close", temp_path_);
  } else if (::rename(temp_path_.c_str(), path_.c_str()) != 0) {
    s = ErrnoError(errno, absl::StrCat("cannot rename ", temp_path_, " to"), path_);
  }
  if (!s.ok()) {
    ::unlink(temp_path_.c_str());
    return s;
  }
  return SyncDirectoryOf(path_);
}

}  // namespace dapq::coordinator::internal
