// File: kvstore/posix_file_env.cc
// FileEnv over POSIX calls (open/write/fsync/rename/opendir).
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <limits>

#include "absl/strings/str_cat.h"
#include "kvstore/file_env.h"

namespace dapq::kvstore {
namespace {

absl::Status ErrnoError(const std::string& what, const std::string& path, int err) {
  const std::string msg = absl::StrCat(what, " ", path, ": ", std::strerror(err));
  switch (err) {
    case ENOENT:
      return absl::NotFoundError(msg);
    case ENOSPC:
    case EDQUOT:
      return absl::ResourceExhaustedError(msg);
    case EACCES:
    case EPERM:
      return absl::PermissionDeniedError(msg);
    default:
      return absl::InternalError(msg);
  }
}

// Writes all of `data` to `fd` (retrying short writes and EINTR), then optionally fsyncs, and
// closes `fd` in every case. `verb` names the write in errors ("write", "append to").
constexpr size_t kToTheEnd = std::numeric_limits<size_t>::max();

// Reads `size` bytes from `offset` (kToTheEnd: up to the end of the file, in 64 KiB steps), or
// fewer when the file ends first; closes `fd` in every case.
absl::StatusOr<std::string> ReadAndClose(int fd, size_t offset, size_t size,
                                         const std::string& path) {
  std::string out;
  size_t done = 0;
  while (done < size) {
    const size_t want = size == kToTheEnd ? size_t{1} << 16 : size - done;
    if (out.size() < done + want) out.resize(done + want);
    const ssize_t n = ::pread(fd, out.data() + done, want, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::close(fd);
      return ErrnoError("cannot read", path, err);
    }
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  ::close(fd);
  out.resize(done);
  return out;
}

absl::Status WriteAllAndClose(int fd, absl::string_view data, bool sync, const std::string& path,
                              const char* verb) {
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::close(fd);
      return ErrnoError(absl::StrCat("cannot ", verb), path, err);
    }
    done += static_cast<size_t>(n);
  }
  if (sync && ::fsync(fd) != 0) {
    const int err = errno;
    ::close(fd);
    return ErrnoError("cannot fsync", path, err);
  }
  if (::close(fd) != 0) return ErrnoError("cannot close", path, errno);
  return absl::OkStatus();
}

class PosixFileEnv final : public FileEnv {
 public:
  absl::Status CreateDir(const std::string& dir) override {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) return ErrnoError("cannot create directory", dir, ec.value());
    return absl::OkStatus();
  }

  absl::Status WriteFile(const std::string& path, absl::string_view data, bool sync) override {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return ErrnoError("cannot create", path, errno);
    return WriteAllAndClose(fd, data, sync, path, "write");
  }

  absl::Status AppendFile(const std::string& path, absl::string_view data) override {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) return ErrnoError("cannot open", path, errno);
    return WriteAllAndClose(fd, data, /*sync=*/false, path, "append to");
  }

  absl::StatusOr<std::string> ReadFile(const std::string& path) override {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return ErrnoError("cannot open", path, errno);
    return ReadAndClose(fd, 0, kToTheEnd, path);
  }

  absl::StatusOr<std::string> ReadRange(const std::string& path, size_t offset,
                                        size_t size) override {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return ErrnoError("cannot open", path, errno);
    return ReadAndClose(fd, offset, size, path);
  }

  absl::Status Rename(const std::string& from, const std::string& to) override {
    if (::rename(from.c_str(), to.c_str()) != 0) return ErrnoError("cannot rename", from, errno);
    return absl::OkStatus();
  }

  absl::Status Remove(const std::string& path) override {
    if (::unlink(path.c_str()) != 0) return ErrnoError("cannot remove", path, errno);
    return absl::OkStatus();
  }

  absl::StatusOr<std::vector<std::string>> ListDir(const std::string& dir) override {
    DIR* d = ::opendir(dir.c_str());
    if (d == nullptr) return ErrnoError("cannot list", dir, errno);
    std::vector<std::string> names;
    while (const dirent* e = ::readdir(d)) {
      const std::string name = e->d_name;
      if (name != "." && name != "..") names.push_back(name);
    }
    ::closedir(d);
    return names;
  }

  absl::Status SyncDir(const std::string& dir) override {
    const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return ErrnoError("cannot open directory", dir, errno);
    const int rc = ::fsync(fd);
    const int err = errno;
    ::close(fd);
    if (rc != 0) return ErrnoError("cannot fsync directory", dir, err);
    return absl::OkStatus();
  }
};

}  // namespace

absl::StatusOr<std::string> FileEnv::ReadRange(const std::string& path, size_t offset,
                                               size_t size) {
  absl::StatusOr<std::string> all = ReadFile(path);
  if (!all.ok()) return all.status();
  if (offset >= all->size()) return std::string();
  return all->substr(offset, size);
}

absl::Status FileEnv::AppendFile(const std::string& path, absl::string_view data) {
  absl::StatusOr<std::string> before = ReadFile(path);
  if (!before.ok() && !absl::IsNotFound(before.status())) return before.status();
  return WriteFile(path, absl::StrCat(before.ok() ? *before : "", data), /*sync=*/false);
}

FileEnv* FileEnv::Posix() {
  static FileEnv* env = new PosixFileEnv();
  return env;
}

}  // namespace dapq::kvstore
