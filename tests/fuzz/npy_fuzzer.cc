// File: tests/fuzz/npy_fuzzer.cc
// .npy files (common/npy.h, ParseNpy): any bytes parse to an array or InvalidArgument; a parsed
// array holds exactly the product of its shape in elements, in the vector of its kind.
#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "common/npy.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::StatusOr<dapq::NpyArray> array =
      dapq::ParseNpy(dapq::fuzz::AsView(data, size), "fuzz");
  if (!array.ok()) {
    FUZZ_CHECK(array.status().code() == absl::StatusCode::kInvalidArgument);
    return 0;
  }
  uint64_t count = 1;
  for (int64_t d : array->shape) {
    FUZZ_CHECK(d >= 0);
    count *= static_cast<uint64_t>(d);
  }
  FUZZ_CHECK(count <= size);  // every element has at least 4 bytes in the input
  if (array->is_float()) {
    FUZZ_CHECK(array->f32.size() == count && array->i64.empty());
  } else {
    FUZZ_CHECK(array->i64.size() == count && array->f32.empty());
  }
  FUZZ_CHECK(array->size() == static_cast<int64_t>(count));
  return 0;
}
