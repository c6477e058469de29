// File: tests/parity/parity_util.h
// What every parity test file shares: seeded random inputs, a device buffer that uploads a host
// vector and downloads it back, the default fp32 closeness check and the CUDA stream handle.
// Only the parity tests (label gpu, built with CUDA) include it.
#ifndef DAPQ_TESTS_PARITY_PARITY_UTIL_H_
#define DAPQ_TESTS_PARITY_PARITY_UTIL_H_

#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/types.h"
#include "tests/util/tolerance.h"

namespace dapq::kernels::parity {

constexpr float kAtol = 1e-5f, kRtol = 1e-5f;

inline std::vector<float> Random(size_t n, uint64_t seed, float scale = 1.0f) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> d(-scale, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

// A device copy of a host vector, copied back by Download().
class DeviceBuffer {
 public:
  explicit DeviceBuffer(const std::vector<float>& host) : n_(host.size()) {
    EXPECT_EQ(cudaMalloc(&ptr_, n_ * sizeof(float)), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(ptr_, host.data(), n_ * sizeof(float), cudaMemcpyHostToDevice),
              cudaSuccess);
  }
  template <typename T>
  explicit DeviceBuffer(const std::vector<T>& host, int) : n_(host.size()) {
    EXPECT_EQ(cudaMalloc(&ptr_, n_ * sizeof(T)), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(ptr_, host.data(), n_ * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
  }
  ~DeviceBuffer() { cudaFree(ptr_); }
  float* get() { return static_cast<float*>(ptr_); }
  template <typename T>
  T* as() {
    return static_cast<T*>(ptr_);
  }
  std::vector<float> Download() {
    std::vector<float> h(n_);
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(h.data(), ptr_, n_ * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
    return h;
  }

 private:
  void* ptr_ = nullptr;
  size_t n_;
};

// NaN/Inf first, then |g - r| <= kAtol + kRtol * |r| for every element.
inline void ExpectClose(const std::vector<float>& gpu, const std::vector<float>& ref) {
  ASSERT_TRUE(::dapq::testing::AllClose(gpu, ref, kAtol, kRtol));
}

inline const Stream kGpu{Backend::kCuda, nullptr};

// `values` in the pool's element type, as bytes.
inline std::vector<uint8_t> Encode(const std::vector<float>& values, DType dtype) {
  const size_t elem = DTypeSize(dtype);
  std::vector<uint8_t> bytes(values.size() * elem);
  for (size_t i = 0; i < values.size(); ++i) {
    if (dtype == DType::kF32) {
      std::memcpy(bytes.data() + i * 4, &values[i], 4);
    } else {
      const uint16_t h = dtype == DType::kBF16 ? FloatToBf16(values[i]) : FloatToF16(values[i]);
      std::memcpy(bytes.data() + i * 2, &h, 2);
    }
  }
  return bytes;
}

}  // namespace dapq::kernels::parity

#endif  // DAPQ_TESTS_PARITY_PARITY_UTIL_H_
