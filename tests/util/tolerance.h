// File: tests/util/tolerance.h
// How close two fp32 results must be, decided once for every test.
//
// Why not a fixed 1e-5: the CPU kernels call OpenBLAS, which picks its sgemm/sgemv kernel per CPU
// (Haswell, SkylakeX, Cooperlake, Zen...; OPENBLAS_CORETYPE overrides it). The kernels block the
// reduction differently and use FMA or not, so the same product is summed in another order and
// rounds differently. An absolute bound that ignores the size of the values and the length of
// the sums passes on one machine and fails on the next (issue #10: TP=1 vs TP=2 logits differed
// by 1.14e-5 against a 1e-5 bound under another coretype).
//
// The model. fp32 has eps = 2^-23 (unit roundoff u = eps/2). A dot product of n terms, in any
// order and with or without FMA, has error <= n*u*sum|terms| (Higham, Accuracy and Stability of
// Numerical Algorithms, §3.1); that worst case needs every rounding to push the same way.
// Rounding errors behave as independent zero-mean noise, so in practice the error grows like
// sqrt(n)*u*sum|terms|, and exceeding lambda times that is exponentially unlikely in lambda^2
// (Higham & Mary 2019, "A new approach to probabilistic rounding error analysis"). Tests know the
// magnitude of the result better than sum|terms|, so the bound is stated with
//   scale:         max |expected| over the whole compared tensor (MaxAbs), or a bound on it the
//                  test knows (a convex combination of V rows is at most max|v|). Over the
//                  tensor, not per element: an element that cancelled to ~0 still carries the
//                  rounding error of terms as large as its neighbours'.
//   reduction_len: the length of the sums behind one element. For a chain (a dot product, then a
//                  softmax over n keys, then a weighted sum), add the lengths: independent errors
//                  add in quadrature, like one sum of the total length. Elementwise ops (exp, a
//                  division) count about one each; 1 is the minimum. DecoderReductionLength
//                  adds up one forward pass of a model.
// and the tolerance is
//   Fp32Tolerance(scale, n) = kFp32SafetyFactor * eps * sqrt(n) * scale.
// eps (= 2u) rather than u because both sides usually carry rounding error (TP=1 against TP=2,
// two OpenBLAS kernels); against a double reference that is a factor of 2 to spare. RoPE angles
// add a term linear in the angle (Fp32RopeTolerance).
//
// The safety factor, 4. Measured at factor 1, the ratio error / (eps sqrt(n) scale) is at most
// 0.38 over every test that uses this header, under the OpenBLAS coretypes Cooperlake (this
// machine's default), SkylakeX, Haswell, Zen, Sandybridge and Prescott; dot products summed
// forward, backward, pairwise and in eight FMA lanes give 0.2 to 0.33 for every n from 1 to 4096
// (tolerance_test.cc): the ratio does not drift with n, which supports the sqrt(n) form. A factor
// of 4 leaves a 10x margin over the worst of these. Bugs stay far outside: one element missing
// from one FFN all-reduce moves stories260K's TP=2 logits by 0.7 (~1700x the bound); an
// off-by-one causal mask moves attention outputs by over 100x the bound; a dot product missing a
// term fails (tolerance_test.cc).
//
// Exact results stay exact: greedy tokens, bit-identical paths (paged vs contiguous attention,
// block size) and file round trips use EXPECT_EQ, never this header.
//
// Usage:
//   const double tol = Fp32Tolerance(MaxAbs(expected), k);  // a GEMM with inner dimension k
//   EXPECT_TRUE(AllClose(actual, expected, tol)) << "m=" << m;
//   EXPECT_NEAR(softmax[1], analytic, Fp32Tolerance(1.0, 3));
//   Fp32Tolerance(MaxAbs(logits_tp1), DecoderReductionLength(model.config, prompt_len))
#ifndef DAPQ_TESTS_UTIL_TOLERANCE_H_
#define DAPQ_TESTS_UTIL_TOLERANCE_H_

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <sstream>

#include "gtest/gtest.h"

namespace dapq::testing {

// fp32 machine epsilon: the spacing of floats in [1, 2).
inline constexpr double kFp32Eps = 0x1p-23;

// Multiplies the sqrt(n) rounding model; the header comment justifies the value.
inline constexpr double kFp32SafetyFactor = 4;

// Absolute tolerance for fp32 results of magnitude `scale` computed through sums of
// `reduction_len` terms (values below 1 count as 1). Thread-safe; pure.
inline double Fp32Tolerance(double scale, int64_t reduction_len) {
  const double n = static_cast<double>(std::max<int64_t>(reduction_len, 1));
  return kFp32SafetyFactor * kFp32Eps * std::sqrt(n) * std::abs(scale);
}

// For results that went through RoPE with angles up to `max_angle` radians (the largest position
// when inv_freq <= 1): the fp32 angle pos * inv_freq rounds once, an absolute error up to
// max_angle * eps / 2 that turns a rotated pair by that much. It grows linearly with the angle, not
// like a sum, so it is added to the reduction's tolerance instead of being folded into n.
inline double Fp32RopeTolerance(double scale, int64_t reduction_len, double max_angle) {
  return Fp32Tolerance(scale, reduction_len) +
         Fp32Tolerance(scale, 1) * std::max(std::abs(max_angle), 1.0);
}

// The reduction length behind one logit of a Llama-style decoder over a context of `context`
// tokens: per layer two RMSNorm sums (dim each), the Q/K/V and gate/up
// projections (dim each), the attention scores (head_dim), the softmax denominator and the
// weighted values (context each), the output projection (q_dim) and the down projection
// (hidden_dim); then the final RMSNorm and the classifier (dim each).
// `config` is a worker::ModelConfig (a template so that this header needs no worker target).
template <typename ModelConfig>
int64_t DecoderReductionLength(const ModelConfig& config, int context) {
  const int64_t per_layer = int64_t{4} * config.dim + config.head_dim + int64_t{2} * context +
                            config.q_dim() + config.hidden_dim;
  return config.n_layers * per_layer + int64_t{2} * config.dim;
}

// max |x| over `values` (0 when empty); NaN is ignored.
template <typename T>
double MaxAbs(std::span<const T> values) {
  double m = 0;
  for (const T& v : values) m = std::max(m, std::abs(static_cast<double>(v)));
  return m;
}
inline double MaxAbs(std::span<const float> values) { return MaxAbs<float>(values); }
inline double MaxAbs(std::span<const double> values) { return MaxAbs<double>(values); }

namespace internal {

template <typename A, typename E>
::testing::AssertionResult AllCloseImpl(std::span<const A> actual, std::span<const E> expected,
                                        double atol, double rtol) {
  if (actual.size() != expected.size()) {
    return ::testing::AssertionFailure()
           << "size " << actual.size() << " != expected size " << expected.size();
  }
  // Non-finite values first (STYLE.md §2.5): they must equal the expected value exactly.
  for (size_t i = 0; i < actual.size(); ++i) {
    const double a = actual[i], e = expected[i];
    if ((!std::isfinite(a) || !std::isfinite(e)) && !(a == e)) {
      return ::testing::AssertionFailure()
             << "non-finite value at [" << i << "]: actual " << a << ", expected " << e;
    }
  }
  size_t failures = 0, worst = 0, max_at = 0;
  double worst_excess = -1, max_diff = 0;
  for (size_t i = 0; i < actual.size(); ++i) {
    const double a = actual[i], e = expected[i];
    if (!std::isfinite(a)) continue;  // equal infinities
    const double diff = std::abs(a - e), bound = atol + rtol * std::abs(e);
    if (diff > max_diff) max_diff = diff, max_at = i;
    if (diff > bound) {
      ++failures;
      if (diff - bound > worst_excess) worst_excess = diff - bound, worst = i;
    }
  }
  std::ostringstream os;
  os.precision(9);
  if (failures == 0) {
    os << "all " << actual.size() << " within atol " << atol << " + rtol " << rtol
       << " * |expected|; max |diff| " << max_diff << " at [" << max_at << "]";
    return ::testing::AssertionSuccess() << os.str();
  }
  const double a = actual[worst], e = expected[worst];
  os << failures << " of " << actual.size() << " elements exceed atol " << atol << " + rtol "
     << rtol << " * |expected|; worst at [" << worst << "]: actual " << a << ", expected " << e
     << ", |diff| " << std::abs(a - e) << " > " << atol + rtol * std::abs(e) << " (max |diff| "
     << max_diff << " at [" << max_at << "])";
  return ::testing::AssertionFailure() << os.str();
}

}  // namespace internal

// Every element must satisfy |actual[i] - expected[i]| <= atol + rtol * |expected[i]|; non-finite
// values must match exactly (NaN never does). On failure the message counts the failing elements
// and names the worst one (largest excess over its bound) with its index and both values.
// Use as EXPECT_TRUE(AllClose(...)) << context, so the failure points at the caller's line.
inline ::testing::AssertionResult AllClose(std::span<const float> actual,
                                           std::span<const float> expected, double atol,
                                           double rtol = 0) {
  return internal::AllCloseImpl(actual, expected, atol, rtol);
}
inline ::testing::AssertionResult AllClose(std::span<const float> actual,
                                           std::span<const double> expected, double atol,
                                           double rtol = 0) {
  return internal::AllCloseImpl(actual, expected, atol, rtol);
}

}  // namespace dapq::testing

#endif  // DAPQ_TESTS_UTIL_TOLERANCE_H_
