// File: kernels/attention_test.cc
// Tiled prefill and decode attention against a naive double-precision softmax(qk)v, over GQA
// groups, awkward sizes (1, primes, tiles +- 1), and a cache holding earlier tokens (past > 0);
// paged K/V (block tables, shuffled blocks, ragged per-head lengths) against the contiguous
// layout, bit for bit, with the pool in fp32, bf16 or fp16 (against the contiguous layout holding
// the same rounded values); every instruction-set level this CPU has (cpu_isa.h). The vectorised
// exponential against expf. Tolerances: tests/util/tolerance.h.
#include "kernels/attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/convert.h"
#include "kernels/cpu_threads.h"
#include "kernels/ref/attention_simd.h"
#include "kernels/ref/bf16_matmul.h"
#include "kernels/ref/cpu_isa.h"
#include "tests/util/status_matchers.h"
#include "tests/util/tolerance.h"

namespace dapq::kernels {
namespace {
using ::dapq::testing::StatusIs;

// Runs `body` once per instruction-set level this CPU has (the best one last, left in force).
template <typename F>
void ForEachIsa(F&& body) {
  for (ref::Isa isa : {ref::Isa::kNone, ref::Isa::kAvx2, ref::Isa::kAvx512}) {
    if (static_cast<int>(isa) > static_cast<int>(ref::DetectedIsa())) break;
    ref::ForceIsaForTesting(isa);
    SCOPED_TRACE(ref::IsaName(isa));
    body();
  }
  ref::ForceIsaForTesting(ref::DetectedIsa());
}

struct Case {
  int q_tokens, kv_len, q_heads, kv_heads, head_dim;
};

std::vector<float> Random(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> d(0, 1);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

// Params over contiguous K/V slabs of `capacity` slots per KV head; the caller sets `out`.
AttentionParams SlabParams(const Case& c, int capacity, const std::vector<float>& q,
                           const std::vector<float>& k, const std::vector<float>& v) {
  AttentionParams p;
  p.q_tokens = c.q_tokens;
  p.q_heads = c.q_heads;
  p.kv_heads = c.kv_heads;
  p.head_dim = c.head_dim;
  p.q = q.data();
  p.q_stride = c.q_heads * c.head_dim;
  p.k = k.data();
  p.v = v.data();
  p.kv_head_stride = static_cast<long>(capacity) * c.head_dim;
  p.kv_len = c.kv_len;
  p.out_stride = c.q_heads * c.head_dim;
  return p;
}

std::vector<double> Naive(const AttentionParams& p) {
  const int g = p.q_heads / p.kv_heads, d = p.head_dim, past = p.kv_len - p.q_tokens;
  std::vector<double> out(static_cast<size_t>(p.q_tokens) * p.q_heads * d);
  for (int t = 0; t < p.q_tokens; ++t) {
    for (int h = 0; h < p.q_heads; ++h) {
      const float* q = p.q + t * p.q_stride + h * d;
      const float* k = p.k + (h / g) * p.kv_head_stride;
      const float* v = p.v + (h / g) * p.kv_head_stride;
      const int len = past + t + 1;
      std::vector<double> s(len);
      double mx = -1e300;
      for (int j = 0; j < len; ++j) {
        double dot = 0;
        for (int i = 0; i < d; ++i) dot += double(q[i]) * k[j * d + i];
        s[j] = dot / std::sqrt(double(d));
        mx = std::max(mx, s[j]);
      }
      double sum = 0;
      for (double& x : s) sum += (x = std::exp(x - mx));
      for (int i = 0; i < d; ++i) {
        double acc = 0;
        for (int j = 0; j < len; ++j) acc += s[j] / sum * v[j * d + i];
        out[(static_cast<size_t>(t) * p.q_heads + h) * d + i] = acc;
      }
    }
  }
  return out;
}

// With `ramp` != 0, key j of each KV head is its group's first (last-token) query scaled so
// that their score is ramp * j / kv_len: the scores climb (or fall) by |ramp| over the cache.
void Check(const Case& c, bool decode, uint64_t seed, float ramp = 0.0f) {
  SCOPED_TRACE(::testing::Message()
               << "q_tokens=" << c.q_tokens << " kv_len=" << c.kv_len << " heads=" << c.q_heads
               << "/" << c.kv_heads << " d=" << c.head_dim << " decode=" << decode
               << " seed=" << seed << " ramp=" << ramp);
  const int capacity = c.kv_len + 3;  // slabs longer than the valid part
  auto q = Random(static_cast<size_t>(c.q_tokens) * c.q_heads * c.head_dim, seed);
  auto k = Random(static_cast<size_t>(c.kv_heads) * capacity * c.head_dim, seed + 1);
  for (int h = 0; ramp != 0.0f && h < c.kv_heads; ++h) {
    const int d = c.head_dim, group = c.q_heads / c.kv_heads;
    const float* qh = q.data() + static_cast<long>(c.q_tokens - 1) * c.q_heads * d + h * group * d;
    double norm2 = 0;
    for (int i = 0; i < d; ++i) norm2 += double(qh[i]) * qh[i];
    for (int j = 0; j < c.kv_len; ++j) {
      const double scale = ramp * j / c.kv_len * std::sqrt(double(d)) / norm2;
      for (int i = 0; i < d; ++i) k[(static_cast<long>(h) * capacity + j) * d + i] = scale * qh[i];
    }
  }
  auto v = Random(static_cast<size_t>(c.kv_heads) * capacity * c.head_dim, seed + 2);
  std::vector<float> out(q.size(), -7.0f);
  AttentionParams p = SlabParams(c, capacity, q, k, v);
  p.out = out.data();
  ASSERT_TRUE((decode ? AttentionDecode(p) : AttentionPrefill(p)).ok());
  const auto expected = Naive(p);
  // Each output is a convex combination of V rows, so max|v| bounds its scale; behind it are the
  // scores (head_dim), the softmax denominator and the weighted sum (kv_len each).
  const double tol =
      ::dapq::testing::Fp32Tolerance(::dapq::testing::MaxAbs(v), c.head_dim + 2 * c.kv_len);
  ASSERT_TRUE(::dapq::testing::AllClose(out, expected, tol));
}

TEST(AttentionTest, PrefillMatchesNaive) {
  const Case cases[] = {{1, 1, 1, 1, 8},       {5, 5, 8, 4, 8},     {13, 13, 6, 2, 2},
                        {64, 64, 4, 4, 16},    {65, 65, 4, 1, 16},  {257, 257, 2, 2, 8},
                        {300, 321, 4, 2, 128}, {70, 600, 2, 1, 64}, {1, 513, 4, 2, 8}};
  ForEachIsa([&] {
    uint64_t seed = 100;
    for (const Case& c : cases) Check(c, false, seed++);
  });
}

// Prefill runs its (KV head, query tile) items on the kernel threads, each item on one thread
// with single-threaded GEMMs: one thread and every thread give the same bits.
TEST(AttentionTest, PrefillBitsDoNotDependOnThreadCount) {
  const Case c{300, 333, 8, 2, 128};
  auto q = Random(static_cast<size_t>(c.q_tokens) * c.q_heads * c.head_dim, 77);
  auto k = Random(static_cast<size_t>(c.kv_heads) * c.kv_len * c.head_dim, 78);
  auto v = Random(static_cast<size_t>(c.kv_heads) * c.kv_len * c.head_dim, 79);
  AttentionParams p = SlabParams(c, c.kv_len, q, k, v);
  std::vector<float> one(q.size()), all(q.size());
  SetCpuThreads(1);
  p.out = one.data();
  ASSERT_TRUE(AttentionPrefill(p).ok());
  SetCpuThreads(0);
  p.out = all.data();
  ASSERT_TRUE(AttentionPrefill(p).ok());
  EXPECT_EQ(std::memcmp(one.data(), all.data(), one.size() * sizeof(float)), 0);
}

TEST(AttentionTest, DecodeMatchesNaive) {
  // Groups of 8 and 3 (the value pass's register tiles per group size) with head dims that leave
  // a scalar tail after the vectors. The last two: one KV head over a long cache, which split-KV
  // decode cuts into parts for the kernel threads (when there are two or more) and combines
  // through their log-sum-exp.
  const Case cases[] = {{1, 1, 1, 1, 8},      {1, 17, 8, 4, 8},    {1, 1000, 32, 8, 128},
                        {3, 40, 4, 2, 16},    {1, 300, 16, 2, 40}, {2, 77, 6, 2, 24},
                        {1, 20000, 4, 1, 16}, {2, 9001, 2, 1, 8}};
  ForEachIsa([&] {
    uint64_t seed = 200;
    for (const Case& c : cases) Check(c, true, seed++);
  });
}

TEST(AttentionTest, DecodeMergesChunksWhicheverLeads) {
  // A long cache is decoded in chunks of a few hundred slots merged through their maxima. Scores
  // climbing over the cache make every chunk the new leader (the output so far is scaled down);
  // falling ones leave the first chunk in front and later chunks' weights underflow to zero.
  const Case cases[] = {{1, 3000, 4, 4, 128}, {1, 2500, 8, 2, 64}, {1, 1100, 2, 2, 8}};
  ForEachIsa([&] {
    uint64_t seed = 250;
    for (const Case& c : cases) {
      for (float ramp : {30.0f, -30.0f, 200.0f, -200.0f}) Check(c, true, seed++, ramp);
    }
  });
}

// `values` rounded to `dtype` and widened back.
std::vector<float> Rounded(const float* values, size_t n, DType dtype) {
  std::vector<uint16_t> half(n);
  std::vector<float> out(values, values + n);
  if (dtype == DType::kF32) return out;
  ConvertFromFloat(values, dtype, half.data(), static_cast<long>(n));
  ConvertToFloat(dtype, half.data(), out.data(), static_cast<long>(n));
  return out;
}

// p's K/V slabs copied into shuffled blocks of tokens_per_block slots of `dtype`, laid out as
// the KV block pool lays them (block b's keys, then its values, at b * stride; junk past the
// heads' ends), and p made to read them through block tables.
struct PagedCopy {
  std::vector<int32_t> table;  // table entry -> block id
  std::vector<std::byte> pool;
  AttentionParams params;
};
PagedCopy MakePaged(const AttentionParams& p, int tokens_per_block, uint64_t seed, DType dtype) {
  const int d = p.head_dim;
  PagedCopy c;
  int blocks_per_head = 0;
  for (int h = 0; h < p.kv_heads; ++h) {
    blocks_per_head =
        std::max(blocks_per_head, (KvLength(p, h) + tokens_per_block - 1) / tokens_per_block);
  }
  const int num_blocks = p.kv_heads * blocks_per_head;
  c.table.resize(num_blocks);
  std::iota(c.table.begin(), c.table.end(), 0);
  std::shuffle(c.table.begin(), c.table.end(), std::mt19937_64(seed));
  const size_t block_elems = static_cast<size_t>(tokens_per_block) * d;
  const long stride = static_cast<long>(2 * block_elems);
  const size_t elem = DTypeSize(dtype);
  const std::vector<float> junk = Random(num_blocks * 2 * block_elems, seed + 7);
  c.pool.resize(junk.size() * elem);
  ConvertFromFloat(junk.data(), dtype, c.pool.data(), static_cast<long>(junk.size()));
  for (int h = 0; h < p.kv_heads; ++h) {
    for (int b = 0; b < blocks_per_head; ++b) {
      const int entry = h * blocks_per_head + b;
      std::byte* kb = c.pool.data() + c.table[entry] * stride * elem;
      std::byte* vb = kb + block_elems * elem;
      const int begin = b * tokens_per_block;
      const int n = std::min(tokens_per_block, KvLength(p, h) - begin);
      if (n <= 0) continue;
      ConvertFromFloat(p.k + h * p.kv_head_stride + static_cast<long>(begin) * d, dtype, kb, n * d);
      ConvertFromFloat(p.v + h * p.kv_head_stride + static_cast<long>(begin) * d, dtype, vb, n * d);
    }
  }
  c.params = p;
  c.params.k = c.params.v = nullptr;
  c.params.kv_head_stride = 0;
  c.params.block_table = c.table.data();
  c.params.kv_dtype = dtype;
  c.params.k_pool = c.pool.data();
  c.params.v_pool = c.pool.data() + block_elems * elem;
  c.params.block_stride = stride;
  c.params.pool_blocks = num_blocks;
  c.params.tokens_per_block = tokens_per_block;
  c.params.blocks_per_head = blocks_per_head;
  return c;
}

// Runs `p` contiguously and again with its K/V copied into shuffled blocks of tokens_per_block
// slots of `dtype` read through block tables; the outputs must be identical bit for bit (the
// contiguous run reads the K/V rounded to dtype).
void CheckPaged(AttentionParams p, int tokens_per_block, bool decode, uint64_t seed,
                DType dtype = DType::kF32) {
  SCOPED_TRACE(::testing::Message()
               << "q_tokens=" << p.q_tokens << " heads=" << p.q_heads << "/" << p.kv_heads
               << " d=" << p.head_dim << " tokens_per_block=" << tokens_per_block
               << " decode=" << decode << " seed=" << seed << " kv_dtype=" << DTypeName(dtype));
  const size_t slab_elems = static_cast<size_t>(p.kv_heads) * p.kv_head_stride;
  const std::vector<float> k = Rounded(p.k, slab_elems, dtype);
  const std::vector<float> v = Rounded(p.v, slab_elems, dtype);
  p.k = k.data();
  p.v = v.data();
  std::vector<float> expected(static_cast<size_t>(p.q_tokens) * p.out_stride, -7.0f);
  p.out = expected.data();
  ASSERT_TRUE((decode ? AttentionDecode(p) : AttentionPrefill(p)).ok());

  PagedCopy paged = MakePaged(p, tokens_per_block, seed, dtype);
  std::vector<float> out(expected.size(), -7.0f);
  paged.params.out = out.data();
  ASSERT_TRUE((decode ? AttentionDecode(paged.params) : AttentionPrefill(paged.params)).ok());
  ASSERT_EQ(std::memcmp(out.data(), expected.data(), out.size() * sizeof(float)), 0);
}

TEST(AttentionTest, PagedMatchesContiguousBitForBit) {
  struct PagedCase {
    int q_tokens, q_heads, kv_heads, head_dim;
    std::vector<int32_t> kv_lens;
  };
  const PagedCase cases[] = {{1, 1, 1, 8, {1}},
                             {1, 8, 4, 8, {17, 3, 40, 16}},
                             {1, 32, 8, 128, {1000, 999, 1, 257, 512, 513, 64, 700}},
                             {3, 4, 2, 16, {40, 3}},
                             {5, 8, 4, 8, {5, 21, 300, 6}},
                             {65, 4, 1, 16, {65}},
                             {257, 2, 2, 8, {257, 600}},
                             {70, 4, 2, 64, {600, 70}},
                             {1, 4, 1, 16, {10000}}};  // split-KV decode with 2+ threads
  uint64_t seed = 300;
  for (const PagedCase& c : cases) {
    const int max_len = *std::max_element(c.kv_lens.begin(), c.kv_lens.end());
    const int capacity = max_len + 5;
    auto q = Random(static_cast<size_t>(c.q_tokens) * c.q_heads * c.head_dim, seed);
    auto k = Random(static_cast<size_t>(c.kv_heads) * capacity * c.head_dim, seed + 1);
    auto v = Random(static_cast<size_t>(c.kv_heads) * capacity * c.head_dim, seed + 2);
    AttentionParams p = SlabParams({c.q_tokens, c.kv_lens[0], c.q_heads, c.kv_heads, c.head_dim},
                                   capacity, q, k, v);
    p.kv_lens = c.kv_lens.data();
    ForEachIsa([&] {
      for (int tpb : {1, 2, 16, 64, 256, 1024}) {
        for (bool decode : {false, true}) {
          if (decode && c.q_tokens > 3) continue;
          for (DType dtype : {DType::kF32, DType::kBF16, DType::kF16}) {
            if (dtype != DType::kF32 && tpb != 16 && tpb != 1) continue;
            CheckPaged(p, tpb, decode, seed, dtype);
          }
        }
      }
    });
    ++seed;
  }
}

// With round_to_kv_dtype a paged bf16 prefill rounds its queries and softmax weights to bf16 and
// multiplies in oneDNN's bf16 GEMMs: within attention.h's bound of the exact kernel on the same
// (rounded) queries, and the same bits for any block size and thread count. Key tiles end
// inside blocks and past 512 slots, query tiles are partial, groups 1 to 4. fp16 and fp32 pools
// ignore the flag on the CPU, and so do bf16 ones without oneDNN or AVX512-BF16.
TEST(AttentionTest, RoundedBf16PrefillStaysWithinItsBound) {
  struct RoundedCase {
    int q_tokens, q_heads, kv_heads, head_dim;
    std::vector<int32_t> kv_lens;
  };
  const RoundedCase cases[] = {{300, 8, 2, 128, {1100, 333}},
                               {70, 4, 2, 64, {600, 70}},
                               {17, 2, 1, 80, {17}},
                               {129, 4, 4, 16, {700, 129, 200, 300}}};
  constexpr double kU = 1.0 / 256;  // bf16's unit roundoff
  uint64_t seed = 500;
  for (const RoundedCase& c : cases) {
    SCOPED_TRACE(::testing::Message() << "q_tokens=" << c.q_tokens << " heads=" << c.q_heads << "/"
                                      << c.kv_heads << " d=" << c.head_dim << " seed=" << seed);
    const int max_len = *std::max_element(c.kv_lens.begin(), c.kv_lens.end());
    const size_t q_size = static_cast<size_t>(c.q_tokens) * c.q_heads * c.head_dim;
    const auto q_raw = Random(q_size, seed);
    const std::vector<float> q = Rounded(q_raw.data(), q_size, DType::kBF16);
    const size_t slab = static_cast<size_t>(c.kv_heads) * max_len * c.head_dim;
    const auto k_raw = Random(slab, seed + 1), v_raw = Random(slab, seed + 2);
    const std::vector<float> k = Rounded(k_raw.data(), slab, DType::kBF16);
    const std::vector<float> v = Rounded(v_raw.data(), slab, DType::kBF16);
    AttentionParams p =
        SlabParams({c.q_tokens, max_len, c.q_heads, c.kv_heads, c.head_dim}, max_len, q, k, v);
    p.kv_lens = c.kv_lens.data();
    const auto run = [&](int tokens_per_block, DType dtype, bool round) {
      PagedCopy paged = MakePaged(p, tokens_per_block, seed, dtype);
      paged.params.round_to_kv_dtype = round;
      std::vector<float> out(q_size, -7.0f);
      paged.params.out = out.data();
      EXPECT_TRUE(AttentionPrefill(paged.params).ok());
      return out;
    };
    const std::vector<float> exact = run(16, DType::kBF16, false);
    const std::vector<float> rounded = run(16, DType::kBF16, true);
    if (!ref::HaveTileGemmBf16()) {  // no oneDNN or no AVX512-BF16: the flag is ignored
      EXPECT_EQ(std::memcmp(rounded.data(), exact.data(), q_size * sizeof(float)), 0);
      ++seed;
      continue;
    }
    EXPECT_NE(std::memcmp(rounded.data(), exact.data(), q_size * sizeof(float)), 0)
        << "the flag changed nothing";
    const double max_v = ::dapq::testing::MaxAbs(v);
    const double bound =
        2 * kU / (1 - kU) * max_v + ::dapq::testing::Fp32Tolerance(max_v, c.head_dim + 2 * max_len);
    EXPECT_TRUE(::dapq::testing::AllClose(rounded, exact, bound));
    const std::vector<float> other_blocks = run(64, DType::kBF16, true);
    EXPECT_EQ(std::memcmp(other_blocks.data(), rounded.data(), q_size * sizeof(float)), 0);
    SetCpuThreads(1);
    const std::vector<float> one_thread = run(16, DType::kBF16, true);
    SetCpuThreads(0);
    EXPECT_EQ(std::memcmp(one_thread.data(), rounded.data(), q_size * sizeof(float)), 0);
    for (DType dtype : {DType::kF16, DType::kF32}) {
      const std::vector<float> plain = run(16, dtype, false), flagged = run(16, dtype, true);
      EXPECT_EQ(std::memcmp(plain.data(), flagged.data(), q_size * sizeof(float)), 0)
          << DTypeName(dtype);
    }
    ++seed;
  }
}

// The softmax weights of the rounded prefill: the same vector exponential as ExpShiftedSum,
// rounded to nearest even, and a sum of exactly the rounded values; every instruction set.
TEST(AttentionTest, ExpShiftedSumBf16RoundsTheExponentials) {
  for (int n : {1, 15, 16, 17, 100, 512}) {
    const std::vector<float> x = Random(n, 600 + n);
    const float shift = *std::max_element(x.begin(), x.end());
    ForEachIsa([&] {
      std::vector<float> e = x;
      ref::ExpShiftedSum(e.data(), n, shift);
      std::vector<uint16_t> half(n + 1, 0xabcd);
      const float sum = ref::ExpShiftedSumBf16(x.data(), n, shift, half.data());
      double want = 0;
      for (int i = 0; i < n; ++i) {
        ASSERT_EQ(half[i], FloatToBf16(e[i])) << "n=" << n << " i=" << i;
        want += Bf16ToFloat(half[i]);
      }
      EXPECT_EQ(half[n], 0xabcd) << "wrote past n";
      EXPECT_NEAR(sum, want, ::dapq::testing::Fp32Tolerance(want, n));
    });
  }
}

TEST(AttentionTest, PagedRejectsBadTables) {
  float x[32] = {};
  const int32_t table[2] = {0, 5};
  AttentionParams p;
  p.q_tokens = 1;
  p.q_heads = p.kv_heads = 1;
  p.head_dim = 4;
  p.q = x;
  p.out = x;
  p.q_stride = p.out_stride = 4;
  p.kv_len = 3;
  p.block_table = table;
  p.k_pool = p.v_pool = x;
  p.pool_blocks = 4;
  p.tokens_per_block = 3;
  p.block_stride = 12;
  p.blocks_per_head = 2;
  EXPECT_THAT(AttentionDecode(p),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("power of two")));
  p.tokens_per_block = 1;
  p.block_stride = 4;
  EXPECT_THAT(AttentionDecode(p), StatusIs(absl::StatusCode::kInvalidArgument,
                                           ::testing::HasSubstr("blocks_per_head")));
  p.tokens_per_block = 2;
  EXPECT_THAT(AttentionDecode(p),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("block_stride=4")));
  p.block_stride = 8;
  EXPECT_THAT(AttentionDecode(p),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       ::testing::HasSubstr("block id 5 (entry 1 of KV head 0) outside")));
}

TEST(AttentionTest, RejectsBadShapes) {
  float x = 0;
  AttentionParams p;
  p.q_tokens = 2;
  p.q_heads = 3;
  p.kv_heads = 2;
  p.head_dim = 4;
  p.q = p.k = p.v = &x;
  p.out = &x;
  p.q_stride = p.out_stride = 12;
  p.kv_len = 2;
  p.kv_head_stride = 8;
  EXPECT_THAT(AttentionPrefill(p),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("kv_heads")));
  p.q_heads = 4;
  p.q_stride = p.out_stride = 16;
  p.kv_len = 1;
  EXPECT_THAT(AttentionDecode(p),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("kv_len")));
  p.kv_len = 2;
  p.kv_dtype = DType::kBF16;  // 2-byte K/V come only through block tables
  EXPECT_THAT(AttentionDecode(p),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("kv_dtype=bf16")));
}

// The vectorised exponential within 4 ulp of expf over the softmax's range (shifted scores are
// <= 0), exact 1 at 0, 0 far below; the row sum within fp32 tolerance of a double sum.
TEST(AttentionTest, VectorExpMatchesExpf) {
  std::vector<float> x;
  for (float t = -100.0f; t <= 0.0f; t += 0.0137f) x.push_back(t);
  x.push_back(0.0f);
  x.push_back(-1e30f);
  ForEachIsa([&] {
    std::vector<float> e = x;
    const float sum = ref::ExpShiftedSum(e.data(), static_cast<int>(e.size()), 0.0f);
    double want_sum = 0;
    for (size_t i = 0; i < x.size(); ++i) {
      const float want = std::exp(x[i]);
      want_sum += want;
      if (want < 2.5e-38f) {  // at expf's subnormal edge we may flush to 0
        ASSERT_LE(e[i], 2.5e-38f) << x[i];
        continue;
      }
      ASSERT_LE(std::fabs(e[i] - want), 4 * std::nextafter(want, 2 * want) - 4 * want) << x[i];
    }
    EXPECT_EQ(e[e.size() - 2], 1.0f);
    EXPECT_EQ(e.back(), 0.0f);
    EXPECT_NEAR(sum, want_sum, ::dapq::testing::Fp32Tolerance(want_sum, x.size()));
    EXPECT_EQ(ref::RowMax(x.data(), static_cast<int>(x.size())), 0.0f);
  });
}

}  // namespace
}  // namespace dapq::kernels
