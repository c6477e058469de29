// File: tests/parity/gemm_parity_test.cc
// Parity of the CUDA Gemm (cuBLASLt, kernels/cuda/gemm.cu) and Pool1d (kernels/cuda/pooling.cu)
// with the CPU references, plus the CUDA backend's rejection of bad params (which needs no GPU).
//
// Gemm tolerance, per element, from the magnitudes of that element's terms (not tuned):
//   S_ij = sum_l |a_il| |op(b)_lj|, computed from the host data (AbsProductSums).
//   fp32 weights: each side is an fp32 sum of k products, scaled by alpha, plus beta * c0; in any
//     summation order, with or without FMA, its error is at most (k + 2) * u * T_ij with
//     T_ij = |alpha| S_ij + |beta| |c0_ij| and u = eps32 / 2 (Higham, Accuracy and Stability of
//     Numerical Algorithms, §3.1), so |g - r| <= (k + 2) * eps32 * T_ij. We allow 8 times that.
//     Real errors grow like sqrt(k), so at k = 4099 this worst-case form is loose; at k = 1 it is
//     2.9e-6 relative, and TF32 (inputs rounded to 11 bits) would miss it by two orders of
//     magnitude.
//   bf16 weights: the GPU rounds A to bf16 (unit roundoff 2^-8: |a - bf16(a)| <= 2^-8 |a|), the
//     CPU reference keeps A in fp32 and widens B (or, through oneDNN at m > 64, rounds A as
//     well), so the rounding of A adds at most 2^-8 * S_ij: the bound is the fp32 one plus that.
//     This term is attained at k = 1 (one product, a just above a power of two), so it has no
//     margin to cut.
//   plus kTinyAtol, for an element whose terms are all zero.
// NaN/Inf are checked first; every element of C's [m, n] block must be within its bound and the
// padding columns of C (n..ldc) must be untouched. Pool1d: max is bit-identical to the reference
// (same comparisons); average is compared with the default fp32 ExpectClose.
// Seeds are fixed and printed (SCOPED_TRACE). GPU cases skip without a CUDA device.
#include <bit>
#include <cmath>
#include <cstdint>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/gemm.h"
#include "kernels/pooling.h"
#include "tests/parity/parity_util.h"
#include "tests/util/cuda_test_util.h"
#include "tests/util/status_matchers.h"

namespace dapq::kernels {
namespace {

using ::dapq::testing::IsOk;
using ::dapq::testing::StatusIs;
using parity::DeviceBuffer;
using parity::ExpectClose;
using parity::kGpu;
using parity::Random;

constexpr double kEps32 = 0x1p-23;
constexpr double kBf16Roundoff = 0x1p-8;  // bf16 keeps 8 significant bits
constexpr double kGemmSafetyFactor = 8;
constexpr double kTinyAtol = 1e-30;

std::vector<float> Abs(const std::vector<float>& v) {
  std::vector<float> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = std::abs(v[i]);
  return out;
}

// S[i * n + j] = sum_l |a_il| |op(b)_lj| over C's [m, n] block of the product p describes (its
// shape, lda, ldb, trans_b), from |a| and |b| (fp32; bf16 weights widened, which is exact).
// Computed by the CPU Gemm: the terms are all non-negative, so the fp32 sums are within k * 2^-24
// of exact, relatively (at most 2.5e-4 here), which the safety factor absorbs many times over.
std::vector<float> AbsProductSums(const GemmParams& p, const std::vector<float>& abs_a,
                                  const std::vector<float>& abs_b) {
  std::vector<float> s(static_cast<size_t>(p.m) * p.n, 0.0f);
  GemmParams q;
  q.m = p.m;
  q.n = p.n;
  q.k = p.k;
  q.a = abs_a.data();
  q.lda = p.lda;
  q.b = abs_b.data();
  q.ldb = p.ldb;
  q.trans_b = p.trans_b;
  q.c = s.data();
  q.ldc = p.n;
  const absl::Status status = Gemm(q);
  EXPECT_TRUE(status.ok()) << status;
  return s;
}

// The per-element bound on |gpu - ref| (see the file comment) for the product p describes, over
// C's [m, n] block, dense. sums: AbsProductSums; c0: C before the call (row stride p.ldc). With
// bf16 weights one side rounded A to bf16.
std::vector<double> GemmBound(const GemmParams& p, const std::vector<float>& sums,
                              const std::vector<float>& c0) {
  const double fp32_factor = kGemmSafetyFactor * (p.k + 2) * kEps32;
  const bool bf16 = p.b_dtype == DType::kBF16;
  std::vector<double> bound(sums.size());
  for (int i = 0; i < p.m; ++i) {
    for (int j = 0; j < p.n; ++j) {
      const double s = sums[static_cast<size_t>(i) * p.n + j];
      const double c = c0[static_cast<size_t>(i) * p.ldc + j];
      const double terms = std::abs(p.alpha) * s + std::abs(p.beta) * std::abs(c);
      double b = fp32_factor * terms + kTinyAtol;
      if (bf16) b += kBf16Roundoff * std::abs(p.alpha) * s;
      bound[static_cast<size_t>(i) * p.n + j] = b;
    }
  }
  return bound;
}

// For the product p describes; gpu, ref, c0: [m, ldc]. NaN/Inf first; then every element of
// C's [m, n] block within its bound (bound: dense [m, n]); then the padding columns n..ldc equal
// to c0, bit for bit. The message names the first bad element, both values, the difference and
// the bound, and how many are bad.
::testing::AssertionResult WithinBound(const GemmParams& p, const std::vector<float>& gpu,
                                       const std::vector<float>& ref, const std::vector<float>& c0,
                                       const std::vector<double>& bound) {
  const int m = p.m, n = p.n, ldc = p.ldc;
  if (gpu.size() != ref.size() || gpu.size() != c0.size()) {
    return ::testing::AssertionFailure()
           << "sizes differ: gpu " << gpu.size() << ", ref " << ref.size() << ", c0 " << c0.size();
  }
  for (size_t i = 0; i < gpu.size(); ++i) {
    if (!std::isfinite(gpu[i]) || !std::isfinite(ref[i])) {
      return ::testing::AssertionFailure() << "non-finite value at row " << i / ldc << " col "
                                           << i % ldc << ": gpu " << gpu[i] << ", ref " << ref[i];
    }
  }
  size_t bad = 0;
  ::testing::Message first;  // prints floats with enough digits to tell them apart
  for (int i = 0; i < m; ++i) {
    for (int j = 0; j < ldc; ++j) {
      const size_t at = static_cast<size_t>(i) * ldc + j;
      if (j >= n) {
        if (std::bit_cast<uint32_t>(gpu[at]) != std::bit_cast<uint32_t>(c0[at])) {
          if (bad++ == 0) {
            first << "padding of C written at row " << i << " col " << j << ": gpu " << gpu[at]
                  << ", before " << c0[at];
          }
        }
        continue;
      }
      const double diff = std::abs(static_cast<double>(gpu[at]) - ref[at]);
      const double b = bound[static_cast<size_t>(i) * n + j];
      if (diff > b) {
        if (bad++ == 0) {
          first << "first bad element at row " << i << " col " << j << ": gpu " << gpu[at]
                << ", ref " << ref[at] << ", |diff| " << diff << " > bound " << b;
        }
      }
    }
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << bad << " of " << gpu.size() << " elements bad; " << first;
}

// gpu and ref equal bit for bit; the message names the first difference.
::testing::AssertionResult BitIdentical(const std::vector<float>& gpu,
                                        const std::vector<float>& ref) {
  if (gpu.size() != ref.size()) {
    return ::testing::AssertionFailure() << "size " << gpu.size() << " != " << ref.size();
  }
  for (size_t i = 0; i < gpu.size(); ++i) {
    if (std::bit_cast<uint32_t>(gpu[i]) != std::bit_cast<uint32_t>(ref[i])) {
      return ::testing::AssertionFailure()
             << "first difference at [" << i << "]: gpu " << gpu[i] << ", ref " << ref[i];
    }
  }
  return ::testing::AssertionSuccess();
}

// Row strides are the logical width plus a few elements (padding filled with random values, so
// reading it would show).
constexpr int kPadA = 5, kPadB = 3, kPadC = 2;

// fp32 weights, C = alpha * A * op(B) + beta * C with random C. The weights of a (n, k, trans_b)
// shape are shared by every m.
TEST(KernelsParityTest, Gemm) {
  DAPQ_SKIP_IF_NO_CUDA();
  const float alpha = 0.75f, beta = -1.25f;
  for (int n : {1, 96, 4099}) {
    for (int k : {1, 64, 4099}) {
      for (bool trans_b : {true, false}) {
        const int ldb = (trans_b ? k : n) + kPadB;
        const uint64_t b_seed = 7919u * n + 31u * k + trans_b;
        const std::vector<float> b = Random(static_cast<size_t>(trans_b ? n : k) * ldb, b_seed);
        const std::vector<float> abs_b = Abs(b);
        DeviceBuffer db(b);
        for (int m : {1, 3, 17, 64, 129}) {
          const int lda = k + kPadA, ldc = n + kPadC;
          const uint64_t seed = b_seed * 1000003u + m;
          SCOPED_TRACE(::testing::Message()
                       << "m=" << m << " n=" << n << " k=" << k << " trans_b=" << trans_b
                       << " lda=" << lda << " ldb=" << ldb << " ldc=" << ldc << " b_seed=" << b_seed
                       << " seed=" << seed);
          const std::vector<float> a = Random(static_cast<size_t>(m) * lda, seed);
          const std::vector<float> c0 = Random(static_cast<size_t>(m) * ldc, seed + 1);
          std::vector<float> c = c0;
          GemmParams p;
          p.m = m;
          p.n = n;
          p.k = k;
          p.a = a.data();
          p.lda = lda;
          p.b = b.data();
          p.ldb = ldb;
          p.trans_b = trans_b;
          p.c = c.data();
          p.ldc = ldc;
          p.alpha = alpha;
          p.beta = beta;
          ASSERT_THAT(Gemm(p), IsOk());
          DeviceBuffer da(a), dc(c0);
          GemmParams g = p;
          g.a = da.get();
          g.b = db.get();
          g.c = dc.get();
          ASSERT_THAT(Gemm(g, kGpu), IsOk());
          const std::vector<double> bound = GemmBound(p, AbsProductSums(p, Abs(a), abs_b), c0);
          EXPECT_TRUE(WithinBound(p, dc.Download(), c, c0, bound));
        }
      }
    }
  }
}

// k = 0 is C = beta * C (beta 0: zeros, C not read); m = 0 does nothing. Exact: one fp32
// multiply, the same on both sides.
TEST(KernelsParityTest, GemmEmptyShapes) {
  DAPQ_SKIP_IF_NO_CUDA();
  const int m = 3, n = 5, ldc = n + kPadC;
  for (float beta : {-1.25f, 0.0f}) {
    SCOPED_TRACE(::testing::Message() << "beta=" << beta << " seed=11");
    const std::vector<float> c0 = Random(static_cast<size_t>(m) * ldc, 11);
    std::vector<float> want = c0;
    for (int i = 0; i < m; ++i) {
      for (int j = 0; j < n; ++j) {
        float& x = want[static_cast<size_t>(i) * ldc + j];
        x = beta == 0.0f ? 0.0f : beta * x;
      }
    }
    DeviceBuffer da(std::vector<float>(1, 1.0f)), db(std::vector<float>(n, 1.0f)), dc(c0);
    GemmParams g;
    g.m = m;
    g.n = n;
    g.k = 0;
    g.a = da.get();
    g.lda = 1;
    g.b = db.get();
    g.ldb = 1;
    g.trans_b = true;
    g.c = dc.get();
    g.ldc = ldc;
    g.alpha = 0.75f;
    g.beta = beta;
    ASSERT_THAT(Gemm(g, kGpu), IsOk());
    EXPECT_TRUE(BitIdentical(dc.Download(), want));
    g.m = 0;
    ASSERT_THAT(Gemm(g, kGpu), IsOk());
    EXPECT_TRUE(BitIdentical(dc.Download(), want));
  }
}

// bf16 weights (a linear layer: trans_b, alpha 1, beta 0); C starts random and is overwritten.
TEST(KernelsParityTest, GemmBf16Weights) {
  DAPQ_SKIP_IF_NO_CUDA();
  for (int n : {1, 96, 4099}) {
    for (int k : {1, 64, 4099}) {
      const int ldb = k + kPadB;
      const uint64_t b_seed = 104729u * n + 17u * k;
      const std::vector<float> b_f32 = Random(static_cast<size_t>(n) * ldb, b_seed);
      std::vector<uint16_t> b(b_f32.size());
      std::vector<float> abs_b(b_f32.size());  // |widened weights|: exact in fp32
      for (size_t i = 0; i < b.size(); ++i) {
        b[i] = FloatToBf16(b_f32[i]);
        abs_b[i] = std::abs(Bf16ToFloat(b[i]));
      }
      DeviceBuffer db(b, 0);
      for (int m : {1, 3, 17, 64, 129}) {
        const int lda = k + kPadA, ldc = n + kPadC;
        const uint64_t seed = b_seed * 1000003u + m;
        SCOPED_TRACE(::testing::Message()
                     << "m=" << m << " n=" << n << " k=" << k << " lda=" << lda << " ldb=" << ldb
                     << " ldc=" << ldc << " b_seed=" << b_seed << " seed=" << seed);
        const std::vector<float> a = Random(static_cast<size_t>(m) * lda, seed);
        const std::vector<float> c0 = Random(static_cast<size_t>(m) * ldc, seed + 1);
        std::vector<float> c = c0;
        GemmParams p;
        p.m = m;
        p.n = n;
        p.k = k;
        p.a = a.data();
        p.lda = lda;
        p.ldb = ldb;
        p.trans_b = true;
        p.c = c.data();
        p.ldc = ldc;
        p.b_dtype = DType::kBF16;
        p.b_bf16 = b.data();
        ASSERT_THAT(Gemm(p), IsOk());
        DeviceBuffer da(a), dc(c0);
        GemmParams g = p;
        g.a = da.get();
        g.b_bf16 = db.as<uint16_t>();
        g.c = dc.get();
        ASSERT_THAT(Gemm(g, kGpu), IsOk());
        const std::vector<double> bound = GemmBound(p, AbsProductSums(p, Abs(a), abs_b), c0);
        EXPECT_TRUE(WithinBound(p, dc.Download(), c, c0, bound));
      }
    }
  }
}

// Bad params through the CUDA backend: dispatch validates before launching, so this needs no GPU
// and passes host pointers that must never be dereferenced (C stays as it was).
TEST(KernelsParityTest, GemmRejectsBadShapeOnCudaBackend) {
  std::vector<float> a(64, 1.0f), b(64, 1.0f), c(64, 7.0f);
  std::vector<uint16_t> b16(64, 0);
  GemmParams good;
  good.m = 2;
  good.n = 3;
  good.k = 4;
  good.a = a.data();
  good.lda = 4;
  good.b = b.data();
  good.ldb = 4;
  good.trans_b = true;
  good.c = c.data();
  good.ldc = 3;
  const auto invalid = StatusIs(absl::StatusCode::kInvalidArgument);

  GemmParams p = good;
  p.lda = 3;  // < k
  EXPECT_THAT(Gemm(p, kGpu), invalid);
  p = good;
  p.ldc = 2;  // < n
  EXPECT_THAT(Gemm(p, kGpu), invalid);
  p = good;
  p.trans_b = false;
  p.ldb = 2;  // < n
  EXPECT_THAT(Gemm(p, kGpu), invalid);
  p = good;
  p.m = -1;
  EXPECT_THAT(Gemm(p, kGpu), invalid);
  p = good;
  p.c = nullptr;
  EXPECT_THAT(Gemm(p, kGpu), invalid);
  p = good;
  p.b = nullptr;
  p.b_dtype = DType::kBF16;
  p.b_bf16 = b16.data();
  p.beta = 0.5f;  // bf16 weights only as a linear layer
  EXPECT_THAT(Gemm(p, kGpu), invalid);
  p.beta = 0.0f;
  p.trans_b = false;
  EXPECT_THAT(Gemm(p, kGpu), invalid);
  EXPECT_EQ(c, std::vector<float>(64, 7.0f));
}

TEST(KernelsParityTest, Pool1dRejectsBadParamsOnCudaBackend) {
  std::vector<float> x(12, 1.0f), out(12, 7.0f);
  Pool1dParams p{3, 4, 2, PoolType::kMax, x.data(), out.data()};  // even kernel
  EXPECT_THAT(Pool1d(p, kGpu), StatusIs(absl::StatusCode::kInvalidArgument));
  p.kernel = 3;
  p.out = x.data();  // aliases x
  EXPECT_THAT(Pool1d(p, kGpu), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_EQ(out, std::vector<float>(12, 7.0f));
}

TEST(KernelsParityTest, Pool1d) {
  DAPQ_SKIP_IF_NO_CUDA();
  const int rows = 3;
  for (PoolType type : {PoolType::kMax, PoolType::kAvg}) {
    for (int kernel : {1, 3, 7}) {
      for (int cols : {1, 2, 5, 1000}) {
        const uint64_t seed = 1009u * cols + 13u * kernel + static_cast<int>(type);
        SCOPED_TRACE(::testing::Message() << "type=" << static_cast<int>(type) << " kernel="
                                          << kernel << " cols=" << cols << " seed=" << seed);
        const std::vector<float> x = Random(static_cast<size_t>(rows) * cols, seed, 4.0f);
        std::vector<float> out(x.size(), 0.0f);
        DeviceBuffer dx(x), dout(out);
        ASSERT_THAT(Pool1d({rows, cols, kernel, type, x.data(), out.data()}), IsOk());
        ASSERT_THAT(Pool1d({rows, cols, kernel, type, dx.get(), dout.get()}, kGpu), IsOk());
        if (type == PoolType::kMax) {
          EXPECT_TRUE(BitIdentical(dout.Download(), out));
        } else {
          ExpectClose(dout.Download(), out);
        }
      }
    }
  }
}

}  // namespace
}  // namespace dapq::kernels
