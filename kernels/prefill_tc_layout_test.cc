// File: kernels/prefill_tc_layout_test.cc
// The tensor-core prefill kernel's index arithmetic (kernels/prefill_tc_layout.h), checked on
// the CPU: every WMMA fragment pointer the kernel forms is 32-byte aligned with a legal leading
// dimension, the shared-memory regions are disjoint, in order and fit an H100/H200 block, the
// lanes of a warp cover its 16 rows x 64 columns (softmax) and 16 rows x head_dim (output)
// exactly once, and the prefills that take the kernel are the ones AttentionParams documents.
#include "kernels/prefill_tc_layout.h"

#include <set>
#include <utility>
#include <vector>

#include "gtest/gtest.h"

namespace dapq::kernels {
namespace {

using L = PrefillTcLayout;

// The most dynamic shared memory a block may opt into on the GPUs we target (227 KiB).
constexpr size_t kMaxSharedBytes = 232448;
constexpr size_t kHalf = 2, kFloat = 4;

// WMMA's rules for load/store_matrix_sync: the pointer 256-bit aligned, ldm a multiple of 16
// bytes (8 16-bit elements, 4 floats).
void ExpectFragmentsAligned(size_t base, int stride, size_t elem, int rows, int cols) {
  EXPECT_EQ(stride * elem % 16, 0u) << "stride " << stride;
  for (int r = 0; r < rows; r += L::kFragment) {
    for (int c = 0; c < cols; c += L::kFragment) {
      EXPECT_EQ((base + (static_cast<size_t>(r) * stride + c) * elem) % 32, 0u)
          << "row " << r << " column " << c;
    }
  }
}

TEST(PrefillTcLayoutTest, FragmentsAreAlignedAndRegionsDisjoint) {
  for (int head_dim : {64, 128}) {
    SCOPED_TRACE(head_dim);
    constexpr PrefillTcLayout kL64 = MakePrefillTcLayout(64);  // usable at compile time
    static_assert(kL64.bytes > 0);
    const PrefillTcLayout l = MakePrefillTcLayout(head_dim);
    EXPECT_GE(l.qkv_stride, head_dim);
    EXPECT_GE(l.s_stride, L::kBc);
    EXPECT_GE(l.p_stride, L::kBc);
    EXPECT_GE(l.o_stride, head_dim);
    ExpectFragmentsAligned(l.q, l.qkv_stride, kHalf, L::kBr, head_dim);
    ExpectFragmentsAligned(l.k, l.qkv_stride, kHalf, L::kBc, head_dim);
    ExpectFragmentsAligned(l.v, l.qkv_stride, kHalf, L::kBc, head_dim);
    ExpectFragmentsAligned(l.s, l.s_stride, kFloat, L::kBr, L::kBc);
    ExpectFragmentsAligned(l.p, l.p_stride, kHalf, L::kBr, L::kBc);
    ExpectFragmentsAligned(l.o, l.o_stride, kFloat, L::kBr, head_dim);
    // 16-byte K/V chunks land on 16-byte boundaries of their rows.
    EXPECT_EQ(l.qkv_stride * kHalf % 16, 0u);
    // In order and disjoint: each region ends before the next begins.
    const std::vector<std::pair<size_t, size_t>> regions = {
        {0, sizeof(long) * L::kBc},           {l.q, kHalf * L::kBr * l.qkv_stride},
        {l.k, kHalf * L::kBc * l.qkv_stride}, {l.v, kHalf * L::kBc * l.qkv_stride},
        {l.s, kFloat * L::kBr * l.s_stride},  {l.p, kHalf * L::kBr * l.p_stride},
        {l.o, kFloat * L::kBr * l.o_stride},  {l.stats, kFloat * 3 * L::kBr},
    };
    for (size_t i = 1; i < regions.size(); ++i) {
      EXPECT_GE(regions[i].first, regions[i - 1].first + regions[i - 1].second) << "region " << i;
      EXPECT_EQ(regions[i].first % L::kAlign, 0u) << "region " << i;
    }
    EXPECT_EQ(l.bytes, regions.back().first + regions.back().second);
    EXPECT_LE(l.bytes, kMaxSharedBytes);
  }
  // The figures the kernel's header states.
  EXPECT_EQ(MakePrefillTcLayout(64).bytes, 72960u);
  EXPECT_EQ(MakePrefillTcLayout(128).bytes, 113920u);
}

TEST(PrefillTcLayoutTest, LanesCoverTheirWarpsRowsOnce) {
  EXPECT_EQ(L::kWarps * L::kWarpRows, L::kBr);
  for (int head_dim : {64, 128}) {
    std::set<std::pair<int, int>> softmax, output;
    for (int lane = 0; lane < 32; ++lane) {
      const int row = TcLaneRow(lane);
      ASSERT_GE(row, 0);
      ASSERT_LT(row, L::kWarpRows);
      // The two lanes of a row differ in the lowest bit only (a shuffle with xor 1 pairs them).
      EXPECT_EQ(TcLaneRow(lane ^ 1), row);
      for (int j = TcLaneColumn(lane); j < TcLaneColumn(lane) + L::kBc / 2; ++j) {
        EXPECT_TRUE(softmax.insert({row, j}).second) << "lane " << lane << " column " << j;
      }
      for (int e = TcLaneDim(lane, head_dim); e < TcLaneDim(lane, head_dim) + head_dim / 2; ++e) {
        EXPECT_TRUE(output.insert({row, e}).second) << "lane " << lane << " dim " << e;
      }
    }
    EXPECT_EQ(softmax.size(), static_cast<size_t>(L::kWarpRows) * L::kBc);
    EXPECT_EQ(softmax.rbegin()->second, L::kBc - 1);
    EXPECT_EQ(output.size(), static_cast<size_t>(L::kWarpRows) * head_dim);
    EXPECT_EQ(output.rbegin()->second, head_dim - 1);
  }
}

TEST(PrefillTcLayoutTest, VectorLoadsNeedWholeAlignedChunks) {
  EXPECT_TRUE(TcVectorLoads(128, 2L * 16 * 128, 4096, 4096 + 2 * 16 * 128));
  EXPECT_FALSE(TcVectorLoads(80 + 4, 2L * 16 * 84, 4096, 8192));  // rows of 84: not whole chunks
  EXPECT_FALSE(TcVectorLoads(128, 2L * 16 * 128 + 4, 4096, 8192));
  EXPECT_FALSE(TcVectorLoads(128, 2L * 16 * 128, 4096 + 8, 8192));
  EXPECT_FALSE(TcVectorLoads(128, 2L * 16 * 128, 4096, 8192 + 2));
}

TEST(PrefillTcLayoutTest, OnlyRoundedSixteenBitPagedPrefillsTakeTensorCores) {
  const int32_t table[1] = {0};
  AttentionParams p;
  p.head_dim = 128;
  p.block_table = table;
  p.kv_dtype = DType::kBF16;
  EXPECT_FALSE(PrefillUsesTensorCores(p)) << "rounding not allowed";
  p.round_to_kv_dtype = true;
  EXPECT_TRUE(PrefillUsesTensorCores(p));
  p.kv_dtype = DType::kF16;
  EXPECT_TRUE(PrefillUsesTensorCores(p));
  p.kv_dtype = DType::kF32;
  EXPECT_FALSE(PrefillUsesTensorCores(p)) << "fp32 pools stay exact";
  p.kv_dtype = DType::kBF16;
  p.head_dim = kTensorCoreMaxHeadDim + 16;
  EXPECT_FALSE(PrefillUsesTensorCores(p)) << "no bucket above 128";
  p.head_dim = 80;
  EXPECT_TRUE(PrefillUsesTensorCores(p)) << "zero-padded into the 128 bucket";
  p.block_table = nullptr;
  EXPECT_FALSE(PrefillUsesTensorCores(p)) << "the contiguous layout is fp32";
}

}  // namespace
}  // namespace dapq::kernels
