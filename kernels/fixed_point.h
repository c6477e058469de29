// File: kernels/fixed_point.h
// Token scores to the exact fixed-point form the TP ranks all-reduce before choosing keep-sets:
// int64 in units of 2^-32, rounded to nearest (halves away from zero), clamped to 2^52 (so sums
// over 2^11 heads fit int64), zero for scores <= 0 and NaN. Integer sums do not depend on the
// order of addition, so every rank, and every backend, gets the same importance and the same
// keep-set. ScoreToFixedPoint is the one definition: `__host__ __device__` under nvcc, so the CPU
// reference and the CUDA kernel run the same code.
#ifndef DAPQ_KERNELS_FIXED_POINT_H_
#define DAPQ_KERNELS_FIXED_POINT_H_

#include <math.h>

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/paged_index.h"  // DAPQ_HOST_DEVICE
#include "kernels/types.h"

namespace dapq::kernels {

inline constexpr double kFixedPointScale = 4294967296.0;      // 2^32
inline constexpr double kFixedPointMax = 4503599627370496.0;  // 2^52

DAPQ_HOST_DEVICE inline int64_t ScoreToFixedPoint(float score) {
  if (!(score > 0.0f)) return 0;  // negative, zero or NaN
  const double scaled = static_cast<double>(score) * kFixedPointScale;
  return static_cast<int64_t>(::llround(scaled < kFixedPointMax ? scaled : kFixedPointMax));
}

// out[i] = ScoreToFixedPoint(scores[i]) for i < n.
struct FixedPointParams {
  long n = 0;
  const float* scores = nullptr;
  int64_t* out = nullptr;
};

absl::Status ScoresToFixedPoint(const FixedPointParams& p, Stream stream = {});
absl::Status ValidateFixedPoint(const FixedPointParams& p);

}  // namespace dapq::kernels

#endif  // DAPQ_KERNELS_FIXED_POINT_H_
