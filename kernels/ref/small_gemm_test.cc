// File: kernels/ref/small_gemm_test.cc
// SmallGemm against a double-precision product for every m it serves, k with vector tails,
// n not a multiple of the tile, and row strides (fp32 tolerance from the operands' scale); each
// row of A gives bit-identical outputs alone and in a batch, and on one or several threads;
// products it does not serve are left to OpenBLAS. bf16 weights (rounding, small m in our kernel
// on every instruction-set level, alone and in a batch, large m in oneDNN or widened panels)
// against a double product. ParallelFor covers every index once.
#include "kernels/ref/small_gemm.h"

#include <cblas.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu_threads.h"
#include "kernels/ref/bf16_matmul.h"
#include "kernels/ref/cpu_isa.h"
#include "kernels/ref/parallel_for.h"
#include "tests/util/random.h"
#include "tests/util/tolerance.h"

namespace dapq::kernels::ref {
namespace {

std::vector<float> Random(size_t n, uint64_t seed) { return testing::UniformFloats(n, seed); }

bool Served() { return std::strcmp(SmallGemmIsa(), "none") != 0; }

TEST(SmallGemmTest, MatchesADoubleProductForEveryM) {
  if (!Served()) GTEST_SKIP() << "this CPU has neither AVX2+FMA nor AVX-512F";
  uint64_t seed = 1;
  for (int m = 1; m <= kSmallGemmMaxM; ++m) {
    for (int k : {1, 7, 16, 37, 100, 256}) {
      const int n = 4 * (m % 3) + 7, lda = k + 3, ldb = k + 5, ldc = n + 2;
      const std::vector<float> a = Random(static_cast<size_t>(m) * lda, seed++);
      const std::vector<float> b = Random(static_cast<size_t>(n) * ldb, seed++);
      std::vector<float> c(static_cast<size_t>(m) * ldc, -9.0f);
      GemmParams p{m, n, k, a.data(), lda, b.data(), ldb, true, c.data(), ldc, 1.0f, 0.0f};
      ASSERT_TRUE(SmallGemm(p));
      for (int i = 0; i < m; ++i) {
        for (int j = 0; j < n; ++j) {
          double want = 0, scale = 0;  // the product, and the sum of its terms' magnitudes
          for (int t = 0; t < k; ++t) {
            const double term =
                static_cast<double>(a[i * lda + t]) * b[static_cast<size_t>(j) * ldb + t];
            want += term;
            scale += std::abs(term);
          }
          ASSERT_NEAR(c[i * ldc + j], want, dapq::testing::Fp32Tolerance(scale, k))
              << "m=" << m << " k=" << k << " (" << i << ", " << j << ")";
        }
        for (int j = n; j < ldc; ++j) ASSERT_EQ(c[i * ldc + j], -9.0f) << "past n";
      }
    }
  }
}

// product(row0, rows, c) multiplies rows [row0, row0 + rows) of A into c ([rows, n]). Runs A
// alone, `rows` rows at a time from every start in `starts`, against the whole batch of m rows:
// the bits must be the same.
void ExpectRowsAloneMatchBatch(const std::function<bool(int, int, float*)>& product, int m, int n,
                               const std::vector<int>& starts,
                               std::initializer_list<int> row_counts) {
  std::vector<float> batch(static_cast<size_t>(m) * n);
  ASSERT_TRUE(product(0, m, batch.data()));
  for (int i : starts) {
    for (int rows : row_counts) {
      if (i + rows > m) continue;
      std::vector<float> alone(static_cast<size_t>(rows) * n);
      ASSERT_TRUE(product(i, rows, alone.data()));
      ASSERT_EQ(std::memcmp(alone.data(), batch.data() + static_cast<size_t>(i) * n,
                            alone.size() * sizeof(float)),
                0)
          << "rows " << i << ".." << i + rows - 1;
    }
  }
}

TEST(SmallGemmTest, ARowGivesTheSameBitsAloneAndInABatch) {
  if (!Served()) GTEST_SKIP() << "this CPU has neither AVX2+FMA nor AVX-512F";
  // Large enough to run on the kernel threads.
  const int n = 1030, k = 1029, m = kSmallGemmMaxM;
  const std::vector<float> a = Random(static_cast<size_t>(m) * k, 7);
  const std::vector<float> b = Random(static_cast<size_t>(n) * k, 8);
  std::vector<int> every_row(m);
  std::iota(every_row.begin(), every_row.end(), 0);
  ExpectRowsAloneMatchBatch(
      [&](int row0, int rows, float* c) {
        return SmallGemm({rows, n, k, a.data() + static_cast<size_t>(row0) * k, k, b.data(), k,
                          true, c, n, 1.0f, 0.0f});
      },
      m, n, every_row, {1, 3});
}

TEST(Bf16Test, RoundsToNearestEvenAndKeepsSpecials) {
  EXPECT_EQ(FloatToBf16(1.0f), 0x3f80);
  EXPECT_EQ(Bf16ToFloat(FloatToBf16(-2.5f)), -2.5f);
  // 1 + 2^-8 lies halfway between two bf16 values: ties go to the even one (1.0).
  EXPECT_EQ(Bf16ToFloat(FloatToBf16(1.0f + 1.0f / 256)), 1.0f);
  EXPECT_EQ(Bf16ToFloat(FloatToBf16(1.0f + 3.0f / 256)), 1.0f + 4.0f / 256);
  EXPECT_TRUE(std::isnan(Bf16ToFloat(FloatToBf16(std::nanf("")))));
  EXPECT_TRUE(std::isinf(Bf16ToFloat(FloatToBf16(std::numeric_limits<float>::infinity()))));
  for (float f : {0.1f, -3.3f, 1234.5f, 1e-30f}) {  // half a unit: at most 2^-8 relative
    EXPECT_NEAR(Bf16ToFloat(FloatToBf16(f)), f, std::abs(f) / 256) << f;
  }
}

// bf16 weights through the kernel API, small m (our kernel) and large m (oneDNN's bf16 matmul,
// or widened panels for OpenBLAS without it), against a double product over the same
// (bf16-rounded) weights, and for oneDNN over the bf16-rounded activations too (what it
// multiplies; an unrounded product would be off by far more than the fp32 tolerance).
TEST(Bf16GemmTest, MatchesADoubleProductOverTheRoundedWeights) {
  const bool onednn = std::string(Bf16MatmulBackend()) != "none";
  uint64_t seed = 40;
  // 300 and 600: oneDNN runs them in pieces of 256 rows, the last one padded.
  for (int m : {1, 5, 16, 64, 70, 128, 200, 300, 600}) {
    for (int k : {9, 64, 131}) {
      const int n = 150, lda = k + 1, ldb = k + 3, ldc = n + 1;
      const std::vector<float> a = Random(static_cast<size_t>(m) * lda, seed++);
      const std::vector<float> wf = Random(static_cast<size_t>(n) * ldb, seed++);
      std::vector<uint16_t> w(wf.size());
      for (size_t i = 0; i < w.size(); ++i) w[i] = FloatToBf16(wf[i]);
      std::vector<float> c(static_cast<size_t>(m) * ldc, -9.0f);
      GemmParams p{m, n, k, a.data(), lda, nullptr, ldb, true, c.data(), ldc, 1.0f, 0.0f};
      p.b_dtype = DType::kBF16;
      p.b_bf16 = w.data();
      ASSERT_TRUE(Gemm(p).ok());
      const bool rounded_a = onednn && m > kSmallGemmMaxM;
      for (int i = 0; i < m; ++i) {
        for (int j = 0; j < n; ++j) {
          double want = 0, scale = 0;
          for (int t = 0; t < k; ++t) {
            const float x = a[i * lda + t];
            const double term = static_cast<double>(rounded_a ? Bf16ToFloat(FloatToBf16(x)) : x) *
                                Bf16ToFloat(w[static_cast<size_t>(j) * ldb + t]);
            want += term;
            scale += std::abs(term);
          }
          ASSERT_NEAR(c[i * ldc + j], want, dapq::testing::Fp32Tolerance(scale, k))
              << "m=" << m << " k=" << k << " (" << i << ", " << j << ")";
        }
        ASSERT_EQ(c[i * ldc + n], -9.0f) << "past n";
      }
    }
  }
}

// bf16 weights at small m, on every instruction-set level this CPU has (AVX-512, AVX2): a row of
// A gives the same bits alone and in a batch, and matches a double product over the rounded
// weights.
TEST(SmallGemmTest, Bf16WeightsGiveTheSameBitsAloneAndInABatch) {
  if (!Served()) GTEST_SKIP() << "this CPU has neither AVX2+FMA nor AVX-512F";
  const int n = 1030, k = 1029, m = kSmallGemmMaxM;
  const std::vector<float> a = Random(static_cast<size_t>(m) * k, 17);
  const std::vector<float> wf = Random(static_cast<size_t>(n) * k, 18);
  std::vector<uint16_t> w(wf.size());
  for (size_t i = 0; i < w.size(); ++i) w[i] = FloatToBf16(wf[i]);
  const auto product = [&](int row0, int rows, float* c) {
    GemmParams p{rows, n,    k,   a.data() + static_cast<size_t>(row0) * k, k, nullptr, k, true, c,
                 n,    1.0f, 0.0f};
    p.b_dtype = DType::kBF16;
    p.b_bf16 = w.data();
    return SmallGemm(p);
  };
  for (Isa isa : {Isa::kAvx2, Isa::kAvx512}) {
    if (static_cast<int>(isa) > static_cast<int>(DetectedIsa())) break;
    ForceIsaForTesting(isa);
    SCOPED_TRACE(IsaName(isa));
    std::vector<float> batch(static_cast<size_t>(m) * n);
    ASSERT_TRUE(product(0, m, batch.data()));
    for (int i : {0, 1, 5, 37, m - 1}) {
      double want = 0, scale = 0;
      for (int t = 0; t < k; ++t) {
        const double term =
            static_cast<double>(a[static_cast<size_t>(i) * k + t]) * Bf16ToFloat(w[t]);
        want += term;
        scale += std::abs(term);
      }
      EXPECT_NEAR(batch[static_cast<size_t>(i) * n], want, testing::Fp32Tolerance(scale, k));
    }
    ExpectRowsAloneMatchBatch(product, m, n, {0, 1, 5, 37, m - 1}, {1, 2});
  }
  ForceIsaForTesting(DetectedIsa());
}

// In-process TP ranks run the same large-m bf16 product at once (one oneDNN primitive per shape):
// each thread's result is bit-identical to the product run alone.
TEST(Bf16GemmTest, ConcurrentCallersGetTheirOwnResults) {
  const int m = 96, n = 130, k = 72;
  constexpr int kThreads = 4;
  std::vector<std::vector<float>> a(kThreads), c(kThreads), alone(kThreads);
  std::vector<uint16_t> w(static_cast<size_t>(n) * k);
  const std::vector<float> wf = Random(w.size(), 77);
  for (size_t i = 0; i < w.size(); ++i) w[i] = FloatToBf16(wf[i]);
  const auto run = [&](int t, std::vector<float>& out) {
    out.assign(static_cast<size_t>(m) * n, 0.0f);
    GemmParams p{m, n, k, a[t].data(), k, nullptr, k, true, out.data(), n, 1.0f, 0.0f};
    p.b_dtype = DType::kBF16;
    p.b_bf16 = w.data();
    for (int rep = 0; rep < 20; ++rep) EXPECT_TRUE(Gemm(p).ok());
  };
  for (int t = 0; t < kThreads; ++t) {
    a[t] = Random(static_cast<size_t>(m) * k, 80 + t);
    run(t, alone[t]);
  }
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) threads.emplace_back([&, t] { run(t, c[t]); });
  for (std::thread& th : threads) th.join();
  for (int t = 0; t < kThreads; ++t) {
    EXPECT_EQ(std::memcmp(c[t].data(), alone[t].data(), c[t].size() * sizeof(float)), 0) << t;
  }
}

// SetCpuThreads bounds every pool: ParallelFor's shares, OpenBLAS's threads, and the per-caller
// share concurrent callers get; 0 restores the default.
TEST(CpuThreadsTest, BoundsThePoolsAndSplitsBetweenCallers) {
  const int all = CpuThreads();
  SetCpuThreads(1);
  EXPECT_EQ(CpuThreads(), 1);
  EXPECT_EQ(KernelThreads(), 1);
  EXPECT_EQ(openblas_get_num_threads(), 1);
  std::atomic<int> calls{0};
  ParallelFor(100, [&](int begin, int end) {
    ++calls;
    EXPECT_EQ(begin, 0);
    EXPECT_EQ(end, 100);
  });
  EXPECT_EQ(calls.load(), 1);  // one share: the caller ran it all
  SetCpuThreads(0, 2);
  EXPECT_EQ(CpuThreads(), all);
  EXPECT_GE(KernelThreads(), 1);
  EXPECT_LE(KernelThreads(), all);
  EXPECT_EQ(CpuThreadsPerCaller(), std::max(1, all / 2));
  SetCpuThreads(0);
  EXPECT_EQ(CpuThreadsPerCaller(), all);
}

TEST(Bf16GemmTest, RejectsWhatIsNotALinearLayer) {
  float x = 0;
  uint16_t w = 0;
  GemmParams p{1, 1, 1, &x, 1, nullptr, 1, true, &x, 1, 1.0f, 0.0f};
  p.b_dtype = DType::kBF16;
  EXPECT_FALSE(Gemm(p).ok());  // no bf16 pointer
  p.b_bf16 = &w;
  EXPECT_TRUE(Gemm(p).ok());
  p.beta = 1.0f;
  EXPECT_FALSE(Gemm(p).ok());
}

TEST(SmallGemmTest, LeavesOtherProductsToOpenBlas) {
  float x = 1;
  EXPECT_FALSE(SmallGemm({kSmallGemmMaxM + 1, 1, 1, &x, 1, &x, 1, true, &x, 1, 1.0f, 0.0f}));
  EXPECT_FALSE(SmallGemm({1, 1, 1, &x, 1, &x, 1, false, &x, 1, 1.0f, 0.0f}));
  EXPECT_FALSE(SmallGemm({1, 1, 1, &x, 1, &x, 1, true, &x, 1, 0.5f, 0.0f}));
  EXPECT_FALSE(SmallGemm({1, 1, 1, &x, 1, &x, 1, true, &x, 1, 1.0f, 1.0f}));
  EXPECT_EQ(x, 1.0f);
}

TEST(ParallelForTest, CoversEveryIndexOnceFromSeveralCallers) {
  EXPECT_GE(KernelThreads(), 1);
  constexpr int kN = 1000;
  std::vector<std::atomic<int>> hits(kN);
  auto body = [&](int begin, int end) {
    for (int i = begin; i < end; ++i) hits[i].fetch_add(1);
  };
  std::vector<std::thread> callers;
  for (int t = 0; t < 3; ++t) {
    callers.emplace_back([&] {
      for (int rep = 0; rep < 50; ++rep) ParallelFor(kN, body);
    });
  }
  for (auto& t : callers) t.join();
  for (int i = 0; i < kN; ++i) ASSERT_EQ(hits[i].load(), 150) << i;
  ParallelFor(0, body);  // nothing to do
}

}  // namespace
}  // namespace dapq::kernels::ref
