// File: kernels/kernels_ref_test.cc
// CPU kernels against straightforward double-precision loops: GEMM (strided, transposed, m=1),
// RMSNorm, softmax, SwiGLU; validation errors name the field; CUDA requests without a CUDA
// build return Unimplemented. Shapes include 1, primes and non-multiples of the vector width.
// Tolerances scale with the values and the sums' lengths (tests/util/tolerance.h).
#include <cmath>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/activation.h"
#include "kernels/gemm.h"
#include "kernels/rms_norm.h"
#include "kernels/softmax.h"
#include "tests/util/status_matchers.h"
#include "tests/util/tolerance.h"

namespace dapq::kernels {
namespace {
using ::dapq::testing::AllClose;
using ::dapq::testing::Fp32Tolerance;
using ::dapq::testing::IsOk;
using ::dapq::testing::MaxAbs;
using ::dapq::testing::StatusIs;
using ::testing::HasSubstr;

std::vector<float> RandomVector(size_t n, uint64_t seed, float scale = 1.0f) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> dist(-scale, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

TEST(GemmTest, MatchesNaiveForAwkwardShapesAndStrides) {
  for (auto [m, n, k] : {std::tuple{1, 1, 1}, {1, 17, 13}, {3, 7, 5}, {31, 29, 67}, {64, 65, 33}}) {
    for (bool trans_b : {true, false}) {
      SCOPED_TRACE(::testing::Message()
                   << "m=" << m << " n=" << n << " k=" << k << " trans_b=" << trans_b << " seed=7");
      const int lda = k + 3, ldb = (trans_b ? k : n) + 2, ldc = n + 1;
      auto a = RandomVector(static_cast<size_t>(m) * lda, 7);
      auto b = RandomVector(static_cast<size_t>(trans_b ? n : k) * ldb, 8);
      auto c = RandomVector(static_cast<size_t>(m) * ldc, 9);
      const auto c0 = c;
      GemmParams p{m, n, k, a.data(), lda, b.data(), ldb, trans_b, c.data(), ldc, 0.5f, 2.0f};
      ASSERT_THAT(Gemm(p), IsOk());
      std::vector<float> got;  // the m x n result without the row padding
      std::vector<double> expected;
      for (int i = 0; i < m; ++i) {
        for (int j = 0; j < n; ++j) {
          double acc = 0;
          for (int t = 0; t < k; ++t) {
            const float bv =
                trans_b ? b[static_cast<size_t>(j) * ldb + t] : b[static_cast<size_t>(t) * ldb + j];
            acc += static_cast<double>(a[static_cast<size_t>(i) * lda + t]) * bv;
          }
          expected.push_back(0.5 * acc + 2.0 * c0[static_cast<size_t>(i) * ldc + j]);
          got.push_back(c[static_cast<size_t>(i) * ldc + j]);
        }
      }
      // k products, then alpha and beta: k + 2 roundings deep.
      EXPECT_TRUE(AllClose(got, expected, Fp32Tolerance(MaxAbs(expected), k + 2)));
    }
  }
}

TEST(GemmTest, RejectsBadStrides) {
  float x = 0;
  GemmParams p{2, 2, 4, &x, 3, &x, 4, true, &x, 2, 1, 0};
  EXPECT_THAT(Gemm(p), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("lda=3")));
}

TEST(RmsNormTest, MatchesDefinition) {
  for (int dim : {1, 7, 64, 257}) {
    const int rows = 3, stride = dim + 5;
    auto x = RandomVector(static_cast<size_t>(rows) * stride, dim);
    auto w = RandomVector(dim, dim + 1);
    std::vector<float> out(static_cast<size_t>(rows) * stride);
    ASSERT_THAT(RmsNorm({rows, dim, x.data(), stride, w.data(), out.data(), stride, 1e-5f}),
                IsOk());
    std::vector<float> got;
    std::vector<double> expected;
    for (int r = 0; r < rows; ++r) {
      double ss = 0;
      for (int i = 0; i < dim; ++i) ss += double(x[r * stride + i]) * x[r * stride + i];
      const double scale = 1.0 / std::sqrt(ss / dim + 1e-5);
      for (int i = 0; i < dim; ++i) {
        expected.push_back(w[i] * scale * x[r * stride + i]);
        got.push_back(out[r * stride + i]);
      }
    }
    // A sum of dim squares, then rsqrt and two products.
    EXPECT_TRUE(AllClose(got, expected, Fp32Tolerance(MaxAbs(expected), dim + 3))) << "dim=" << dim;
  }
}

TEST(RmsNormTest, InPlaceAndZeroInput) {
  std::vector<float> x(5, 0.0f), w(5, 1.0f);
  ASSERT_THAT(RmsNorm({1, 5, x.data(), 5, w.data(), x.data(), 5, 1e-5f}), IsOk());
  for (float v : x) EXPECT_EQ(v, 0.0f);
  EXPECT_THAT(RmsNorm({1, 0, x.data(), 5, w.data(), x.data(), 5, 1e-5f}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("dim=0")));
}

TEST(SoftmaxTest, RowsSumToOneAndAreStable) {
  std::vector<float> x = {1000.0f, 1001.0f, 999.0f, 0.0f, -3.0f, 2.0f, 5.0f, 5.0f};
  ASSERT_THAT(Softmax({2, 3, x.data(), 4}), IsOk());
  const double e0 = std::exp(-1.0), e2 = std::exp(-2.0);
  const double tol = Fp32Tolerance(1.0, 3 + 2);  // probabilities; 3 exps, a 3-term sum, a divide
  EXPECT_NEAR(x[1], 1.0 / (1 + e0 + e2), tol);
  EXPECT_NEAR(x[0], e0 / (1 + e0 + e2), tol);
  EXPECT_EQ(x[3], 0.0f);  // outside the row (stride 4, cols 3): untouched
  EXPECT_NEAR(x[4] + x[5] + x[6], 1.0, tol);
  EXPECT_EQ(x[7], 5.0f);
}

TEST(SwiGluTest, MatchesDefinition) {
  auto g = RandomVector(37, 1, 6.0f), u = RandomVector(37, 2);
  std::vector<float> out(37);
  ASSERT_THAT(SwiGlu({1, 37, g.data(), 37, u.data(), 37, out.data(), 37}), IsOk());
  std::vector<double> expected(37);
  for (int i = 0; i < 37; ++i) expected[i] = g[i] / (1.0 + std::exp(-double(g[i]))) * u[i];
  // Elementwise: exp, an add, a divide and two products per element.
  EXPECT_TRUE(AllClose(out, expected, Fp32Tolerance(MaxAbs(expected), 5)));
}

TEST(DispatchTest, CudaWithoutACudaBuildIsUnimplemented) {
  float x = 1, w = 1;
  const Stream cuda{Backend::kCuda, nullptr};
  // Every op has a CUDA kernel in CUDA builds (tests/parity runs them); none without CUDA.
#if !DAPQ_HAVE_CUDA
  GemmParams g{1, 1, 1, &x, 1, &w, 1, true, &x, 1, 1, 0};
  EXPECT_THAT(Gemm(g, cuda), StatusIs(absl::StatusCode::kUnimplemented, HasSubstr("Gemm")));
  EXPECT_THAT(RmsNorm({1, 1, &x, 1, &w, &x, 1, 1e-5f}, cuda),
              StatusIs(absl::StatusCode::kUnimplemented, HasSubstr("built without CUDA")));
#else
  GTEST_SKIP() << "a CUDA build: every op has a kernel";
#endif
}

}  // namespace
}  // namespace dapq::kernels
