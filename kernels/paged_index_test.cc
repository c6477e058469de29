// File: kernels/paged_index_test.cc
// The shared attention index arithmetic (paged_index.h) on the CPU: the same functions the CUDA
// kernels call on the device. Split parts tile [0, len) exactly and start on unit boundaries;
// the split count fills the workers without parts under the minimum; paged offsets follow the
// block-table layout documented in attention.h. Inputs are seeded.
#include "kernels/paged_index.h"

#include <algorithm>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace dapq::kernels {
namespace {

TEST(PagedIndexTest, SplitPartsTileTheSlotsInOrderOnUnitBoundaries) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 2000; ++trial) {
    const int unit = 1 << (rng() % 12);  // 1 .. 2048
    const int len = static_cast<int>(rng() % 200000);
    const int parts = 1 + static_cast<int>(rng() % 64);
    SCOPED_TRACE(::testing::Message() << "len=" << len << " parts=" << parts << " unit=" << unit);
    int next = 0;
    for (int part = 0; part < parts; ++part) {
      const SlotRange r = SplitPart(len, part, parts, unit);
      ASSERT_EQ(r.begin, next);
      ASSERT_LE(r.begin, r.end);
      if (r.begin < len) {
        ASSERT_EQ(r.begin % unit, 0);
      }
      next = r.end;
    }
    ASSERT_EQ(next, len);
  }
}

TEST(PagedIndexTest, SplitPartsAreBalancedToWithinOneUnit) {
  const int unit = 1024, len = 1 << 20;
  for (int parts : {1, 2, 3, 7, 16, 132}) {
    int shortest = len, longest = 0;
    for (int part = 0; part < parts; ++part) {
      const SlotRange r = SplitPart(len, part, parts, unit);
      shortest = std::min(shortest, r.end - r.begin);
      longest = std::max(longest, r.end - r.begin);
    }
    EXPECT_LE(longest - shortest, unit) << "parts=" << parts;
  }
}

TEST(PagedIndexTest, OnePartIsTheWholeCache) {
  for (int len : {0, 1, 15, 16, 17, 100000}) {
    const SlotRange r = SplitPart(len, 0, 1, 1024);
    EXPECT_EQ(r.begin, 0);
    EXPECT_EQ(r.end, len);
  }
}

TEST(PagedIndexTest, SplitCountFillsTheWorkersWithoutShortParts) {
  // Many pairs already fill the workers: no split.
  EXPECT_EQ(SplitCount(/*tasks=*/64, /*workers=*/16, 1 << 20, 4096), 1);
  // A short cache is never split.
  EXPECT_EQ(SplitCount(1, 16, 8191, 4096), 1);
  // One pair over 1M slots on 132 workers: 132 parts of ~8K slots.
  EXPECT_EQ(SplitCount(1, 132, 1 << 20, 4096), 132);
  // Bounded by the minimum part: 32K slots give at most 8 parts of 4096.
  EXPECT_EQ(SplitCount(1, 132, 1 << 15, 4096), 8);
  // Three pairs on 16 workers: ceil(16 / 3) parts each.
  EXPECT_EQ(SplitCount(3, 16, 1 << 20, 4096), 6);
  std::mt19937 rng(11);
  for (int trial = 0; trial < 1000; ++trial) {
    const int tasks = 1 + static_cast<int>(rng() % 40), workers = 1 + static_cast<int>(rng() % 300);
    const int longest = static_cast<int>(rng() % (1 << 21)), min_slots = 256 << (rng() % 6);
    const int parts = SplitCount(tasks, workers, longest, min_slots);
    ASSERT_GE(parts, 1);
    if (parts > 1) {
      EXPECT_GE(longest / parts, min_slots);
      EXPECT_LT(tasks * (parts - 1), workers);
    }
  }
}

TEST(PagedIndexTest, PagedSlotFollowsTheBlockTable) {
  const int tpb = 16, head_dim = 64;
  const long block_stride = 2L * tpb * head_dim;  // keys then values, as BlockPool lays them out
  const std::vector<int32_t> table = {5, 0, 9, 3};
  for (int slot = 0; slot < tpb * static_cast<int>(table.size()); ++slot) {
    const long want = table[slot / tpb] * block_stride + (slot % tpb) * head_dim;
    EXPECT_EQ(PagedSlot(table.data(), slot, tpb, block_stride, head_dim), want) << slot;
  }
  // Ids past 2^31 / stride still give 64-bit offsets.
  const int32_t big = 1 << 30;
  EXPECT_EQ(PagedBlockRow(big, 1, block_stride, head_dim),
            static_cast<long>(big) * block_stride + head_dim);
}

TEST(PagedIndexTest, CausalVisibleCountsTheQueryTokensOwnSlot) {
  // Decode: one query token at the end of 100 slots sees all 100.
  EXPECT_EQ(CausalVisible(100, 1, 0), 100);
  // A chunk of 4 tokens ending a 10-slot cache: token 0 sees 7 slots, token 3 all 10.
  EXPECT_EQ(CausalVisible(10, 4, 0), 7);
  EXPECT_EQ(CausalVisible(10, 4, 3), 10);
}

TEST(PagedIndexTest, StackedRowsWalkTheGroupsHeadsTokenByToken) {
  // KV head 1 of a GQA group of 4 (query heads 4..7), head_dim 8, tokens 100 elements apart.
  const int group = 4, kv_head = 1, stride = 100, d = 8;
  for (long row = 0; row < 12; ++row) {
    const long token = row / group, head = kv_head * group + row % group;
    EXPECT_EQ(StackedRowOffset(row, group, kv_head, stride, d), token * stride + head * d) << row;
  }
  EXPECT_EQ(StackedRowOffset(0, group, kv_head, stride, d), 32);   // token 0, query head 4
  EXPECT_EQ(StackedRowOffset(7, group, kv_head, stride, d), 156);  // token 1, query head 7
  // Without GQA a row is a token.
  EXPECT_EQ(StackedRowOffset(5, 1, 3, stride, d), 5 * stride + 3 * d);
}

}  // namespace
}  // namespace dapq::kernels
