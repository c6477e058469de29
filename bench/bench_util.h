// File: bench/bench_util.h
// Helpers shared by the benchmarks: seeded, replayable random fills (a counter-based splitmix64,
// identical on every machine) and bandwidth probes for the memory limit that the memory-bound
// kernels and the decode step are compared against:
//  - memcpy (as STREAM's Copy, a copy of N bytes counts 2 * N: read + write);
//  - a read-only sum (decode's access pattern: weights and KV are only read), for comparison;
//    it is not an upper bound (OpenBLAS sgemv, with its prefetching kernels, can beat it).
// Thread-safety: the functions are reentrant; they start and join their own threads.
#ifndef DAPQ_BENCH_BENCH_UTIL_H_
#define DAPQ_BENCH_BENCH_UTIL_H_

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

#include "common/host_buffer.h"

namespace dapq::bench {

// splitmix64 finaliser: any element can be produced from (seed, index) alone.
inline uint64_t Mix(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// dst[i] = lo + (hi - lo) * u(seed, i), u uniform in [0, 1).
inline void FillUniform(float* dst, size_t n, uint64_t seed, float lo = -1.0f, float hi = 1.0f) {
  const uint64_t base = Mix(seed);
  const float scale = (hi - lo) / 16777216.0f;
  for (size_t i = 0; i < n; ++i) {
    dst[i] = lo + scale * static_cast<float>(Mix(base + i) >> 40);
  }
}

inline std::vector<float> RandomVector(size_t n, uint64_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::vector<float> v(n);
  FillUniform(v.data(), n, seed, lo, hi);
  return v;
}

// n floats uniform in [lo, hi) in a HostArray (common/host_buffer.h: huge pages when large, like
// the engine's weights), so benchmarks stream the same kind of memory the engine does.
inline HostArray<float> RandomHostArray(size_t n, uint64_t seed, float lo = -1.0f,
                                        float hi = 1.0f) {
  HostArray<float> v = MakeZeroedHostArray<float>(n);
  FillUniform(v.get(), n, seed, lo, hi);
  return v;
}

inline double SecondsSince(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Copies src to dst (`bytes` each) split into `threads` contiguous slices, one per thread
// (the calling thread takes slice 0).
inline void ParallelMemcpy(char* dst, const char* src, size_t bytes, int threads) {
  if (threads <= 1) {
    std::memcpy(dst, src, bytes);
    return;
  }
  const size_t slice = (bytes + threads - 1) / threads;
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t) {
    const size_t begin = std::min(bytes, slice * t);
    const size_t end = std::min(bytes, begin + slice);
    pool.emplace_back([=] { std::memcpy(dst + begin, src + begin, end - begin); });
  }
  std::memcpy(dst, src, std::min(bytes, slice));
  for (std::thread& t : pool) t.join();
}

// Best-of-`repeats` copy bandwidth in bytes/s (2 * bytes per copy) over `bytes`-sized buffers,
// which the caller sizes well past the last-level cache. One untimed copy first faults the pages.
inline double MemcpyBandwidth(size_t bytes, int threads, int repeats) {
  // Host arrays: the memory kind of the engine's weights (huge pages where the kernel allows).
  HostArray<char> src = MakeZeroedHostArray<char>(bytes), dst = MakeZeroedHostArray<char>(bytes);
  std::memset(src.get(), 1, bytes);
  ParallelMemcpy(dst.get(), src.get(), bytes, threads);
  double best = 0.0;
  for (int r = 0; r < repeats; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    ParallelMemcpy(dst.get(), src.get(), bytes, threads);
    best = std::max(best, 2.0 * static_cast<double>(bytes) / SecondsSince(t0));
  }
  return best;
}

// Sum of p[0, n), read as four contiguous quarters at once (four sequential streams, which this
// kind of machine serves faster than one: 71-78 against 54-61 GB/s here, bench/README.md), with
// 16 independent accumulators per stream, so the loop vectorises without -ffast-math and is
// limited by the loads, not by the add latency.
inline float SumFloats(const float* p, size_t n) {
  constexpr int kStreams = 4;
  const size_t part = n / kStreams / 16 * 16;
  float acc[kStreams][16] = {};
  for (size_t i = 0; i < part; i += 16) {
    for (int s = 0; s < kStreams; ++s) {
      for (int j = 0; j < 16; ++j) acc[s][j] += p[s * part + i + j];
    }
  }
  float sum = 0.0f;
  for (size_t i = kStreams * part; i < n; ++i) sum += p[i];
  for (const auto& stream : acc) {
    for (float a : stream) sum += a;
  }
  return sum;
}

// Sums `count` floats split into `threads` contiguous slices, one per thread (the calling
// thread takes slice 0).
inline float ParallelSum(const float* p, size_t count, int threads) {
  const int t_count = std::max(threads, 1);
  const size_t slice = (count + t_count - 1) / t_count;
  std::vector<float> partial(t_count, 0.0f);
  std::vector<std::thread> pool;
  for (int t = 1; t < t_count; ++t) {
    const size_t begin = std::min(count, slice * t);
    const size_t end = std::min(count, begin + slice);
    pool.emplace_back([=, &partial] { partial[t] = SumFloats(p + begin, end - begin); });
  }
  partial[0] = SumFloats(p, std::min(count, slice));
  for (std::thread& t : pool) t.join();
  float sum = 0.0f;
  for (float s : partial) sum += s;
  return sum;
}

// Best-of-`repeats` read-only bandwidth in bytes/s over a `bytes`-sized buffer (sized by the
// caller well past the last-level cache).
inline double ReadBandwidth(size_t bytes, int threads, int repeats) {
  const size_t count = bytes / sizeof(float);
  HostArray<float> data = MakeZeroedHostArray<float>(count);  // as MemcpyBandwidth
  std::fill(data.get(), data.get() + count, 1.0f);
  volatile float sink = ParallelSum(data.get(), count, threads);
  double best = 0.0;
  for (int r = 0; r < repeats; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    sink = ParallelSum(data.get(), count, threads);
    best = std::max(best, static_cast<double>(count * sizeof(float)) / SecondsSince(t0));
  }
  static_cast<void>(sink);
  return best;
}

}  // namespace dapq::bench

#endif  // DAPQ_BENCH_BENCH_UTIL_H_
