// File: worker/safetensors.h
// Reader and writer for the safetensors format (Hugging Face checkpoints): an 8-byte
// little-endian header length N, N bytes of JSON mapping each tensor name to
// {"dtype", "shape", "data_offsets": [begin, end]} (offsets relative to the data section that
// follows the header), then the raw tensor bytes. The optional "__metadata__" entry is ignored.
// The reader memory-maps the file and validates the whole header on Open: only F32, F16 and BF16
// tensors are accepted, and each tensor's byte range must lie inside the data section and match
// its shape exactly. Tensor views point into the mapping (no copy).
// The writer produces F32 tensors only; its header is space-padded to a multiple of 8 bytes, so
// the data section starts 8-byte aligned and every tensor is float-aligned in a mapping.
// Host byte order is assumed little-endian, like the format (checked at compile time).
#ifndef DAPQ_WORKER_SAFETENSORS_H_
#define DAPQ_WORKER_SAFETENSORS_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/mapped_file.h"

namespace dapq::worker {

enum class SafetensorsDType { kF32 = 0, kF16 = 1, kBF16 = 2 };

// "F32", "F16", "BF16" (the names used in the file header).
const char* SafetensorsDTypeName(SafetensorsDType dtype);
// Bytes per element: 4, 2, 2.
size_t SafetensorsDTypeSize(SafetensorsDType dtype);

// One tensor inside a mapped file. `data` points into the mapping and is valid while the mapping
// lives (the SafetensorsFile, or whoever took its mapping with ReleaseMapping()). `data` is not
// necessarily aligned to the element size.
struct TensorView {
  SafetensorsDType dtype = SafetensorsDType::kF32;
  std::vector<int64_t> shape;  // [] for a scalar
  const uint8_t* data = nullptr;
  size_t bytes = 0;  // == NumElements() * SafetensorsDTypeSize(dtype)

  int64_t NumElements() const;
};

// A validated, memory-mapped safetensors file.
// Thread-safety: immutable after Open; any thread may read it. Move-only (owns the mapping).
class SafetensorsFile {
 public:
  // Errors: NotFound (missing file), InvalidArgument for a malformed file: shorter than 8 bytes,
  // header length beyond the file or >= 100 MB, header not a JSON object, an unsupported dtype
  // (the message names the tensor and the dtype), a bad shape, or data_offsets outside the data
  // section or disagreeing with the shape. Every message names the path.
  static absl::StatusOr<SafetensorsFile> Open(const std::string& path);

  SafetensorsFile() = default;
  SafetensorsFile(SafetensorsFile&&) = default;
  SafetensorsFile& operator=(SafetensorsFile&&) = default;

  const std::string& path() const { return path_; }
  // Tensor names in sorted order ("__metadata__" excluded).
  std::vector<std::string> Names() const;
  bool Has(const std::string& name) const { return tensors_.count(name) != 0; }
  // NotFound (naming the tensor and the file) when absent.
  absl::StatusOr<TensorView> Get(const std::string& name) const;

  // Hands over the mapping (e.g. to ModelWeights::KeepMapping) so that views taken earlier stay
  // valid after this object is gone. The mapping's address does not change when it moves.
  // Afterwards this object must not be used for Get().
  MappedFile ReleaseMapping() { return std::move(file_); }

 private:
  std::string path_;
  MappedFile file_;
  std::map<std::string, TensorView> tensors_;
};

// A float32 tensor to write. `data` holds NumElements(shape) floats, row-major.
struct NamedTensor {
  std::string name;
  std::vector<int64_t> shape;
  const float* data = nullptr;
};

// Writes `tensors` as F32, in the given order, to `path` (through a temporary file in the same
// directory that is renamed over `path`, so readers never see a partial file).
// InvalidArgument for duplicate or reserved ("__metadata__") names, negative dimensions, or null
// data for a non-empty tensor; the errno-derived code (naming the path) for I/O failures.
absl::Status WriteSafetensors(const std::string& path, const std::vector<NamedTensor>& tensors);

// Decodes `view` into `out` (view.NumElements() floats). Handles unaligned data.
void ConvertToF32(const TensorView& view, float* out);

}  // namespace dapq::worker

#endif  // DAPQ_WORKER_SAFETENSORS_H_
