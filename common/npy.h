// File: common/npy.h
// A small NumPy .npy reader and writer, for exchanging tensors with Python tooling (parity
// checks of the compression methods, `dapq compress`). Reads format versions 1.0 and 2.0 and
// writes 1.0 (header padded so the data starts on a 64-byte boundary, as NumPy does).
// Supported: little-endian '<f4' and '<f8' (both read into float), '<i8' and '<i4' (both read
// into int64), C order only. Every malformed input (bad magic, truncated header or data,
// unsupported version or dtype, fortran_order True, a shape that does not match the data size)
// is InvalidArgument naming the file and the problem; a missing file is NotFound.
// Functions are reentrant; thread-safe on distinct files.
#ifndef DAPQ_COMMON_NPY_H_
#define DAPQ_COMMON_NPY_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace dapq {

// The element type stored in the file.
enum class NpyDType { kF32, kF64, kI64, kI32 };

absl::string_view NpyDTypeName(NpyDType dtype);  // "<f4", "<f8", "<i8", "<i4"

struct NpyArray {
  std::vector<int64_t> shape;  // empty for a 0-d (scalar) array
  NpyDType dtype = NpyDType::kF32;
  std::vector<float> f32;    // the elements of a float file (f4 or f8), C order
  std::vector<int64_t> i64;  // the elements of an integer file (i8 or i4), C order
  bool is_float() const { return dtype == NpyDType::kF32 || dtype == NpyDType::kF64; }
  int64_t size() const;  // product of the shape (1 for a scalar)
};

absl::StatusOr<NpyArray> ReadNpy(const std::string& path);
// Parses the bytes of a .npy file; `name` is used in error messages.
absl::StatusOr<NpyArray> ParseNpy(absl::string_view bytes, absl::string_view name);

// Write a C-order '<f4' / '<i8' array (format 1.0). InvalidArgument when the product of `shape`
// differs from data.size() or a dimension is negative; the I/O error (naming the path) otherwise.
absl::Status WriteNpyF32(const std::string& path, const std::vector<int64_t>& shape,
                         const std::vector<float>& data);
absl::Status WriteNpyI64(const std::string& path, const std::vector<int64_t>& shape,
                         const std::vector<int64_t>& data);

}  // namespace dapq

#endif  // DAPQ_COMMON_NPY_H_
