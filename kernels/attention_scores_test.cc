// File: kernels/attention_scores_test.cc
// Attention-mass scoring and pooling against naive double-precision definitions, including
// causal key limits, query weights, tile boundaries, and PyTorch's avg-pool edge semantics.
// Tolerances: tests/util/tolerance.h.
#include "kernels/attention_scores.h"

#include <cmath>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/pooling.h"
#include "tests/util/status_matchers.h"
#include "tests/util/tolerance.h"

namespace dapq::kernels {
namespace {
using ::dapq::testing::IsOk;
using ::dapq::testing::StatusIs;

std::vector<float> Random(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> d(0, 1);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

TEST(AttentionScoresTest, MatchesNaiveWithLimitsAndWeights) {
  for (auto [w, n, d] : {std::tuple{1, 1, 8}, {3, 17, 8}, {32, 600, 16}, {70, 1100, 128}}) {
    for (bool causal : {false, true}) {
      SCOPED_TRACE(::testing::Message()
                   << "w=" << w << " n=" << n << " d=" << d << " causal=" << causal);
      auto q = Random(static_cast<size_t>(w) * d, w + n), k = Random(static_cast<size_t>(n) * d, d);
      std::vector<int32_t> limits(w);
      std::vector<float> weights(w);
      for (int i = 0; i < w; ++i) {
        limits[i] = n - w + i + 1;
        weights[i] = 1.0f / (1 + i);
      }
      std::vector<float> scores(n, 0.5f);  // accumulates onto existing values
      AttentionScoresParams p{w,
                              n,
                              d,
                              q.data(),
                              d,
                              k.data(),
                              causal ? limits.data() : nullptr,
                              weights.data(),
                              1.0f / std::sqrt(float(d)),
                              scores.data()};
      ASSERT_THAT(AttentionScores(p), IsOk());
      std::vector<double> expected(n, 0.5);
      for (int i = 0; i < w; ++i) {
        const int lim = causal ? limits[i] : n;
        std::vector<double> s(lim);
        double mx = -1e300, sum = 0;
        for (int j = 0; j < lim; ++j) {
          double dot = 0;
          for (int t = 0; t < d; ++t) dot += double(q[i * d + t]) * k[j * d + t];
          mx = std::max(mx, s[j] = dot / std::sqrt(double(d)));
        }
        for (double& x : s) sum += (x = std::exp(x - mx));
        for (int j = 0; j < lim; ++j) expected[j] += weights[i] * s[j] / sum;
      }
      // Scores (d), a softmax over up to n keys (denominator and divide), then w weighted rows.
      const double tol =
          ::dapq::testing::Fp32Tolerance(::dapq::testing::MaxAbs(expected), d + n + 1 + w);
      ASSERT_TRUE(::dapq::testing::AllClose(scores, expected, tol));
    }
  }
}

TEST(AttentionScoresTest, RejectsBadLimits) {
  float x = 0;
  int32_t limit = 5;
  AttentionScoresParams p{1, 4, 1, &x, 1, &x, &limit, nullptr, 1.0f, &x};
  EXPECT_THAT(AttentionScores(p), StatusIs(absl::StatusCode::kInvalidArgument,
                                           ::testing::HasSubstr("key_limits[0]=5")));
}

TEST(PoolingTest, MaxPoolSamePaddingIgnoresPad) {
  const std::vector<float> x = {-5, -1, -3, -4, -2};
  std::vector<float> out(5);
  ASSERT_THAT(Pool1d({1, 5, 3, PoolType::kMax, x.data(), out.data()}), IsOk());
  EXPECT_EQ(out, (std::vector<float>{-1, -1, -1, -2, -2}));  // -inf padding, never 0
}

TEST(PoolingTest, AvgPoolCountsZeroPaddingLikePyTorch) {
  const std::vector<float> x = {1, 2, 3, 4, 5, 6};
  std::vector<float> out(6);
  ASSERT_THAT(Pool1d({1, 6, 5, PoolType::kAvg, x.data(), out.data()}), IsOk());
  // torch.nn.functional.avg_pool1d(x, 5, stride=1, padding=2) divides by 5 at the edges too.
  const std::vector<float> expected = {6 / 5.f, 10 / 5.f, 15 / 5.f, 20 / 5.f, 18 / 5.f, 15 / 5.f};
  for (int i = 0; i < 6; ++i) EXPECT_FLOAT_EQ(out[i], expected[i]) << i;
}

TEST(PoolingTest, KernelOneCopiesAndEvenKernelIsRejected) {
  const std::vector<float> x = {3, 1, 2};
  std::vector<float> out(3);
  ASSERT_THAT(Pool1d({1, 3, 1, PoolType::kMax, x.data(), out.data()}), IsOk());
  EXPECT_EQ(out, x);
  EXPECT_THAT(Pool1d({1, 3, 4, PoolType::kMax, x.data(), out.data()}),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("kernel=4")));
}

}  // namespace
}  // namespace dapq::kernels
