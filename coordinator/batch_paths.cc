// File: coordinator/batch_paths.cc
// Path resolution (realpath) and the checks of BatchPaths.
#include "coordinator/batch_paths.h"

#include <sys/stat.h>

#include <climits>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace dapq::coordinator {
namespace {

absl::StatusOr<std::string> Resolve(const std::string& path) {
  char buf[PATH_MAX];
  if (realpath(path.c_str(), buf) == nullptr) {
    return absl::NotFoundError(absl::StrCat("'", path, "' does not exist"));
  }
  return std::string(buf);
}

}  // namespace

absl::StatusOr<BatchPaths> BatchPaths::Create(const std::string& dir) {
  if (dir.empty()) return BatchPaths("");
  absl::StatusOr<std::string> resolved = Resolve(dir);
  if (!resolved.ok()) {
    return absl::NotFoundError(absl::StrCat("--batch_dir: ", resolved.status().message()));
  }
  return BatchPaths(*resolved == "/" ? "" : *std::move(resolved));
}

absl::Status BatchPaths::Configured(const std::string& field) const {
  if (!dir_.empty()) return absl::OkStatus();
  return absl::FailedPreconditionError(
      absl::StrCat(field,
                   ": this coordinator takes no server-side paths (no --batch_dir); "
                   "send the items inline"));
}

absl::Status BatchPaths::Inside(const std::string& resolved, const std::string& path,
                                const std::string& field) const {
  if (resolved.size() > dir_.size() + 1 && resolved.compare(0, dir_.size(), dir_) == 0 &&
      resolved[dir_.size()] == '/') {
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(
      absl::StrCat(field, ": '", path, "' is outside the batch directory ", dir_));
}

absl::StatusOr<std::string> BatchPaths::Input(const std::string& path,
                                              const std::string& field) const {
  if (absl::Status s = Configured(field); !s.ok()) return s;
  absl::StatusOr<std::string> resolved = Resolve(path);
  if (!resolved.ok()) {
    return absl::NotFoundError(absl::StrCat(field, ": ", resolved.status().message()));
  }
  if (absl::Status s = Inside(*resolved, path, field); !s.ok()) return s;
  struct stat st;
  if (stat(resolved->c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": '", path, "' is not a regular file"));
  }
  if (st.st_size > kMaxBatchFileBytes) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": '", path, "' holds ", st.st_size,
                                                   " bytes, more than ", kMaxBatchFileBytes));
  }
  return resolved;
}

absl::StatusOr<std::string> BatchPaths::Output(const std::string& path,
                                               const std::string& field) const {
  if (absl::Status s = Configured(field); !s.ok()) return s;
  const size_t slash = path.find_last_of('/');
  const std::string name = slash == std::string::npos ? path : path.substr(slash + 1);
  if (name.empty() || name == "." || name == "..") {
    return absl::InvalidArgumentError(absl::StrCat(field, ": '", path, "' names no file"));
  }
  const std::string parent =
      slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
  absl::StatusOr<std::string> resolved = Resolve(parent);
  if (!resolved.ok()) {
    return absl::NotFoundError(
        absl::StrCat(field, ": the directory of ", path, ": ", resolved.status().message()));
  }
  const std::string file = absl::StrCat(*resolved, "/", name);
  if (absl::Status s = Inside(file, path, field); !s.ok()) return s;
  return file;
}

}  // namespace dapq::coordinator
