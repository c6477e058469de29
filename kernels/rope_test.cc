// File: kernels/rope_test.cc
// RoPE: llama2.c's interleaved formula, half-split = interleaved under the dimension
// permutation, position 0 is the identity, dot products depend on relative position only,
// Llama-3 scaling against hand-computed frequencies, bad configs. Tolerances:
// tests/util/tolerance.h.
#include "kernels/rope.h"

#include <cmath>
#include <numbers>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "tests/util/random.h"
#include "tests/util/status_matchers.h"
#include "tests/util/tolerance.h"

namespace dapq::kernels {
namespace {
using ::dapq::testing::Fp32Tolerance;
using ::dapq::testing::StatusIs;

std::vector<float> Random(size_t n, uint64_t seed) { return testing::UniformFloats(n, seed); }

TEST(RopeTest, InterleavedMatchesLlama2cFormula) {
  const int hd = 8, heads = 2;
  auto inv = ComputeRopeInvFreq({hd, 10000.0f, RopeLayout::kInterleaved, {}});
  ASSERT_TRUE(inv.ok());
  auto x = Random(heads * hd, 1);
  const auto orig = x;
  const int32_t pos = 37;
  ASSERT_TRUE(
      Rope({1, heads, hd, x.data(), heads * hd, &pos, inv->data(), RopeLayout::kInterleaved}).ok());
  for (int i = 0; i < heads * hd; i += 2) {
    const int head_dim = i % hd;
    const float freq = 1.0f / std::pow(10000.0f, head_dim / static_cast<float>(hd));
    const float val = pos * freq;
    EXPECT_FLOAT_EQ(x[i], orig[i] * std::cos(val) - orig[i + 1] * std::sin(val));
    EXPECT_FLOAT_EQ(x[i + 1], orig[i] * std::sin(val) + orig[i + 1] * std::cos(val));
  }
}

TEST(RopeTest, HalfSplitEqualsPermutedInterleaved) {
  for (int hd : {2, 8, 128}) {
    auto inv = ComputeRopeInvFreq({hd, 500000.0f, RopeLayout::kHalfSplit, {}});
    ASSERT_TRUE(inv.ok());
    auto inter = Random(3 * hd, hd);
    std::vector<float> half(3 * hd);
    for (int h = 0; h < 3; ++h) {
      for (int i = 0; i < hd / 2; ++i) {
        half[h * hd + i] = inter[h * hd + 2 * i];
        half[h * hd + hd / 2 + i] = inter[h * hd + 2 * i + 1];
      }
    }
    const int32_t pos = 1234;
    ASSERT_TRUE(
        Rope({1, 3, hd, inter.data(), 3 * hd, &pos, inv->data(), RopeLayout::kInterleaved}).ok());
    ASSERT_TRUE(
        Rope({1, 3, hd, half.data(), 3 * hd, &pos, inv->data(), RopeLayout::kHalfSplit}).ok());
    for (int h = 0; h < 3; ++h) {
      for (int i = 0; i < hd / 2; ++i) {
        EXPECT_EQ(half[h * hd + i], inter[h * hd + 2 * i]);
        EXPECT_EQ(half[h * hd + hd / 2 + i], inter[h * hd + 2 * i + 1]);
      }
    }
  }
}

TEST(RopeTest, PositionZeroIsIdentityAndDotDependsOnRelativePosition) {
  const int hd = 16;
  auto inv = ComputeRopeInvFreq({hd, 10000.0f, RopeLayout::kHalfSplit, {}});
  ASSERT_TRUE(inv.ok());
  auto q = Random(hd, 3), k = Random(hd, 4);
  auto q0 = q;
  const int32_t zero = 0;
  ASSERT_TRUE(Rope({1, 1, hd, q0.data(), hd, &zero, inv->data(), RopeLayout::kHalfSplit}).ok());
  EXPECT_EQ(q0, q);
  auto dot_at = [&](int32_t pq, int32_t pk) {
    auto a = q, b = k;
    EXPECT_TRUE(Rope({1, 1, hd, a.data(), hd, &pq, inv->data(), RopeLayout::kHalfSplit}).ok());
    EXPECT_TRUE(Rope({1, 1, hd, b.data(), hd, &pk, inv->data(), RopeLayout::kHalfSplit}).ok());
    double s = 0;
    for (int i = 0; i < hd; ++i) s += double(a[i]) * b[i];
    return s;
  };
  // hd products of at most max|q| max|k|, each rotated by angles up to 107 rad.
  const double term = dapq::testing::MaxAbs(q) * dapq::testing::MaxAbs(k);
  EXPECT_NEAR(dot_at(10, 3), dot_at(107, 100), dapq::testing::Fp32RopeTolerance(term, hd, 107));
}

TEST(RopeTest, Llama3ScalingMatchesHandComputation) {
  RopeConfig c{128, 500000.0f, RopeLayout::kHalfSplit, {8.0f, 1.0f, 4.0f, 8192}};
  auto scaled = ComputeRopeInvFreq(c);
  c.scaling.factor = 0;
  auto plain = ComputeRopeInvFreq(c);
  ASSERT_TRUE(scaled.ok() && plain.ok());
  int low = 0, mid = 0, high = 0;
  std::vector<double> expected_freq(64);
  for (int i = 0; i < 64; ++i) {
    const double f = (*plain)[i];
    const double wavelen = 2 * std::numbers::pi / f;
    double expected;
    if (wavelen < 8192.0 / 4) {
      expected = f;
      ++high;
    } else if (wavelen > 8192.0 / 1) {
      expected = f / 8;
      ++low;
    } else {
      const double smooth = (8192.0 / wavelen - 1) / (4 - 1);
      expected = (1 - smooth) * f / 8 + smooth * f;
      ++mid;
    }
    expected_freq[i] = expected;
  }
  // Relative per element (the frequencies span six orders of magnitude): a handful of fp32 ops.
  EXPECT_TRUE(dapq::testing::AllClose(*scaled, expected_freq, 0, Fp32Tolerance(1.0, 5)));
  EXPECT_GT(low, 0);
  EXPECT_GT(mid, 0);
  EXPECT_GT(high, 0);
}

TEST(RopeTest, BadConfigsAreRejected) {
  EXPECT_THAT(ComputeRopeInvFreq({7, 10000.0f, RopeLayout::kInterleaved, {}}),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("head_dim=7")));
  EXPECT_THAT(ComputeRopeInvFreq({8, 0.5f, RopeLayout::kInterleaved, {}}),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("theta")));
  EXPECT_THAT(ComputeRopeInvFreq({8, 1e4f, RopeLayout::kInterleaved, {8.0f, 4.0f, 1.0f, 8192}}),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("rope_scaling")));
}

}  // namespace
}  // namespace dapq::kernels
