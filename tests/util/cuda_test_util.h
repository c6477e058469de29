// File: tests/util/cuda_test_util.h
// DAPQ_SKIP_IF_NO_CUDA(): skips a GPU test (with the reason) when no CUDA device is usable, so
// GPU test binaries start and list their tests on CPU-only machines. CUDA builds only.
#ifndef DAPQ_TESTS_UTIL_CUDA_TEST_UTIL_H_
#define DAPQ_TESTS_UTIL_CUDA_TEST_UTIL_H_

#include <cuda_runtime.h>

#include "gtest/gtest.h"

#define DAPQ_SKIP_IF_NO_CUDA()                                             \
  do {                                                                     \
    int dapq_device_count_ = 0;                                            \
    const cudaError_t dapq_err_ = cudaGetDeviceCount(&dapq_device_count_); \
    if (dapq_err_ != cudaSuccess || dapq_device_count_ == 0) {             \
      GTEST_SKIP() << "no CUDA device: " << cudaGetErrorString(dapq_err_); \
    }                                                                      \
  } while (0)

#endif  // DAPQ_TESTS_UTIL_CUDA_TEST_UTIL_H_
