// File: tests/util/tolerance_test.cc
// The fp32 tolerance helper: its formula, the decoder path length, AllClose's verdicts and
// messages, and its calibration: dot products summed in other orders (as OpenBLAS kernels do)
// stay inside the bound, and a dot product missing one term does not.
#include "tests/util/tolerance.h"

#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dapq::testing {
namespace {
using ::testing::HasSubstr;

TEST(Fp32ToleranceTest, ScalesWithMagnitudeAndSqrtOfLength) {
  const double unit = kFp32SafetyFactor * std::numeric_limits<float>::epsilon();
  EXPECT_EQ(kFp32Eps, std::numeric_limits<float>::epsilon());
  EXPECT_DOUBLE_EQ(Fp32Tolerance(1.0, 1), unit);
  EXPECT_DOUBLE_EQ(Fp32Tolerance(3.0, 1), 3 * unit);
  EXPECT_DOUBLE_EQ(Fp32Tolerance(-3.0, 1), 3 * unit);
  EXPECT_DOUBLE_EQ(Fp32Tolerance(1.0, 64), 8 * unit);
  EXPECT_DOUBLE_EQ(Fp32Tolerance(1.0, 0), unit);  // lengths below 1 count as 1
  EXPECT_EQ(Fp32Tolerance(0.0, 100), 0.0);
  // RoPE adds a term linear in the angle.
  EXPECT_DOUBLE_EQ(Fp32RopeTolerance(2.0, 16, 100), Fp32Tolerance(2.0, 16) + 200 * unit);
}

struct FakeConfig {  // the fields of worker::ModelConfig that DecoderReductionLength reads
  int dim, hidden_dim, n_layers, n_heads, head_dim;
  int q_dim() const { return n_heads * head_dim; }
};

TEST(Fp32ToleranceTest, DecoderReductionLengthAddsEveryLayersSums) {
  const FakeConfig stories260k{64, 172, 5, 8, 8};
  // Per layer 4 * 64 + 8 + 2 * 17 + 64 + 172 = 534; then the final norm and classifier.
  EXPECT_EQ(DecoderReductionLength(stories260k, 17), 5 * 534 + 2 * 64);
}

TEST(MaxAbsTest, TakesTheLargestMagnitude) {
  EXPECT_EQ(MaxAbs(std::vector<float>{1, -7, 3}), 7.0);
  EXPECT_EQ(MaxAbs(std::vector<double>{}), 0.0);
}

TEST(AllCloseTest, AcceptsValuesWithinTheBound) {
  const std::vector<float> actual = {1.0f, 2.0f, -3.0f};
  EXPECT_TRUE(AllClose(actual, actual, 0));  // atol 0: exact
  EXPECT_TRUE(AllClose(actual, std::vector<double>{1.0005, 2.0, -3.001}, 1e-3));
  EXPECT_TRUE(AllClose(actual, std::vector<double>{1.0, 2.0, -3.03}, 0, 0.01));  // relative
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_TRUE(AllClose(std::vector<float>{inf, -inf}, std::vector<float>{inf, -inf}, 0));
}

TEST(AllCloseTest, NamesTheWorstElementAndCountsTheFailures) {
  const std::vector<float> actual = {1.0f, 2.0f, 3.0f, 4.0f};
  const std::vector<double> expected = {1.0, 2.1, 3.0, 4.5};
  const ::testing::AssertionResult r = AllClose(actual, expected, 0.05);
  EXPECT_FALSE(r);
  EXPECT_THAT(r.message(), HasSubstr("2 of 4 elements exceed atol 0.05"));
  EXPECT_THAT(r.message(), HasSubstr("worst at [3]: actual 4, expected 4.5, |diff| 0.5 > 0.05"));
}

TEST(AllCloseTest, RejectsSizeMismatchAndNonFiniteValues) {
  EXPECT_THAT(AllClose(std::vector<float>{1}, std::vector<float>{1, 2}, 1).message(),
              HasSubstr("size 1 != expected size 2"));
  const float nan = std::numeric_limits<float>::quiet_NaN();
  // NaN never matches, not even NaN; it is reported before an ordinary out-of-bound element.
  const ::testing::AssertionResult r =
      AllClose(std::vector<float>{5, nan}, std::vector<float>{1, nan}, 1);
  EXPECT_FALSE(r);
  EXPECT_THAT(r.message(), HasSubstr("non-finite value at [1]"));
  EXPECT_FALSE(AllClose(std::vector<float>{1}, std::vector<float>{nan}, 1e9));
  EXPECT_FALSE(AllClose(std::vector<float>{std::numeric_limits<float>::infinity()},
                        std::vector<float>{1}, 1e9));
}

// Calibration on the quantity the bound is designed for: C = A B with fp32 inputs, K-term dot
// products summed in fp32 in the orders CPU kernels use, against a double reference.
enum class Order { kForward, kBackward, kPairwise, kBlocked8Fma };

float Dot(const float* a, const float* b, int k, Order order) {
  switch (order) {
    case Order::kForward: {
      float s = 0;
      for (int i = 0; i < k; ++i) s += a[i] * b[i];
      return s;
    }
    case Order::kBackward: {
      float s = 0;
      for (int i = k - 1; i >= 0; --i) s += a[i] * b[i];
      return s;
    }
    case Order::kPairwise: {
      if (k <= 4) return Dot(a, b, k, Order::kForward);
      const int h = k / 2;
      return Dot(a, b, h, Order::kPairwise) + Dot(a + h, b + h, k - h, Order::kPairwise);
    }
    case Order::kBlocked8Fma: {  // eight accumulators with fused multiply-add, as SIMD kernels
      float acc[8] = {};
      for (int i = 0; i < k; ++i) acc[i % 8] = std::fma(a[i], b[i], acc[i % 8]);
      float s = 0;
      for (float x : acc) s += x;
      return s;
    }
  }
  return 0;
}

TEST(Fp32ToleranceCalibrationTest, ReorderedDotProductsPassAndAMissingTermFails) {
  constexpr int kRows = 16, kCols = 16;
  for (int k : {1, 7, 64, 1000, 4096}) {
    SCOPED_TRACE(::testing::Message() << "k=" << k << " seed=" << k);
    std::mt19937_64 rng(k);
    std::normal_distribution<float> normal(0, 1);
    std::vector<float> a(static_cast<size_t>(kRows) * k), b(static_cast<size_t>(kCols) * k);
    for (float& x : a) x = normal(rng);
    for (float& x : b) x = normal(rng);
    std::vector<double> exact;
    for (int i = 0; i < kRows; ++i) {
      for (int j = 0; j < kCols; ++j) {
        double s = 0;
        for (int t = 0; t < k; ++t) s += double(a[i * k + t]) * b[j * k + t];
        exact.push_back(s);
      }
    }
    const double tol = Fp32Tolerance(MaxAbs(exact), k);
    std::vector<std::vector<float>> by_order;
    for (Order order : {Order::kForward, Order::kBackward, Order::kPairwise, Order::kBlocked8Fma}) {
      std::vector<float> c;
      for (int i = 0; i < kRows; ++i) {
        for (int j = 0; j < kCols; ++j) c.push_back(Dot(&a[i * k], &b[j * k], k, order));
      }
      EXPECT_TRUE(AllClose(c, exact, tol)) << "order " << static_cast<int>(order);
      by_order.push_back(std::move(c));
    }
    // fp32 against fp32 in another order: the situation of TP=1 against TP=2.
    EXPECT_TRUE(AllClose(by_order[0], by_order[3], tol));
    if (k > 1) {  // a bug: the last term of every dot product dropped
      std::vector<float> bug;
      for (int i = 0; i < kRows; ++i) {
        for (int j = 0; j < kCols; ++j) {
          bug.push_back(Dot(&a[i * k], &b[j * k], k - 1, Order::kForward));
        }
      }
      EXPECT_FALSE(AllClose(bug, exact, tol));
    }
  }
}

}  // namespace
}  // namespace dapq::testing
