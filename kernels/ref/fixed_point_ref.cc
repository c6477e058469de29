// File: kernels/ref/fixed_point_ref.cc
// Scores to fixed point on the CPU: kernels/fixed_point.h's ScoreToFixedPoint per element.
#include "kernels/fixed_point.h"
#include "kernels/ref/ref_ops.h"

namespace dapq::kernels::ref {

absl::Status ScoresToFixedPointRef(const FixedPointParams& p) {
  for (long i = 0; i < p.n; ++i) p.out[i] = ScoreToFixedPoint(p.scores[i]);
  return absl::OkStatus();
}

}  // namespace dapq::kernels::ref
