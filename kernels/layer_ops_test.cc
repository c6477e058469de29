// File: kernels/layer_ops_test.cc
// The forward pass's glue ops on the CPU: AddRmsNorm is bit-identical to the add followed by
// RmsNorm; Embedding copies fp32 rows and widens bf16 ones exactly, and names a token outside
// the vocabulary; KvAppend puts every row in the slot the attention kernels read through the
// block table, rounded as the scalar conversions round, and names a slot or block id outside
// its table or pool; KvCompact moves each head's kept rows to the front of its table, bytes
// unchanged, and leaves the rest. Their GPU twins: tests/parity/layer_ops_parity_test.cc.
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
#include "kernels/paged_index.h"
#include "kernels/rms_norm.h"
#include "tests/util/random.h"
#include "tests/util/status_matchers.h"

namespace dapq::kernels {
namespace {
using ::dapq::testing::IsOk;
using ::dapq::testing::StatusIs;
using ::dapq::testing::UniformFloats;
using ::testing::HasSubstr;

TEST(AddRmsNormTest, IsTheAddThenRmsNormBitForBit) {
  for (int dim : {1, 7, 260}) {
    const int rows = 4, stride = dim + 2;
    auto x = UniformFloats(static_cast<size_t>(rows) * stride, dim);
    const auto residual = UniformFloats(x.size(), dim + 1), w = UniformFloats(dim, dim + 2);
    std::vector<float> expected_x = x;
    for (int r = 0; r < rows; ++r) {
      for (int i = 0; i < dim; ++i) expected_x[r * stride + i] += residual[r * stride + i];
    }
    std::vector<float> expected(x.size(), 0.0f), out(x.size(), 0.0f);
    ASSERT_THAT(
        RmsNorm({rows, dim, expected_x.data(), stride, w.data(), expected.data(), stride, 1e-5f}),
        IsOk());
    ASSERT_THAT(AddRmsNorm({rows, dim, x.data(), stride, residual.data(), stride, w.data(),
                            out.data(), stride, 1e-5f}),
                IsOk());
    EXPECT_EQ(x, expected_x) << "dim=" << dim;  // the padding between rows untouched too
    EXPECT_EQ(out, expected) << "dim=" << dim;
  }
}

TEST(AddRmsNormTest, WithoutOutputOnlyAdds) {
  std::vector<float> x = {1, 2, 3}, residual = {0.5f, -2, 4};
  ASSERT_THAT(AddRmsNorm({1, 3, x.data(), 3, residual.data(), 3, nullptr, nullptr, 0, 1e-5f}),
              IsOk());
  EXPECT_EQ(x, (std::vector<float>{1.5f, 0, 7}));
}

TEST(AddRmsNormTest, RejectsAliasingAndBadStrides) {
  std::vector<float> x(8), w(4);
  EXPECT_THAT(AddRmsNorm({2, 4, x.data(), 4, x.data(), 4, w.data(), x.data(), 4, 1e-5f}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("out aliases")));
  EXPECT_THAT(AddRmsNorm({2, 4, x.data(), 3, x.data(), 4, w.data(), nullptr, 4, 1e-5f}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("row stride")));
  EXPECT_THAT(AddRmsNorm({2, 4, x.data(), 4, x.data(), 4, nullptr, w.data(), 4, 1e-5f}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("null pointer")));
}

TEST(EmbeddingTest, CopiesFp32RowsAndWidensBf16Rows) {
  const int vocab = 11, dim = 19, stride = 23;
  const auto table = UniformFloats(static_cast<size_t>(vocab) * dim, 3);
  std::vector<uint16_t> table_bf16(table.size());
  for (size_t i = 0; i < table.size(); ++i) table_bf16[i] = FloatToBf16(table[i]);
  const std::vector<int32_t> tokens = {10, 0, 4, 4};
  const int rows = static_cast<int>(tokens.size());
  std::vector<float> out(static_cast<size_t>(rows) * stride, -1.0f);
  ASSERT_THAT(
      Embedding({rows, dim, vocab, tokens.data(), DType::kF32, table.data(), out.data(), stride}),
      IsOk());
  for (int r = 0; r < rows; ++r) {
    EXPECT_EQ(std::memcmp(&out[r * stride], &table[tokens[r] * dim], dim * sizeof(float)), 0);
    EXPECT_EQ(out[r * stride + dim], -1.0f) << "wrote past the row";
  }
  ASSERT_THAT(Embedding({rows, dim, vocab, tokens.data(), DType::kBF16, table_bf16.data(),
                         out.data(), stride}),
              IsOk());
  for (int r = 0; r < rows; ++r) {
    for (int i = 0; i < dim; ++i) {
      EXPECT_EQ(out[r * stride + i], Bf16ToFloat(table_bf16[tokens[r] * dim + i]));
    }
  }
}

TEST(EmbeddingTest, NamesATokenOutsideTheVocabulary) {
  const std::vector<float> table(4 * 2);
  std::vector<float> out(4);
  const std::vector<int32_t> tokens = {1, 4};
  EXPECT_THAT(Embedding({2, 2, 4, tokens.data(), DType::kF32, table.data(), out.data(), 2}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("token 4 at row 1 outside")));
  EXPECT_THAT(Embedding({2, 2, 4, tokens.data(), DType::kF16, table.data(), out.data(), 2}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("fp16")));
}

// A pool of two KV heads with shuffled block tables; a chunk written from a mid-block slot.
class KvAppendTest : public ::testing::TestWithParam<DType> {
 protected:
  static constexpr int kHeads = 2, kDim = 8, kTpb = 4, kBlocksPerHead = 4, kPoolBlocks = 9;
  static constexpr long kBlockStride = 2L * kTpb * kDim;

  KvAppendParams Params(int tokens, const float* k, const float* v, void* pool) {
    KvAppendParams p;
    p.tokens = tokens;
    p.kv_heads = kHeads;
    p.head_dim = kDim;
    p.k = k;
    p.v = v;
    p.src_stride = kHeads * kDim;
    p.first_slots = first_.data();
    p.block_table = table_.data();
    p.blocks_per_head = kBlocksPerHead;
    p.tokens_per_block = kTpb;
    p.kv_dtype = GetParam();
    p.k_pool = pool;
    p.v_pool = static_cast<char*>(pool) + kTpb * kDim * DTypeSize(GetParam());
    p.block_stride = kBlockStride;
    p.pool_blocks = kPoolBlocks;
    return p;
  }

  float Stored(const std::vector<uint8_t>& pool, long element) const {
    const uint8_t* at = pool.data() + element * DTypeSize(GetParam());
    float f;
    uint16_t h;
    switch (GetParam()) {
      case DType::kF32:
        std::memcpy(&f, at, 4);
        return f;
      case DType::kBF16:
        std::memcpy(&h, at, 2);
        return Bf16ToFloat(h);
      case DType::kF16:
        std::memcpy(&h, at, 2);
        return F16ToFloat(h);
    }
    return 0;
  }

  float Rounded(float x) const {
    switch (GetParam()) {
      case DType::kF32:
        return x;
      case DType::kBF16:
        return Bf16ToFloat(FloatToBf16(x));
      case DType::kF16:
        return F16ToFloat(FloatToF16(x));
    }
    return 0;
  }

  std::vector<int32_t> first_ = {0, 3};
  std::vector<int32_t> table_ = {7, 2, 5, 0, 1, 8, 3, 6};
};

TEST_P(KvAppendTest, WritesEachRowToItsPagedSlot) {
  const int tokens = 6;
  const auto k = UniformFloats(static_cast<size_t>(tokens) * kHeads * kDim, 5, -4.0f, 4.0f);
  const auto v = UniformFloats(k.size(), 6, -4.0f, 4.0f);
  std::vector<uint8_t> pool(kPoolBlocks * kBlockStride * DTypeSize(GetParam()), 0);
  ASSERT_THAT(KvAppend(Params(tokens, k.data(), v.data(), pool.data())), IsOk());
  const long v_offset = kTpb * kDim;
  for (int h = 0; h < kHeads; ++h) {
    for (int t = 0; t < tokens; ++t) {
      const long slot =
          PagedSlot(&table_[h * kBlocksPerHead], first_[h] + t, kTpb, kBlockStride, kDim);
      for (int i = 0; i < kDim; ++i) {
        const long src = static_cast<long>(t) * kHeads * kDim + h * kDim + i;
        ASSERT_EQ(Stored(pool, slot + i), Rounded(k[src])) << "head " << h << " token " << t;
        ASSERT_EQ(Stored(pool, v_offset + slot + i), Rounded(v[src]));
      }
    }
  }
  // Block 4 is in no table: untouched.
  for (long e = 4 * kBlockStride; e < 5 * kBlockStride; ++e) ASSERT_EQ(Stored(pool, e), 0.0f);
}

TEST_P(KvAppendTest, NamesSlotsAndBlockIdsOutsideTheTable) {
  std::vector<float> k(static_cast<size_t>(20) * kHeads * kDim), v(k.size());
  std::vector<uint8_t> pool(kPoolBlocks * kBlockStride * DTypeSize(GetParam()));
  EXPECT_THAT(KvAppend(Params(14, k.data(), v.data(), pool.data())),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("KV head 1 slots [3, 17) outside its table")));
  table_[5] = kPoolBlocks;  // head 1, block 1
  EXPECT_THAT(KvAppend(Params(2, k.data(), v.data(), pool.data())),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("KV head 1 block 1 has id 9 outside the pool")));
}

TEST(ScoresToFixedPointTest, RoundsHalvesAwayClampsAndZeroesTheRest) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const std::vector<float> scores = {
      1.0f, 0.5f,  std::ldexp(1.0f, -33), std::ldexp(3.0f, -34), -2.0f, 0.0f,
      nan,  1e30f, std::ldexp(1.0f, 19)};
  std::vector<int64_t> out(scores.size(), -7);
  ASSERT_THAT(ScoresToFixedPoint({static_cast<long>(scores.size()), scores.data(), out.data()}),
              IsOk());
  const int64_t max = int64_t{1} << 52;
  EXPECT_EQ(out, (std::vector<int64_t>{int64_t{1} << 32, int64_t{1} << 31, 1, 1, 0, 0, 0, max,
                                       int64_t{1} << 51}));
  EXPECT_THAT(ScoresToFixedPoint({-1, scores.data(), out.data()}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("n=-1")));
}

INSTANTIATE_TEST_SUITE_P(Dtypes, KvAppendTest,
                         ::testing::Values(DType::kF32, DType::kBF16, DType::kF16),
                         [](const ::testing::TestParamInfo<DType>& info) {
                           return std::string(DTypeName(info.param));
                         });

// Two heads over shuffled tables in a pool of distinct bytes: each kept row lands in its new slot
// exactly, rows past the count keep their bytes, and bad keep-sets are named.
class KvCompactTest : public ::testing::TestWithParam<DType> {
 protected:
  static constexpr int kHeads = 2, kDim = 8, kTpb = 4, kBlocksPerHead = 4, kPoolBlocks = 9;
  static constexpr long kBlockStride = 2L * kTpb * kDim;

  KvCompactParams Params(uint8_t* pool) {
    KvCompactParams p;
    p.heads = kHeads;
    p.head_dim = kDim;
    p.keep = keep_.data();
    p.keep_stride = kKeepStride;
    p.counts = counts_.data();
    p.block_table = table_.data();
    p.blocks_per_head = kBlocksPerHead;
    p.tokens_per_block = kTpb;
    p.kv_dtype = GetParam();
    p.k_pool = pool;
    p.v_pool = pool + kTpb * kDim * DTypeSize(GetParam());
    p.block_stride = kBlockStride;
    p.pool_blocks = kPoolBlocks;
    return p;
  }
  // Bytes of slot `slot` of head h's keys (values when `values`) in `pool`.
  std::vector<uint8_t> Row(const std::vector<uint8_t>& pool, int h, int slot, bool values) const {
    const size_t elem = DTypeSize(GetParam());
    const long at = PagedSlot(&table_[h * kBlocksPerHead], slot, kTpb, kBlockStride, kDim) +
                    (values ? kTpb * kDim : 0);
    return {pool.begin() + at * elem, pool.begin() + (at + kDim) * elem};
  }

  static constexpr int kKeepStride = 6;
  // Head 0 keeps a run inside one block and rows across blocks; head 1 keeps its first slot.
  std::vector<int32_t> keep_ = {1, 2, 3, 6, 9, 15, 0, 4, 5, 13, -1, -1};
  std::vector<int32_t> counts_ = {6, 4};
  std::vector<int32_t> table_ = {7, 2, 5, 0, 1, 8, 3, 6};
};

TEST_P(KvCompactTest, MovesKeptRowsToTheFrontAndLeavesTheRest) {
  std::vector<uint8_t> before(kPoolBlocks * kBlockStride * DTypeSize(GetParam()));
  std::mt19937 rng(17);  // distinct rows: a misplaced one shows
  for (uint8_t& b : before) b = static_cast<uint8_t>(rng());
  std::vector<uint8_t> pool = before;
  ASSERT_THAT(KvCompact(Params(pool.data())), IsOk());
  for (int h = 0; h < kHeads; ++h) {
    for (int i = 0; i < kBlocksPerHead * kTpb; ++i) {
      const int from = i < counts_[h] ? keep_[h * kKeepStride + i] : i;
      for (const bool values : {false, true}) {
        ASSERT_EQ(Row(pool, h, i, values), Row(before, h, from, values))
            << "head " << h << " slot " << i << (values ? " values" : " keys");
      }
    }
  }
  // Block 4 is in no table: untouched.
  const size_t elem = DTypeSize(GetParam());
  EXPECT_TRUE(std::equal(pool.begin() + 4 * kBlockStride * elem,
                         pool.begin() + 5 * kBlockStride * elem,
                         before.begin() + 4 * kBlockStride * elem));
}

TEST_P(KvCompactTest, NamesKeepSetsThatAreNotAscendingOrLeaveThePool) {
  std::vector<uint8_t> pool(kPoolBlocks * kBlockStride * DTypeSize(GetParam()));
  keep_[2] = 2;  // head 0: 1, 2, 2
  EXPECT_THAT(
      KvCompact(Params(pool.data())),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("head 0 keep[2]=2: not ascending")));
  keep_[2] = 3;
  counts_[1] = 7;
  EXPECT_THAT(KvCompact(Params(pool.data())),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("head 1 count=7")));
  counts_[1] = 4;
  table_[7] = kPoolBlocks;  // head 1's block 3 (slot 13)
  EXPECT_THAT(KvCompact(Params(pool.data())),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("head 1 block 3 has id 9 outside the pool")));
}

INSTANTIATE_TEST_SUITE_P(Dtypes, KvCompactTest,
                         ::testing::Values(DType::kF32, DType::kBF16, DType::kF16),
                         [](const ::testing::TestParamInfo<DType>& info) {
                           return std::string(DTypeName(info.param));
                         });

}  // namespace
}  // namespace dapq::kernels
