// File: tests/fuzz/safetensors_fuzzer.cc
// safetensors files (worker/safetensors.h, SafetensorsFile::Open): the input is written to a
// scratch file and opened. Invariants: errors are InvalidArgument; every tensor of an opened
// file lies inside the file's data section, holds exactly NumElements() x the element size in
// bytes, and converts to fp32.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "tests/fuzz/fuzz_util.h"
#include "worker/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path =
      dapq::fuzz::WriteScratchFile("model.safetensors", dapq::fuzz::AsView(data, size));
  absl::StatusOr<dapq::worker::SafetensorsFile> file = dapq::worker::SafetensorsFile::Open(path);
  if (!file.ok()) {
    FUZZ_CHECK(file.status().code() == absl::StatusCode::kInvalidArgument);
    return 0;
  }
  FUZZ_CHECK(size >= 8);
  uint64_t header = 0;
  for (int i = 7; i >= 0; --i) header = (header << 8) | data[i];
  FUZZ_CHECK(header <= size - 8);
  std::vector<dapq::worker::TensorView> views;
  for (const std::string& name : file->Names()) {
    FUZZ_CHECK(file->Has(name) && name != "__metadata__");
    absl::StatusOr<dapq::worker::TensorView> view = file->Get(name);
    FUZZ_CHECK(view.ok());
    views.push_back(*std::move(view));
  }
  FUZZ_CHECK(file->Get("__metadata__").status().code() == absl::StatusCode::kNotFound);
  // The views stay valid with the mapping, wherever it is kept.
  const dapq::MappedFile mapping = file->ReleaseMapping();
  FUZZ_CHECK(mapping.size() == size);
  const uint8_t* section = mapping.data() + 8 + header;
  const uint8_t* end = mapping.data() + mapping.size();
  std::vector<float> out;
  for (const dapq::worker::TensorView& view : views) {
    const int64_t n = view.NumElements();
    FUZZ_CHECK(n >= 0);
    FUZZ_CHECK(static_cast<uint64_t>(n) * dapq::worker::SafetensorsDTypeSize(view.dtype) ==
               view.bytes);
    FUZZ_CHECK(view.data >= section && view.data <= end);
    FUZZ_CHECK(view.bytes <= static_cast<size_t>(end - view.data));
    out.resize(static_cast<size_t>(n));
    dapq::worker::ConvertToF32(view, out.data());
  }
  return 0;
}
