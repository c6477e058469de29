// File: worker/kv_cache_test.cc
// The KV block pool (cap, reuse, all-or-nothing) and the paged KvCache: slots across block
// boundaries, ragged per-head compaction, blocks returned by Keep/DropLast/Clear/destruction,
// ResourceExhausted leaving the cache unchanged, and moves.
#include "worker/kv_cache.h"

#include <numeric>
#include <vector>

#include "gtest/gtest.h"
#include "tests/util/status_matchers.h"

namespace dapq::worker {
namespace {
using ::dapq::testing::StatusIs;

constexpr int kDim = 3;

// Slot i of (layer, head) holds keys 1000*layer + 100*head + i (+0.5 for values) in every lane.
void Append(KvCache& cache, int layer, int head, int first, int count) {
  std::vector<int32_t> pos(count);
  std::vector<float> k(static_cast<size_t>(count) * kDim), v(k.size());
  for (int i = 0; i < count; ++i) {
    pos[i] = first + i;
    for (int j = 0; j < kDim; ++j) {
      k[i * kDim + j] = 1000.0f * layer + 100.0f * head + first + i;
      v[i * kDim + j] = k[i * kDim + j] + 0.5f;
    }
  }
  ASSERT_TRUE(cache.AppendSlots(layer, head, pos, k.data(), v.data()).ok());
}

std::vector<float> Keys(const KvCache& cache, int layer, int head) {
  std::vector<float> k(static_cast<size_t>(cache.length(layer, head)) * kDim);
  cache.Gather(layer, head, 0, cache.length(layer, head), k.data(), nullptr);
  std::vector<float> first;
  for (size_t i = 0; i < k.size(); i += kDim) first.push_back(k[i]);
  return first;
}

TEST(KvBlockPoolTest, RejectsBadOptions) {
  EXPECT_THAT(KvBlockPool::Create(kDim, 12).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("power of two")));
  EXPECT_FALSE(KvBlockPool::Create(0, 16).ok());
  EXPECT_FALSE(KvBlockPool::Create(kDim, 16, -1).ok());
}

TEST(KvBlockPoolTest, AllocateIsAllOrNothingAndReusesFreedBlocks) {
  auto pool = *KvBlockPool::Create(kDim, 4, 5);
  std::vector<KvBlockPool::Block> a;
  ASSERT_TRUE(pool->Allocate(3, a).ok());
  EXPECT_EQ(pool->blocks_in_use(), 3);
  std::vector<KvBlockPool::Block> b;
  EXPECT_THAT(pool->Allocate(3, b), StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_TRUE(b.empty());
  EXPECT_EQ(pool->blocks_in_use(), 3);
  std::vector<int32_t> ids = {a[0].id, a[1].id};
  pool->Free(ids);
  ASSERT_TRUE(pool->Allocate(4, b).ok());
  EXPECT_EQ(pool->blocks_in_use(), 5);
  EXPECT_EQ(pool->blocks_allocated(), KvBlockPool::kBlocksPerChunk);
  EXPECT_EQ(pool->block_bytes(), 2 * 4 * kDim * sizeof(float));
}

TEST(KvCacheTest, SlotsCrossBlocksAndRaggedKeepReturnsBlocks) {
  auto pool = *KvBlockPool::Create(kDim, 4);
  {
    KvCache cache(2, 2, kDim, pool);
    EXPECT_EQ(cache.tokens_per_block(), 4);
    for (int l = 0; l < 2; ++l) {
      for (int h = 0; h < 2; ++h) Append(cache, l, h, 0, 10);
    }
    EXPECT_EQ(cache.num_blocks(1, 1), 3);
    EXPECT_EQ(pool->blocks_in_use(), 12);
    EXPECT_EQ(cache.bytes(), 12 * pool->block_bytes());
    std::vector<float> expected(10);
    std::iota(expected.begin(), expected.end(), 1100.0f);
    EXPECT_EQ(Keys(cache, 1, 1), expected);

    // Per-head compaction: head 0 keeps 3 slots (one block), head 1 keeps 6 (two blocks).
    const std::vector<int32_t> keep0 = {2, 5, 9}, keep1 = {0, 1, 4, 6, 8, 9};
    ASSERT_TRUE(cache.Keep(1, 0, keep0).ok());
    ASSERT_TRUE(cache.Keep(1, 1, keep1).ok());
    EXPECT_EQ(Keys(cache, 1, 0), (std::vector<float>{1002, 1005, 1009}));
    EXPECT_EQ(Keys(cache, 1, 1), (std::vector<float>{1100, 1101, 1104, 1106, 1108, 1109}));
    EXPECT_EQ(std::vector<int32_t>(cache.positions(1, 1).begin(), cache.positions(1, 1).end()),
              keep1);
    std::vector<float> v(3 * kDim);
    cache.Gather(1, 0, 1, 2, nullptr, v.data());
    EXPECT_EQ(v[0], 1005.5f);
    EXPECT_EQ(v[kDim], 1009.5f);
    EXPECT_EQ(cache.num_blocks(1, 0), 1);
    EXPECT_EQ(cache.num_blocks(1, 1), 2);
    EXPECT_EQ(pool->blocks_in_use(), 9);
    const KvBlockTable t = cache.table(1, 1);
    EXPECT_EQ(t.length, 6);
    EXPECT_EQ(t.tokens_per_block, 4);
    EXPECT_EQ(t.k_blocks[1][kDim], 1109.0f);  // slot 5 = block 1, row 1
    EXPECT_EQ(t.v_blocks[1][kDim], 1109.5f);
    EXPECT_THAT(cache.Keep(1, 1, std::vector<int32_t>{1, 1}),
                StatusIs(absl::StatusCode::kInvalidArgument));

    // A forward pass: reserve, write after each length, commit.
    ASSERT_TRUE(cache.ReserveAppend(3).ok());
    EXPECT_EQ(cache.num_blocks(1, 0), 2);  // 3 + 3 slots
    EXPECT_EQ(cache.num_blocks(1, 1), 3);  // 6 + 3 slots
    EXPECT_EQ(cache.num_blocks(0, 0), 4);  // 10 + 3 slots
    for (int l = 0; l < 2; ++l) {
      for (int h = 0; h < 2; ++h) {
        for (int i = 0; i < 3; ++i) *cache.key_slot(l, h, cache.length(l, h) + i) = -1.0f - i;
      }
    }
    const int32_t pos[3] = {10, 11, 12};
    cache.Commit(pos, 3);
    EXPECT_EQ(Keys(cache, 1, 0), (std::vector<float>{1002, 1005, 1009, -1, -2, -3}));
    EXPECT_EQ(cache.max_length(), 13);
    EXPECT_EQ(cache.total_slots(), 13 + 13 + 6 + 9);

    ASSERT_TRUE(cache.DropLast(3).ok());
    EXPECT_EQ(cache.num_blocks(1, 0), 1);
    EXPECT_EQ(cache.num_blocks(0, 0), 3);
    EXPECT_EQ(pool->blocks_in_use(), 9);

    absl::StatusOr<KvCache> clone = cache.Clone();
    ASSERT_TRUE(clone.ok());
    EXPECT_EQ(Keys(*clone, 1, 1), Keys(cache, 1, 1));
    EXPECT_EQ(clone->total_slots(), cache.total_slots());
    EXPECT_EQ(pool->blocks_in_use(), 18);
    clone = absl::InternalError("drop the clone");
    EXPECT_EQ(pool->blocks_in_use(), 9);

    KvCache moved = std::move(cache);
    EXPECT_EQ(moved.length(1, 1), 6);
    EXPECT_EQ(pool->blocks_in_use(), 9);
    KvCache other(1, 1, kDim, pool);
    Append(other, 0, 0, 0, 1);
    EXPECT_EQ(pool->blocks_in_use(), 10);
    other = std::move(moved);  // releases other's block
    EXPECT_EQ(pool->blocks_in_use(), 9);
    other.Clear();
    EXPECT_EQ(pool->blocks_in_use(), 0);
    EXPECT_EQ(other.bytes(), 0u);
    Append(other, 1, 1, 0, 5);
    EXPECT_EQ(pool->blocks_in_use(), 2);
  }
  EXPECT_EQ(pool->blocks_in_use(), 0);  // destruction returns every block
}

TEST(KvCacheTest, FullPoolIsResourceExhaustedAndChangesNothing) {
  auto pool = *KvBlockPool::Create(kDim, 2, 5);
  KvCache a(1, 2, kDim, pool);
  ASSERT_TRUE(a.ReserveAppend(4).ok());  // 2 heads x 2 blocks
  EXPECT_EQ(pool->blocks_in_use(), 4);
  EXPECT_THAT(a.ReserveAppend(5), StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_EQ(a.num_blocks(0, 0), 2);
  EXPECT_EQ(pool->blocks_in_use(), 4);
  KvCache b(1, 1, kDim, pool);
  Append(b, 0, 0, 0, 2);
  std::vector<int32_t> pos = {2, 3};
  std::vector<float> kv(2 * kDim, 0.0f);
  EXPECT_THAT(b.AppendSlots(0, 0, pos, kv.data(), kv.data()),
              StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_EQ(b.length(0, 0), 2);
  EXPECT_THAT(b.AppendSlots(3, 0, pos, kv.data(), kv.data()),
              StatusIs(absl::StatusCode::kOutOfRange));
  EXPECT_THAT(b.Clone().status(), StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_EQ(pool->blocks_in_use(), 5);
}

}  // namespace
}  // namespace dapq::worker
