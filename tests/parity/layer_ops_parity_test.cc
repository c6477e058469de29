// File: tests/parity/layer_ops_parity_test.cc
// Parity of the forward pass's glue ops on the GPU against their CPU twins: the residual add
// fused with RMSNorm, the token embedding lookup (fp32 and bf16 tables) and the paged KV append
// (fp32 / bf16 / fp16 pools, shuffled block tables, a chunk that starts mid-block). The lookup
// and the append move or round single values, so they must match bit for bit; AddRmsNorm's add
// is exact and its norm is RmsNorm's (1e-5 tolerance, kernels_parity_test.cc's reasoning).
#include <cuda_runtime.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/embedding.h"
#include "kernels/fixed_point.h"
#include "kernels/kv_append.h"
#include "kernels/kv_compact.h"
#include "kernels/rms_norm.h"
#include "tests/parity/parity_util.h"
#include "tests/util/cuda_test_util.h"

namespace dapq::kernels {
namespace {

using parity::DeviceBuffer;
using parity::ExpectClose;
using parity::kGpu;
using parity::Random;

TEST(KernelsParityTest, AddRmsNorm) {
  DAPQ_SKIP_IF_NO_CUDA();
  for (int dim : {1, 7, 4096, 4099}) {
    for (bool with_norm : {true, false}) {
      SCOPED_TRACE(::testing::Message() << "dim=" << dim << " norm=" << with_norm);
      const int rows = 5, stride = dim + 3;
      auto x = Random(static_cast<size_t>(rows) * stride, dim);
      const auto residual = Random(x.size(), dim + 1), w = Random(dim, dim + 2);
      std::vector<float> out(x.size(), 0.0f);
      DeviceBuffer dx(x), dres(residual), dw(w), dout(out);
      AddRmsNormParams p{rows,
                         dim,
                         x.data(),
                         stride,
                         residual.data(),
                         stride,
                         w.data(),
                         with_norm ? out.data() : nullptr,
                         stride,
                         1e-5f};
      ASSERT_TRUE(AddRmsNorm(p).ok());
      AddRmsNormParams g{rows,       dim,    dx.get(), stride,
                         dres.get(), stride, dw.get(), with_norm ? dout.get() : nullptr,
                         stride,     1e-5f};
      ASSERT_TRUE(AddRmsNorm(g, kGpu).ok());
      EXPECT_EQ(dx.Download(), x);  // the add is one fp32 rounding on both sides
      if (with_norm) ExpectClose(dout.Download(), out);
    }
  }
}

TEST(KernelsParityTest, Embedding) {
  DAPQ_SKIP_IF_NO_CUDA();
  const int vocab = 1000, dim = 257, rows = 9, stride = dim + 4;
  const std::vector<int32_t> tokens = {0, 999, 5, 5, 123, 998, 1, 500, 0};
  const auto table_f = Random(static_cast<size_t>(vocab) * dim, 21);
  std::vector<uint16_t> table_bf16(table_f.size());
  for (size_t i = 0; i < table_f.size(); ++i) table_bf16[i] = FloatToBf16(table_f[i]);
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    SCOPED_TRACE(DTypeName(dtype));
    const void* host_table =
        dtype == DType::kF32 ? static_cast<const void*>(table_f.data()) : table_bf16.data();
    std::vector<float> out(static_cast<size_t>(rows) * stride, -7.0f);
    ASSERT_TRUE(
        Embedding({rows, dim, vocab, tokens.data(), dtype, host_table, out.data(), stride}).ok());
    DeviceBuffer dtokens(tokens, 0), dout(std::vector<float>(out.size(), -7.0f));
    DeviceBuffer dtable_f(table_f), dtable_b(table_bf16, 0);
    const void* device_table =
        dtype == DType::kF32 ? static_cast<const void*>(dtable_f.get()) : dtable_b.as<uint16_t>();
    ASSERT_TRUE(Embedding({rows, dim, vocab, dtokens.as<int32_t>(), dtype, device_table, dout.get(),
                           stride},
                          kGpu)
                    .ok());
    EXPECT_EQ(dout.Download(), out);
  }
}

TEST(KernelsParityTest, KvAppend) {
  DAPQ_SKIP_IF_NO_CUDA();
  for (DType dtype : {DType::kF32, DType::kBF16, DType::kF16}) {
    for (int tokens : {1, 37}) {
      SCOPED_TRACE(::testing::Message() << DTypeName(dtype) << " tokens=" << tokens);
      const int kv_heads = 3, d = 128, tpb = 16, blocks_per_head = 8;
      const int pool_blocks = kv_heads * blocks_per_head + 2;
      const long block_stride = 2L * tpb * d;
      std::mt19937_64 rng(tokens * 31 + static_cast<int>(dtype));
      std::vector<int32_t> table(static_cast<size_t>(kv_heads) * blocks_per_head);
      std::iota(table.begin(), table.end(), 1);
      std::shuffle(table.begin(), table.end(), rng);
      const std::vector<int32_t> first = {0, 5, 128 - tokens - 3};  // a block start, mid-block
      const int src_stride = kv_heads * d + 8;
      const auto k = Random(static_cast<size_t>(tokens) * src_stride, rng(), 3.0f);
      const auto v = Random(k.size(), rng(), 3.0f);
      const size_t pool_bytes = static_cast<size_t>(pool_blocks) * block_stride * DTypeSize(dtype);
      std::vector<uint8_t> pool(pool_bytes, 0xAB);
      const long v_offset = static_cast<long>(tpb) * d;  // values after keys in each block
      KvAppendParams p;
      p.tokens = tokens;
      p.kv_heads = kv_heads;
      p.head_dim = d;
      p.k = k.data();
      p.v = v.data();
      p.src_stride = src_stride;
      p.first_slots = first.data();
      p.block_table = table.data();
      p.blocks_per_head = blocks_per_head;
      p.tokens_per_block = tpb;
      p.kv_dtype = dtype;
      p.k_pool = pool.data();
      p.v_pool = pool.data() + v_offset * DTypeSize(dtype);
      p.block_stride = block_stride;
      p.pool_blocks = pool_blocks;
      DeviceBuffer dk(k), dv(v), dfirst(first, 0), dtable(table, 0),
          dpool(std::vector<uint8_t>(pool_bytes, 0xAB), 0);
      ASSERT_TRUE(KvAppend(p).ok());
      KvAppendParams g = p;
      g.k = dk.get();
      g.v = dv.get();
      g.first_slots = dfirst.as<int32_t>();
      g.block_table = dtable.as<int32_t>();
      g.k_pool = dpool.as<uint8_t>();
      g.v_pool = dpool.as<uint8_t>() + v_offset * DTypeSize(dtype);
      ASSERT_TRUE(KvAppend(g, kGpu).ok());
      ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
      std::vector<uint8_t> back(pool_bytes);
      ASSERT_EQ(cudaMemcpy(back.data(), dpool.as<uint8_t>(), pool_bytes, cudaMemcpyDeviceToHost),
                cudaSuccess);
      EXPECT_TRUE(back == pool) << "the GPU pool differs from the CPU pool";
    }
  }
}

// Compaction after a keep-set: the GPU's gather + scatter leaves the pool byte for byte as the
// CPU's in-place moves, for dense runs, scattered rows and a head that keeps nothing.
TEST(KernelsParityTest, KvCompact) {
  DAPQ_SKIP_IF_NO_CUDA();
  for (DType dtype : {DType::kF32, DType::kBF16, DType::kF16}) {
    SCOPED_TRACE(DTypeName(dtype));
    const int heads = 3, d = 128, tpb = 16, blocks_per_head = 8, keep_stride = 100;
    const int pool_blocks = heads * blocks_per_head + 2;
    const long block_stride = 2L * tpb * d;
    std::mt19937_64 rng(static_cast<int>(dtype) + 5);
    std::vector<int32_t> table(static_cast<size_t>(heads) * blocks_per_head);
    std::iota(table.begin(), table.end(), 1);
    std::shuffle(table.begin(), table.end(), rng);
    // Head 0 keeps every other slot, head 1 a random ascending set, head 2 nothing.
    std::vector<int32_t> keep(static_cast<size_t>(heads) * keep_stride, 0);
    std::vector<int32_t> counts = {0, 0, 0};
    for (int s = 0; s < tpb * blocks_per_head && counts[0] < keep_stride; s += 2) {
      keep[counts[0]++] = s;
    }
    for (int s = 0; s < tpb * blocks_per_head && counts[1] < keep_stride; ++s) {
      if (rng() % 3 == 0) keep[keep_stride + counts[1]++] = s;
    }
    const size_t pool_bytes = static_cast<size_t>(pool_blocks) * block_stride * DTypeSize(dtype);
    std::vector<uint8_t> pool(pool_bytes);
    for (uint8_t& b : pool) b = static_cast<uint8_t>(rng());
    const long v_offset = static_cast<long>(tpb) * d;
    KvCompactParams p;
    p.heads = heads;
    p.head_dim = d;
    p.keep = keep.data();
    p.keep_stride = keep_stride;
    p.counts = counts.data();
    p.block_table = table.data();
    p.blocks_per_head = blocks_per_head;
    p.tokens_per_block = tpb;
    p.kv_dtype = dtype;
    p.k_pool = pool.data();
    p.v_pool = pool.data() + v_offset * DTypeSize(dtype);
    p.block_stride = block_stride;
    p.pool_blocks = pool_blocks;
    DeviceBuffer dkeep(keep, 0), dcounts(counts, 0), dtable(table, 0), dpool(pool, 0),
        dscratch(std::vector<uint8_t>(static_cast<size_t>(heads) * keep_stride * 2 * d *
                                      DTypeSize(dtype)),
                 0);
    ASSERT_TRUE(KvCompact(p).ok());
    KvCompactParams g = p;
    g.keep = dkeep.as<int32_t>();
    g.counts = dcounts.as<int32_t>();
    g.block_table = dtable.as<int32_t>();
    g.k_pool = dpool.as<uint8_t>();
    g.v_pool = dpool.as<uint8_t>() + v_offset * DTypeSize(dtype);
    g.scratch = dscratch.as<uint8_t>();
    ASSERT_TRUE(KvCompact(g, kGpu).ok());
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    std::vector<uint8_t> back(pool_bytes);
    ASSERT_EQ(cudaMemcpy(back.data(), dpool.as<uint8_t>(), pool_bytes, cudaMemcpyDeviceToHost),
              cudaSuccess);
    EXPECT_TRUE(back == pool) << "the GPU pool differs from the CPU pool";
  }
}

// The fixed-point form is what the ranks all-reduce: the GPU must give the CPU's integers exactly,
// for scores across the whole range (tiny, halves, huge, negative, NaN).
TEST(KernelsParityTest, ScoresToFixedPoint) {
  DAPQ_SKIP_IF_NO_CUDA();
  std::vector<float> scores = Random(100003, 41);
  for (size_t i = 0; i < scores.size(); ++i)
    scores[i] = std::ldexp(scores[i], static_cast<int>(i % 80) - 40);
  scores[0] = std::numeric_limits<float>::quiet_NaN();
  scores[1] = std::ldexp(1.0f, -33);  // exactly half a unit
  std::vector<int64_t> expected(scores.size());
  ASSERT_TRUE(
      ScoresToFixedPoint({static_cast<long>(scores.size()), scores.data(), expected.data()}).ok());
  DeviceBuffer dscores(scores), dout(std::vector<int64_t>(scores.size(), -1), 0);
  ASSERT_TRUE(ScoresToFixedPoint(
                  {static_cast<long>(scores.size()), dscores.get(), dout.as<int64_t>()}, kGpu)
                  .ok());
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  std::vector<int64_t> got(scores.size());
  ASSERT_EQ(cudaMemcpy(got.data(), dout.as<int64_t>(), got.size() * sizeof(int64_t),
                       cudaMemcpyDeviceToHost),
            cudaSuccess);
  EXPECT_EQ(got, expected);
}

}  // namespace
}  // namespace dapq::kernels
