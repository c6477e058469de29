// File: worker/compress/selector_test.cc
// Selection and allocation on hand-made scores: window and sinks always kept, ties to the lower
// slot, pooling, fixed-point exactness, shared vs per_head, pyramid and AdaKV budgets.
#include "worker/compress/selector.h"

#include "gtest/gtest.h"
#include "tests/util/status_matchers.h"
#include "worker/comm/in_process_communicator.h"
#include "worker/compress/allocator.h"

namespace dapq::worker::compress {
namespace {
using ::testing::ElementsAre;

TEST(SelectKeepSetTest, KeepsSinksWindowAndTopWithTiesToLowerSlot) {
  //                          0  1  2  3  4  5  6  7  8  9
  const std::vector<int64_t> s = {0, 9, 5, 7, 7, 1, 7, 0, 0, 0};
  // budget 6 = sinks 1 + window 2 + top 3 of slots 1..7: 9 (1), then 7s at 3, 4, 6 -> 3, 4.
  EXPECT_THAT(SelectKeepSet(s, 10, 6, 2, 1), ElementsAre(0, 1, 3, 4, 8, 9));
  EXPECT_THAT(SelectKeepSet(s, 10, 10, 2, 1), ElementsAre(0, 1, 2, 3, 4, 5, 6, 7, 8, 9));
  EXPECT_THAT(SelectKeepSet(s, 10, 2, 5, 5), ElementsAre(8, 9));  // clamped to the budget
}

TEST(SelectLayerTest, SharedSumsHeadsAfterPoolingPerHeadDoesNot) {
  auto group = CreateInProcessGroup(1);
  ASSERT_TRUE(group.ok());
  CompressionConfig c;
  c.method = Method::kSnapKv;
  c.budget_tokens = 3;
  c.window = 1;
  c.sinks = 0;
  c.pool_kernel = 1;
  // head 0 prefers slot 1, head 1 prefers slot 3; slot 5 is the window.
  const std::vector<float> scores = {0.1f, 0.9f, 0.2f,  0.0f, 0.3f, 0.0f,
                                     0.1f, 0.0f, 0.25f, 0.8f, 0.0f, 0.0f};
  SelectionContext ctx{6, 2, 0, 2, 3, (*group)[0].get()};
  ASSERT_OK_AND_ASSIGN(auto shared, SelectLayer(c, ctx, scores));
  EXPECT_THAT(shared[0], ElementsAre(1, 3, 5));  // sums: .2 .9 .45 .8 .3
  EXPECT_EQ(shared[0], shared[1]);
  c.storage = Storage::kPerHead;
  ASSERT_OK_AND_ASSIGN(auto per_head, SelectLayer(c, ctx, scores));
  EXPECT_THAT(per_head[0], ElementsAre(1, 4, 5));
  EXPECT_THAT(per_head[1], ElementsAre(2, 3, 5));
  // Max pooling k=3 spreads a peak to its neighbours.
  c.storage = Storage::kShared;
  c.pool_kernel = 3;
  c.budget_tokens = 4;
  ctx.budget = 4;
  const std::vector<float> one_head = {0.0f, 0.0f, 1.0f, 0.0f, 0.5f, 0.0f};
  ctx.kv_heads = ctx.kv_heads_total = 1;
  ASSERT_OK_AND_ASSIGN(auto pooled, SelectLayer(c, ctx, one_head));
  EXPECT_THAT(pooled[0], ElementsAre(1, 2, 3, 5));  // pooled: 0 1 1 1 .5 .5
}

// SnapKV pools scores[..., :-window] only: a high score inside the window must not spread to
// the slots just before it (pooling the whole row used to pick slot 4 here).
TEST(SelectLayerTest, PoolingCoversTheEvictablePrefixOnly) {
  auto group = CreateInProcessGroup(1);
  ASSERT_TRUE(group.ok());
  CompressionConfig c;
  c.method = Method::kSnapKv;
  c.budget_tokens = 4;
  c.window = 3;
  c.sinks = 0;
  c.pool_kernel = 7;
  c.storage = Storage::kPerHead;
  const std::vector<float> scores = {0.5f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 100.0f, 0.0f, 0.0f};
  SelectionContext ctx{10, 1, 0, 1, 4, (*group)[0].get()};
  ASSERT_OK_AND_ASSIGN(auto keep, SelectLayer(c, ctx, scores));
  EXPECT_THAT(keep[0], ElementsAre(0, 7, 8, 9));  // slot 0's own 0.5 (ties: lower slot)
  // Average pooling counts the zero padding at the prefix's end, as avg_pool1d does.
  c.pool = kernels::PoolType::kAvg;
  ASSERT_OK_AND_ASSIGN(keep, SelectLayer(c, ctx, scores));
  EXPECT_THAT(keep[0], ElementsAre(0, 7, 8, 9));
}

TEST(SelectLayerTest, FixedPointSumIsOrderIndependent) {
  // Floats that do not add associatively.
  volatile float a = 1e8f, b = -1e8f, c = 1.0f;
  EXPECT_NE((a + b) + c, a + (b + c));
  const int64_t fa = ToFixedPoint(0.1f), fb = ToFixedPoint(0.2f), fc = ToFixedPoint(0.3f);
  EXPECT_EQ((fa + fb) + fc, fa + (fb + fc));
  EXPECT_EQ(ToFixedPoint(-1.0f), 0);
  EXPECT_EQ(ToFixedPoint(1.0f), int64_t{1} << 32);
}

TEST(AllocatorTest, PyramidFallsLinearlyAndAveragesTheBudget) {
  CompressionConfig c;
  c.method = Method::kSnapKv;
  c.budget_tokens = 72;
  c.window = 8;
  c.allocator = Allocator::kPyramid;
  const std::vector<int> b = LayerBudgets(c, 1000, 5);
  ASSERT_EQ(b.size(), 5u);
  for (int l = 1; l < 5; ++l) EXPECT_LT(b[l], b[l - 1]);
  double mean = 0;
  for (int x : b) mean += x;
  EXPECT_NEAR(mean / 5, 72, 2);
  EXPECT_EQ(b[0], 8 + 128 - 3);  // max_num = 2*64 - 64/20
  c.allocator = Allocator::kUniform;
  EXPECT_EQ(LayerBudgets(c, 1000, 5), std::vector<int>(5, 72));
  EXPECT_EQ(LayerBudgets(c, 50, 5), std::vector<int>(5, 50));  // never above n
}

TEST(AllocatorTest, AdaptiveGivesFloorsThenGlobalTop) {
  // Two heads, 6 eligible slots, 2 selectable per head, floor 50% -> 1 each, 2 by global top.
  const std::vector<int64_t> imp = {100, 90, 80, 1, 1, 1,   // head 0: strong
                                    5,   4,  3,  2, 1, 0};  // head 1: weak
  bool eligible[12];
  std::fill(eligible, eligible + 12, true);
  const std::vector<int> budgets =
      AdaptiveHeadBudgets(imp, 2, 6, std::span<const bool>(eligible, 12), 2, 0.5f);
  EXPECT_THAT(budgets, ElementsAre(3, 1));
}

TEST(AllocatorTest, AdaptiveSkipsSlotsPastAHeadsLength) {
  // Head 1 holds 2 slots only: it can take no more than those, the rest goes to head 0.
  const std::vector<int64_t> imp = {1, 1, 1, 1, 1, 1,   // head 0
                                    9, 9, 9, 9, 9, 9};  // head 1: slots 2.. are padding
  bool eligible[12];
  std::fill(eligible, eligible + 12, true);
  std::fill(eligible + 8, eligible + 12, false);
  const std::vector<int> budgets =
      AdaptiveHeadBudgets(imp, 2, 6, std::span<const bool>(eligible, 12), 3, 0.0f);
  EXPECT_THAT(budgets, ElementsAre(4, 2));
}

}  // namespace
}  // namespace dapq::worker::compress
