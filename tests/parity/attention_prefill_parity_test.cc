// File: tests/parity/attention_prefill_parity_test.cc
// Parity of the CUDA prefill attention (kernels/cuda/attention_prefill.cu) with the CPU kernel
// (kernels/ref/attention_ref.cc): the same seeded queries and K/V pools run through
// AttentionPrefill on both backends. Paged pools in fp32, bf16 and fp16 behind shuffled block
// tables (entries a head does not need are -1, so reading one is caught), a different length per
// KV head (each head's causal offset is its own length minus q_tokens), pure prefills (length ==
// q_tokens) and chunks after a cached prefix, GQA groups 1 to 4, head_dim 64, 80, 128 and 256,
// blocks of 16 and 64 slots, padded token strides; plus the contiguous fp32 layout. The GPU
// output buffer starts at a sentinel like the CPU one, so the padding between rows is compared
// too (a stray write fails). The same paged cases again with AttentionParams::round_to_kv_dtype:
// 16-bit pools then run the tensor-core kernel, within its rounding bound. Skips without a CUDA
// device, except the head_dim limit, which the launcher checks before any CUDA call.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "absl/status/status.h"
#include "gtest/gtest.h"
#include "kernels/attention.h"
#include "kernels/convert.h"
#include "kernels/prefill_tc_layout.h"
#include "kernels/types.h"
#include "tests/parity/parity_util.h"
#include "tests/util/cuda_test_util.h"
#include "tests/util/tolerance.h"

namespace dapq::kernels {
namespace {

using parity::DeviceBuffer;
using parity::Encode;
using parity::kGpu;
using parity::Random;

// Outputs sit here where no row is written (the padding of a strided row).
constexpr float kSentinel = 7.0f;

// Every output is a convex combination of value rows in [-1, 1], so |out| <= 1 and the error is
// absolute, in ulps of 1 (6e-8). The GPU sums the scores' dot products, the softmax denominator
// and the weighted values in another order than the CPU's OpenBLAS tiles, computes exp with
// another implementation (a few ulps each), and rescales its accumulator once per 32- or 64-slot
// key tile where the CPU does so per 512-slot tile. Scores (queries in [-2, 2], head_dim <= 256)
// stay below 2 sqrt(head_dim) = 32, so their rounding is a few 1e-6 relative to the weights, and
// a weighted mean moves by about that much: 2e-5 absolute. The summation error grows with the
// number of terms, slowly: log2 of the longest length times 1e-6 on top. bf16 and fp16 pools need
// no more: both sides read the same rounded values and widen them exactly. An off-by-one causal
// mask or a wrong head's offset moves outputs by 1e-2 or more.
double Tolerance(int longest) { return 2e-5 + 1e-6 * std::log2(std::max(longest, 1)); }

struct Shape {
  int q_tokens;
  int prefix;  // the longest head holds prefix + q_tokens slots; 0: a pure prefill
  int kv_heads, group, head_dim, tokens_per_block;
  int q_pad;  // extra elements per token in q and out rows
};

// Lengths per KV head: head 0 the longest (prefix + q_tokens), the last exactly q_tokens (a pure
// prefill beside cached heads), the others in between.
std::vector<int32_t> Lengths(const Shape& shape, std::mt19937_64& rng) {
  const int longest = shape.prefix + shape.q_tokens;
  std::vector<int32_t> lens(shape.kv_heads);
  for (int h = 0; h < shape.kv_heads; ++h) {
    lens[h] = longest - static_cast<int>(rng() % (shape.prefix + 1));
  }
  lens[0] = longest;
  if (shape.kv_heads > 1) lens[shape.kv_heads - 1] = shape.q_tokens;
  return lens;
}

// Rounding bound of the tensor-core kernel (AttentionParams::round_to_kv_dtype) on top of the
// exact tolerance, for outputs of value rows in [-1, 1] whose queries both sides round alike:
// each softmax weight rounded to the pool's type moves by at most u (its unit roundoff: 2^-8
// bf16, 2^-11 fp16), and the output, a mean of value rows under weights renormalised by their
// rounded sum, by at most 2u / (1 - u); fp16 weights below its normal range lose up to 2^-25
// each, relative to a row sum of at least 1.
double TensorCoreBound(DType dtype, int longest) {
  const double u = dtype == DType::kBF16 ? std::ldexp(1.0, -8) : std::ldexp(1.0, -11);
  const double subnormal = dtype == DType::kF16 ? longest * std::ldexp(1.0, -25) : 0.0;
  return 2 * u / (1 - u) + subnormal;
}

const Shape kPagedShapes[] = {
    {1, 0, 2, 1, 64, 16, 0},    {1, 200, 2, 4, 128, 64, 0},   {17, 0, 3, 4, 64, 64, 5},
    {17, 45, 2, 1, 128, 16, 0}, {128, 0, 2, 4, 128, 16, 0},   {128, 333, 3, 1, 64, 64, 3},
    {300, 0, 2, 1, 128, 64, 0}, {300, 1000, 2, 4, 64, 16, 8}, {33, 7, 1, 2, 256, 16, 0},
    {19, 50, 2, 3, 80, 16, 1},
};

// One paged prefill of `shape` in `dtype` on both backends. With round_to_kv_dtype the queries
// are rounded to the pool's type first (both sides read the same ones; the CPU runs without
// the flag, exactly) and the GPU may run the tensor-core kernel, so TensorCoreBound is added where
// it does.
void CheckPagedPrefill(const Shape& shape, DType dtype, bool round_to_kv_dtype) {
  const uint64_t seed = shape.q_tokens * 7919ull + shape.prefix * 31ull + shape.head_dim +
                        static_cast<uint64_t>(dtype);
  SCOPED_TRACE(::testing::Message()
               << "q_tokens=" << shape.q_tokens << " prefix=" << shape.prefix << " kv_heads="
               << shape.kv_heads << " group=" << shape.group << " head_dim=" << shape.head_dim
               << " tokens_per_block=" << shape.tokens_per_block << " dtype=" << DTypeName(dtype)
               << " round_to_kv_dtype=" << round_to_kv_dtype << " seed=" << seed);
  std::mt19937_64 rng(seed);
  const int d = shape.head_dim, tpb = shape.tokens_per_block;
  const int q_heads = shape.kv_heads * shape.group;
  const int longest = shape.prefix + shape.q_tokens;
  const std::vector<int32_t> lens = Lengths(shape, rng);
  const int blocks_per_head = (longest + tpb - 1) / tpb;
  const int pool_blocks = blocks_per_head * shape.kv_heads + 3;
  std::vector<int32_t> ids(pool_blocks);
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), rng);
  std::vector<int32_t> table(static_cast<size_t>(blocks_per_head) * shape.kv_heads, -1);
  for (int h = 0; h < shape.kv_heads; ++h) {
    const int needed = (lens[h] + tpb - 1) / tpb;
    for (int b = 0; b < needed; ++b) {
      table[static_cast<size_t>(h) * blocks_per_head + b] = ids[h * blocks_per_head + b];
    }
  }
  const long block_stride = 2L * tpb * d;  // keys, then values, as BlockPool lays them out
  const std::vector<uint8_t> pool =
      Encode(Random(static_cast<size_t>(pool_blocks) * block_stride, rng()), dtype);
  const size_t v_offset = static_cast<size_t>(tpb) * d * DTypeSize(dtype);
  const int stride = q_heads * d + shape.q_pad;
  std::vector<float> q = Random(static_cast<size_t>(shape.q_tokens) * stride, rng(), 2.0f);
  if (round_to_kv_dtype) {
    const std::vector<uint8_t> rounded = Encode(q, dtype);
    ConvertToFloat(dtype, rounded.data(), q.data(), static_cast<long>(q.size()));
  }
  std::vector<float> out(q.size(), kSentinel);

  AttentionParams p;
  p.q_tokens = shape.q_tokens;
  p.q_heads = q_heads;
  p.kv_heads = shape.kv_heads;
  p.head_dim = d;
  p.q = q.data();
  p.q_stride = stride;
  p.kv_len = longest;
  p.kv_lens = lens.data();
  p.block_table = table.data();
  p.kv_dtype = dtype;
  p.k_pool = pool.data();
  p.v_pool = pool.data() + v_offset;
  p.block_stride = block_stride;
  p.pool_blocks = pool_blocks;
  p.tokens_per_block = tpb;
  p.blocks_per_head = blocks_per_head;
  p.out = out.data();
  p.out_stride = stride;
  const absl::Status cpu = AttentionPrefill(p);  // exact: the reference for both cases
  ASSERT_TRUE(cpu.ok()) << cpu;

  DeviceBuffer dq(q), dout(std::vector<float>(out.size(), kSentinel)), dlens(lens, 0),
      dtable(table, 0), dpool(pool, 0);
  AttentionParams g = p;
  g.round_to_kv_dtype = round_to_kv_dtype;
  g.q = dq.get();
  g.kv_lens = dlens.as<int32_t>();
  g.block_table = dtable.as<int32_t>();
  g.k_pool = dpool.as<uint8_t>();
  g.v_pool = dpool.as<uint8_t>() + v_offset;
  g.out = dout.get();
  const absl::Status gpu = AttentionPrefill(g, kGpu);
  ASSERT_TRUE(gpu.ok()) << gpu;
  const double tolerance =
      Tolerance(longest) + (PrefillUsesTensorCores(g) ? TensorCoreBound(dtype, longest) : 0.0);
  ASSERT_TRUE(::dapq::testing::AllClose(dout.Download(), out, tolerance));
}

TEST(KernelsParityTest, AttentionPrefill) {
  DAPQ_SKIP_IF_NO_CUDA();
  for (const Shape& shape : kPagedShapes) {
    for (DType dtype : {DType::kF32, DType::kBF16, DType::kF16}) {
      CheckPagedPrefill(shape, dtype, /*round_to_kv_dtype=*/false);
      if (::testing::Test::HasFatalFailure()) return;
    }
  }
}

// The tensor-core kernel (bf16 and fp16 pools, head_dim <= 128; the 256 shape and fp32 pools
// take the exact kernel, which must ignore the flag) against the exact CPU kernel within
// TensorCoreBound. The short pure prefills (17 tokens) make an off-by-one mask move outputs by
// about 1/17, far past the bound.
TEST(KernelsParityTest, AttentionPrefillTensorCores) {
  DAPQ_SKIP_IF_NO_CUDA();
  for (const Shape& shape : kPagedShapes) {
    for (DType dtype : {DType::kF32, DType::kBF16, DType::kF16}) {
      CheckPagedPrefill(shape, dtype, /*round_to_kv_dtype=*/true);
      if (::testing::Test::HasFatalFailure()) return;
    }
  }
}

// The contiguous fp32 layout: one [capacity, head_dim] slab per KV head, capacity above every
// length, ragged lengths, a GQA group of 4 and padded token strides.
TEST(KernelsParityTest, AttentionPrefillContiguous) {
  DAPQ_SKIP_IF_NO_CUDA();
  const int q_tokens = 77, prefix = 50, kv_heads = 3, group = 4, d = 128;
  const int q_heads = kv_heads * group, longest = prefix + q_tokens, capacity = longest + 5;
  const uint64_t seed = 4242;
  SCOPED_TRACE(::testing::Message() << "seed=" << seed);
  std::mt19937_64 rng(seed);
  const std::vector<int32_t> lens = Lengths({q_tokens, prefix, kv_heads, group, d, 1, 0}, rng);
  const auto k = Random(static_cast<size_t>(kv_heads) * capacity * d, rng());
  const auto v = Random(k.size(), rng());
  const int stride = q_heads * d + 3;
  const auto q = Random(static_cast<size_t>(q_tokens) * stride, rng(), 2.0f);
  std::vector<float> out(q.size(), kSentinel);

  AttentionParams p;
  p.q_tokens = q_tokens;
  p.q_heads = q_heads;
  p.kv_heads = kv_heads;
  p.head_dim = d;
  p.q = q.data();
  p.q_stride = stride;
  p.k = k.data();
  p.v = v.data();
  p.kv_head_stride = static_cast<long>(capacity) * d;
  p.kv_len = longest;
  p.kv_lens = lens.data();
  p.out = out.data();
  p.out_stride = stride;
  const absl::Status cpu = AttentionPrefill(p);
  ASSERT_TRUE(cpu.ok()) << cpu;

  DeviceBuffer dq(q), dk(k), dv(v), dout(std::vector<float>(out.size(), kSentinel)), dlens(lens, 0);
  AttentionParams g = p;
  g.q = dq.get();
  g.k = dk.get();
  g.v = dv.get();
  g.kv_lens = dlens.as<int32_t>();
  g.out = dout.get();
  const absl::Status gpu = AttentionPrefill(g, kGpu);
  ASSERT_TRUE(gpu.ok()) << gpu;
  ASSERT_TRUE(::dapq::testing::AllClose(dout.Download(), out, Tolerance(longest)));
}

// head_dim past the kernel's 256 is refused before any CUDA call (the pointers are host memory
// and never read), so this runs without a GPU too. Unimplemented: the CPU kernel takes any
// head_dim; the GPU kernel is not built for it (STYLE.md §2.3, as AttentionDecode).
TEST(KernelsParityTest, AttentionPrefillRejectsHugeHeadDim) {
  const int d = 512;
  std::vector<float> q(d), kv(2 * d), out(d);
  AttentionParams p;
  p.q_tokens = 1;
  p.q_heads = 1;
  p.kv_heads = 1;
  p.head_dim = d;
  p.q = q.data();
  p.q_stride = d;
  p.k = kv.data();
  p.v = kv.data() + d;
  p.kv_head_stride = d;
  p.kv_len = 1;
  p.out = out.data();
  p.out_stride = d;
  const absl::Status status = AttentionPrefill(p, kGpu);
  EXPECT_EQ(status.code(), absl::StatusCode::kUnimplemented) << status;
  EXPECT_NE(status.message().find("head_dim=512"), absl::string_view::npos) << status;
  EXPECT_NE(status.message().find("at most 256"), absl::string_view::npos) << status;
}

}  // namespace
}  // namespace dapq::kernels
