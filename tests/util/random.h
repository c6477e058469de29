// File: tests/util/random.h
// Seeded random test inputs. Header-only.
#ifndef DAPQ_TESTS_UTIL_RANDOM_H_
#define DAPQ_TESTS_UTIL_RANDOM_H_

#include <cstdint>
#include <random>
#include <vector>

namespace dapq::testing {

// n floats drawn uniformly from [lo, hi) by a generator seeded with `seed`.
inline std::vector<float> UniformFloats(size_t n, uint64_t seed, float lo = -1.0f,
                                        float hi = 1.0f) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

}  // namespace dapq::testing

#endif  // DAPQ_TESTS_UTIL_RANDOM_H_
