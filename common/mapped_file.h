// File: common/mapped_file.h
// Read-only memory-mapped files with absl::Status errors that name the path.
// Thread-safety: a MappedFile is immutable after Open and may be read from any thread.
// Ownership: the mapping lives as long as the object; it is move-only.
#ifndef DAPQ_COMMON_MAPPED_FILE_H_
#define DAPQ_COMMON_MAPPED_FILE_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace dapq {

class MappedFile {
 public:
  // NotFound when the file is missing, InvalidArgument when it is not a regular file,
  // Internal on other I/O errors. An empty file maps to size() == 0, data() == nullptr.
  static absl::StatusOr<MappedFile> Open(const std::string& path);

  MappedFile() = default;
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile();

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  void Reset();
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  std::string path_;
};

// Reads a whole (small) file into a string. NotFound / Internal with the path in the message.
absl::StatusOr<std::string> ReadFileToString(const std::string& path);

}  // namespace dapq

#endif  // DAPQ_COMMON_MAPPED_FILE_H_
