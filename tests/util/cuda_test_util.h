// File: tests/util/cuda_test_util.h
// DAPQ_SKIP_IF_NO_CUDA(): skips a GPU test (with the reason) when no CUDA device is usable, so
// GPU test binaries start and list their tests on CPU-only machines. With DAPQ_REQUIRE_GPU=1 in
// the environment (scripts/gpu_check.sh sets it on GPU machines) the same condition fails the
// test instead: a GPU machine with a broken driver must not report every GPU test as passed.
// CUDA builds only.
#ifndef DAPQ_TESTS_UTIL_CUDA_TEST_UTIL_H_
#define DAPQ_TESTS_UTIL_CUDA_TEST_UTIL_H_

#include <cuda_runtime.h>

#include <cstdlib>
#include <cstring>

#include "gtest/gtest.h"

namespace dapq::testing {
// Whether DAPQ_REQUIRE_GPU=1 turns GPU skips into failures.
inline bool GpuRequired() {
  const char* v = std::getenv("DAPQ_REQUIRE_GPU");
  return v != nullptr && std::strcmp(v, "1") == 0;
}
}  // namespace dapq::testing

#define DAPQ_SKIP_IF_NO_CUDA()                                                                \
  do {                                                                                        \
    int dapq_device_count_ = 0;                                                               \
    const cudaError_t dapq_err_ = cudaGetDeviceCount(&dapq_device_count_);                    \
    if (dapq_err_ != cudaSuccess || dapq_device_count_ == 0) {                                \
      if (::dapq::testing::GpuRequired()) {                                                   \
        FAIL() << "DAPQ_REQUIRE_GPU=1 but no CUDA device: " << cudaGetErrorString(dapq_err_); \
      }                                                                                       \
      GTEST_SKIP() << "no CUDA device: " << cudaGetErrorString(dapq_err_);                    \
    }                                                                                         \
  } while (0)

#endif  // DAPQ_TESTS_UTIL_CUDA_TEST_UTIL_H_
