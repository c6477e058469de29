// File: tests/parity/kernels_parity_test.cc
// Parity harness (test-backend-ops style): every op marked CPU_CUDA in kernels/ops.inc runs on
// the GPU and on the CPU reference with the same seeded inputs; NaN/Inf are checked first, then
// every element must satisfy |g - r| <= atol + rtol * |r| (fp32: 1e-5 / 1e-5; expf/sincosf ulp
// differences stay inside), compared by AllClose (tests/util/tolerance.h). Shapes include 1,
// primes, non-multiples of the vector width and strided rows. Skips without a CUDA device.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/activation.h"
#include "kernels/attention.h"
#include "kernels/attention_scores.h"
#include "kernels/rms_norm.h"
#include "kernels/rope.h"
#include "kernels/softmax.h"
#include "tests/parity/parity_util.h"
#include "tests/util/cuda_test_util.h"
#include "tests/util/tolerance.h"

namespace dapq::kernels {
namespace {

using parity::DeviceBuffer;
using parity::ExpectClose;
using parity::kGpu;
using parity::Random;

TEST(KernelsParityTest, RmsNorm) {
  DAPQ_SKIP_IF_NO_CUDA();
  for (int dim : {1, 7, 64, 4096, 4099}) {
    const int rows = 5, stride = dim + 3;
    SCOPED_TRACE(::testing::Message() << "dim=" << dim << " seed=" << dim);
    auto x = Random(static_cast<size_t>(rows) * stride, dim), w = Random(dim, dim + 1);
    std::vector<float> out(x.size(), 0.0f);
    DeviceBuffer dx(x), dw(w), dout(out);
    ASSERT_TRUE(RmsNorm({rows, dim, x.data(), stride, w.data(), out.data(), stride, 1e-5f}).ok());
    ASSERT_TRUE(
        RmsNorm({rows, dim, dx.get(), stride, dw.get(), dout.get(), stride, 1e-5f}, kGpu).ok());
    ExpectClose(dout.Download(), out);
  }
}

TEST(KernelsParityTest, Rope) {
  DAPQ_SKIP_IF_NO_CUDA();
  for (RopeLayout layout : {RopeLayout::kInterleaved, RopeLayout::kHalfSplit}) {
    for (int hd : {2, 8, 128}) {
      const int tokens = 13, heads = 3, stride = heads * hd + 2;
      SCOPED_TRACE(::testing::Message() << "hd=" << hd << " layout=" << static_cast<int>(layout));
      auto inv = ComputeRopeInvFreq({hd, 500000.0f, layout, {8.0f, 1.0f, 4.0f, 8192}});
      ASSERT_TRUE(inv.ok());
      std::vector<int32_t> pos(tokens);
      for (int t = 0; t < tokens; ++t) pos[t] = t * 997;
      auto x = Random(static_cast<size_t>(tokens) * stride, hd);
      DeviceBuffer dx(x), dinv(*inv), dpos(pos, 0);
      ASSERT_TRUE(
          Rope({tokens, heads, hd, x.data(), stride, pos.data(), inv->data(), layout}).ok());
      ASSERT_TRUE(
          Rope({tokens, heads, hd, dx.get(), stride, dpos.as<int32_t>(), dinv.get(), layout}, kGpu)
              .ok());
      // Angles up to ~12000 rad: sincosf vs sinf/cosf argument reduction differ by a few ulps of
      // the angle, so this op's tolerance is 1e-4 absolute.
      auto g = dx.Download();
      ASSERT_TRUE(::dapq::testing::AllClose(g, x, 1e-4));
    }
  }
}

TEST(KernelsParityTest, Softmax) {
  DAPQ_SKIP_IF_NO_CUDA();
  for (int cols : {1, 5, 256, 1000, 32771}) {
    const int rows = 4, stride = cols + 1;
    SCOPED_TRACE(::testing::Message() << "cols=" << cols);
    auto x = Random(static_cast<size_t>(rows) * stride, cols, 20.0f);
    DeviceBuffer dx(x);
    ASSERT_TRUE(Softmax({rows, cols, x.data(), stride}).ok());
    ASSERT_TRUE(Softmax({rows, cols, dx.get(), stride}, kGpu).ok());
    ExpectClose(dx.Download(), x);
  }
}

TEST(KernelsParityTest, SwiGlu) {
  DAPQ_SKIP_IF_NO_CUDA();
  for (int cols : {1, 33, 14336}) {
    const int rows = 3;
    auto g = Random(static_cast<size_t>(rows) * cols, cols, 8.0f), u = Random(g.size(), cols + 1);
    std::vector<float> out(g.size());
    DeviceBuffer dg(g), du(u), dout(out);
    ASSERT_TRUE(SwiGlu({rows, cols, g.data(), cols, u.data(), cols, out.data(), cols}).ok());
    ASSERT_TRUE(SwiGlu({rows, cols, dg.get(), cols, du.get(), cols, dout.get(), cols}, kGpu).ok());
    ExpectClose(dout.Download(), out);
  }
}

// Paged decode attention: random pools in every KV type with shuffled block tables and a
// different length per KV head, GQA groups of 4, one and three query tokens, short caches (one
// part per pair) and a 40000-slot one that the GPU splits into parts. Outputs are weighted means
// of values in [-1, 1] summed in another order than the CPU's, so the tolerance is a few fp32
// ulps of 1 times the log of the length: 2e-5 absolute.
TEST(KernelsParityTest, AttentionDecode) {
  DAPQ_SKIP_IF_NO_CUDA();
  struct Shape {
    int q_tokens, kv_heads, head_dim, tokens_per_block, longest;
  };
  for (const Shape& shape : {Shape{1, 2, 64, 16, 100}, Shape{3, 2, 128, 32, 1000},
                             Shape{1, 1, 128, 16, 40000}, Shape{1, 8, 128, 64, 9000}}) {
    for (DType dtype : {DType::kF32, DType::kBF16, DType::kF16}) {
      SCOPED_TRACE(::testing::Message()
                   << "q_tokens=" << shape.q_tokens << " kv_heads=" << shape.kv_heads
                   << " head_dim=" << shape.head_dim << " longest=" << shape.longest
                   << " dtype=" << DTypeName(dtype));
      const int group = 4, d = shape.head_dim, tpb = shape.tokens_per_block;
      const int q_heads = shape.kv_heads * group;
      std::mt19937_64 rng(shape.longest * 3 + static_cast<int>(dtype));
      std::vector<int32_t> lens(shape.kv_heads);
      for (int h = 0; h < shape.kv_heads; ++h) {
        lens[h] = shape.longest - static_cast<int>(rng() % (shape.longest / 4 + 1));
        if (lens[h] < shape.q_tokens) lens[h] = shape.q_tokens;
      }
      lens[0] = shape.longest;
      const int blocks_per_head = (shape.longest + tpb - 1) / tpb;
      const int pool_blocks = blocks_per_head * shape.kv_heads + 3;
      std::vector<int32_t> table(static_cast<size_t>(blocks_per_head) * shape.kv_heads);
      std::iota(table.begin(), table.end(), 0);
      std::shuffle(table.begin(), table.end(), rng);
      const long block_stride = 2L * tpb * d;  // keys, then values, as BlockPool lays them out
      const std::vector<float> pool_f =
          Random(static_cast<size_t>(pool_blocks) * block_stride, rng());
      const size_t elem = DTypeSize(dtype);
      const std::vector<uint8_t> pool = parity::Encode(pool_f, dtype);
      const auto q = Random(static_cast<size_t>(shape.q_tokens) * q_heads * d, rng(), 2.0f);
      std::vector<float> out(q.size(), 0.0f);
      AttentionParams p;
      p.q_tokens = shape.q_tokens;
      p.q_heads = q_heads;
      p.kv_heads = shape.kv_heads;
      p.head_dim = d;
      p.q = q.data();
      p.q_stride = q_heads * d;
      p.kv_len = shape.longest;
      p.kv_lens = lens.data();
      p.block_table = table.data();
      p.kv_dtype = dtype;
      p.k_pool = pool.data();
      p.v_pool = pool.data() + static_cast<size_t>(tpb) * d * elem;
      p.block_stride = block_stride;
      p.pool_blocks = pool_blocks;
      p.tokens_per_block = tpb;
      p.blocks_per_head = blocks_per_head;
      p.out = out.data();
      p.out_stride = q_heads * d;
      ASSERT_TRUE(AttentionDecode(p).ok());
      DeviceBuffer dq(q), dout(std::vector<float>(out.size(), 0.0f)), dlens(lens, 0),
          dtable(table, 0), dpool(pool, 0);
      AttentionParams g = p;
      g.q = dq.get();
      g.kv_lens = dlens.as<int32_t>();
      g.block_table = dtable.as<int32_t>();
      g.k_pool = dpool.as<uint8_t>();
      g.v_pool = dpool.as<uint8_t>() + static_cast<size_t>(tpb) * d * elem;
      g.out = dout.get();
      const absl::Status status = AttentionDecode(g, kGpu);
      ASSERT_TRUE(status.ok()) << status;
      ASSERT_TRUE(::dapq::testing::AllClose(dout.Download(), out, 2e-5));
    }
  }
}

// Attention-mass scoring (DapQ / SnapKV): causal key limits and per-query weights, queries from
// 1 to a pseudo-query window, keys up to 20000; scores start non-zero (they accumulate). Each
// score is a sum of at most `queries` terms in [0, weight]: tolerance 1e-5 absolute plus 1e-4
// relative covers the different exp and summation orders.
TEST(KernelsParityTest, AttentionScores) {
  DAPQ_SKIP_IF_NO_CUDA();
  for (int queries : {1, 7, 64}) {
    for (int keys : {1, 300, 20000}) {
      for (int d : {64, 128}) {
        SCOPED_TRACE(::testing::Message()
                     << "queries=" << queries << " keys=" << keys << " head_dim=" << d);
        std::mt19937_64 rng(queries * 100003 + keys * 7 + d);
        const int q_stride = d + 5;
        const auto q = Random(static_cast<size_t>(queries) * q_stride, rng(), 2.0f);
        const auto k = Random(static_cast<size_t>(keys) * d, rng());
        const auto w = Random(queries, rng());
        std::vector<int32_t> limits(queries);
        for (int i = 0; i < queries; ++i) {
          limits[i] = std::max(1, keys - (queries - 1 - i));  // causal: the last query sees all
        }
        std::vector<float> scores = Random(keys, rng());
        DeviceBuffer dq(q), dk(k), dw(w), dlimits(limits, 0), dscores(scores);
        AttentionScoresParams p;
        p.queries = queries;
        p.keys = keys;
        p.head_dim = d;
        p.q = q.data();
        p.q_stride = q_stride;
        p.k = k.data();
        p.key_limits = limits.data();
        p.weights = w.data();
        p.scale = 1.0f / std::sqrt(static_cast<float>(d));
        p.scores = scores.data();
        ASSERT_TRUE(AttentionScores(p).ok());
        AttentionScoresParams g = p;
        g.q = dq.get();
        g.k = dk.get();
        g.key_limits = dlimits.as<int32_t>();
        g.weights = dw.get();
        g.scores = dscores.get();
        const absl::Status status = AttentionScores(g, kGpu);
        ASSERT_TRUE(status.ok()) << status;
        ASSERT_TRUE(::dapq::testing::AllClose(dscores.Download(), scores, 1e-5, 1e-4));
      }
    }
  }
}

// Every CPU_CUDA op in ops.inc must have a case in one of the parity files (this one,
// gemm_parity_test.cc, attention_prefill_parity_test.cc, layer_ops_parity_test.cc): this list is
// checked against it.
TEST(KernelsParityTest, EveryCudaOpHasACase) {
  const std::vector<std::string> covered = {"Gemm",
                                            "RmsNorm",
                                            "AddRmsNorm",
                                            "Rope",
                                            "Softmax",
                                            "SwiGlu",
                                            "AttentionPrefill",
                                            "AttentionDecode",
                                            "AttentionScores",
                                            "Embedding",
                                            "KvAppend",
                                            "KvCompact",
                                            "ScoresToFixedPoint",
                                            "Pool1d"};
  std::vector<std::string> cuda_ops;
#define DAPQ_KERNEL_OP(Name, Params, Validator, Backends) \
  if (std::string(#Backends) == "CPU_CUDA") cuda_ops.push_back(#Name);
#include "kernels/ops.inc"
#undef DAPQ_KERNEL_OP
  EXPECT_EQ(cuda_ops, covered);
}

}  // namespace
}  // namespace dapq::kernels
