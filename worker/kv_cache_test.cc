// File: worker/kv_cache_test.cc
// The paged KvCache over the block pool (kvstore/block_pool_test.cc tests the pool): slots across
// block boundaries, ragged per-head compaction, blocks returned by Keep/DropLast/Clear/
// destruction, ResourceExhausted leaving the cache unchanged, moves, and copy-on-write of shared
// blocks (clones and attached prefixes) that never changes what the other holder reads.
#include "worker/kv_cache.h"

#include <numeric>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/types.h"
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

TEST(KvCacheTest, SlotsCrossBlocksAndRaggedKeepReturnsBlocks) {
  auto pool = *kvstore::BlockPool::Create(kDim, 4);
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
    const std::span<const kvstore::BlockId> t = cache.block_ids(1, 1);
    EXPECT_EQ(t.size(), 2u);
    EXPECT_EQ(reinterpret_cast<const float*>(pool->keys(t[1]))[kDim], 1109.0f);  // block 1, row 1
    EXPECT_EQ(reinterpret_cast<const float*>(pool->values(t[1]))[kDim], 1109.5f);
    EXPECT_THAT(cache.Keep(1, 1, std::vector<int32_t>{1, 1}),
                StatusIs(absl::StatusCode::kInvalidArgument));

    // A forward pass: reserve, write after each length, commit.
    ASSERT_TRUE(cache.ReserveAppend(3).ok());
    EXPECT_EQ(cache.num_blocks(1, 0), 2);  // 3 + 3 slots
    EXPECT_EQ(cache.num_blocks(1, 1), 3);  // 6 + 3 slots
    EXPECT_EQ(cache.num_blocks(0, 0), 4);  // 10 + 3 slots
    for (int l = 0; l < 2; ++l) {
      for (int h = 0; h < 2; ++h) {
        for (int i = 0; i < 3; ++i) {
          const std::vector<float> row(kDim, -1.0f - i);
          cache.WriteSlot(l, h, cache.length(l, h) + i, row.data(), row.data());
        }
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

    {
      KvCache clone = cache.Clone();  // shares every block
      EXPECT_EQ(Keys(clone, 1, 1), Keys(cache, 1, 1));
      EXPECT_EQ(clone.total_slots(), cache.total_slots());
      EXPECT_EQ(pool->blocks_in_use(), 9);
    }
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
  auto pool = *kvstore::BlockPool::Create(kDim, 2, 5);
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
  EXPECT_EQ(pool->blocks_in_use(), 5);
  // A write into a shared block needs a copy, and a full pool has none: nothing changes.
  KvCache c = b.Clone();
  EXPECT_THAT(c.AppendSlots(0, 0, std::span<const int32_t>(pos).first(1), kv.data(), kv.data()),
              StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_THAT(c.Keep(0, 0, std::vector<int32_t>{1}),
              StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_EQ(Keys(c, 0, 0), (std::vector<float>{0, 1}));
  EXPECT_EQ(pool->blocks_in_use(), 5);
}

TEST(KvCacheTest, CopyOnWriteKeepsTheOtherHolderUnchanged) {
  auto pool = *kvstore::BlockPool::Create(kDim, 4, 64);
  KvCache a(1, 1, kDim, pool);
  Append(a, 0, 0, 0, 6);  // block 0 full, block 1 half full
  KvCache b = a.Clone();
  EXPECT_EQ(pool->blocks_in_use(), 2);
  // b appends into the shared, half-full block: it gets its own copy of that block only.
  Append(b, 0, 0, 6, 1);
  EXPECT_EQ(pool->blocks_in_use(), 3);
  EXPECT_EQ(a.block_ids(0, 0)[0], b.block_ids(0, 0)[0]);
  EXPECT_NE(a.block_ids(0, 0)[1], b.block_ids(0, 0)[1]);
  EXPECT_EQ(Keys(a, 0, 0), (std::vector<float>{0, 1, 2, 3, 4, 5}));
  EXPECT_EQ(Keys(b, 0, 0), (std::vector<float>{0, 1, 2, 3, 4, 5, 6}));
  // A forward pass's reservation copies too.
  KvCache c = a.Clone();
  ASSERT_TRUE(c.ReserveAppend(1).ok());
  const std::vector<float> row(kDim, -9.0f);
  c.WriteSlot(0, 0, 6, row.data(), nullptr);
  const int32_t p6 = 6;
  c.Commit(&p6, 1);
  EXPECT_EQ(Keys(a, 0, 0), (std::vector<float>{0, 1, 2, 3, 4, 5}));
  EXPECT_EQ(Keys(c, 0, 0), (std::vector<float>{0, 1, 2, 3, 4, 5, -9}));
  // Compaction copies the blocks it writes into and leaves the others shared.
  ASSERT_TRUE(b.Keep(0, 0, std::vector<int32_t>{0, 1, 2, 3, 5}).ok());
  EXPECT_EQ(Keys(b, 0, 0), (std::vector<float>{0, 1, 2, 3, 5}));
  EXPECT_EQ(b.block_ids(0, 0)[0], a.block_ids(0, 0)[0]);  // slots 0-3 stayed in place
  EXPECT_EQ(Keys(a, 0, 0), (std::vector<float>{0, 1, 2, 3, 4, 5}));
  ASSERT_TRUE(b.Keep(0, 0, std::vector<int32_t>{1, 4}).ok());
  EXPECT_NE(b.block_ids(0, 0)[0], a.block_ids(0, 0)[0]);
  EXPECT_EQ(Keys(b, 0, 0), (std::vector<float>{1, 5}));
  EXPECT_EQ(Keys(a, 0, 0), (std::vector<float>{0, 1, 2, 3, 4, 5}));
}

TEST(KvCacheTest, PrefixBlocksAttachToAFreshCache) {
  auto pool = *kvstore::BlockPool::Create(kDim, 2, 64);
  KvCache a(2, 2, kDim, pool);
  for (int l = 0; l < 2; ++l) {
    for (int h = 0; h < 2; ++h) Append(a, l, h, 0, 5);
  }
  const std::vector<kvstore::BlockId> ids = a.PrefixBlocks(2);  // slots 0-3 of every slab
  ASSERT_EQ(ids.size(), 2u * 4);
  EXPECT_EQ(ids[1], a.block_ids(0, 1)[0]);
  EXPECT_EQ(ids[4 + 3], a.block_ids(1, 1)[1]);
  pool->Retain(ids);
  KvCache b(2, 2, kDim, pool);
  b.AttachPrefix(ids);
  EXPECT_EQ(b.max_length(), 4);
  EXPECT_EQ(Keys(b, 1, 1), (std::vector<float>{1100, 1101, 1102, 1103}));
  EXPECT_EQ(std::vector<int32_t>(b.positions(1, 0).begin(), b.positions(1, 0).end()),
            (std::vector<int32_t>{0, 1, 2, 3}));
  Append(b, 1, 1, 4, 1);  // a new block: the shared ones are full
  EXPECT_EQ(Keys(a, 1, 1), (std::vector<float>{1100, 1101, 1102, 1103, 1104}));
  a.Clear();
  b.Clear();
  EXPECT_EQ(pool->blocks_in_use(), 0);
}

// A bf16 or fp16 pool: slots are stored rounded (half the bytes), read back widened, and
// compaction and copy-on-write move the 2-byte rows intact.
TEST(KvCacheTest, TwoByteElementsRoundOnWriteAndMoveIntact) {
  for (kernels::DType dtype : {kernels::DType::kBF16, kernels::DType::kF16}) {
    SCOPED_TRACE(kernels::DTypeName(dtype));
    const auto round = [&](float x) {
      return dtype == kernels::DType::kBF16 ? kernels::Bf16ToFloat(kernels::FloatToBf16(x))
                                            : kernels::F16ToFloat(kernels::FloatToF16(x));
    };
    auto pool = *kvstore::BlockPool::Create(kDim, 4, 0, dtype);
    KvCache cache(1, 2, kDim, pool);
    EXPECT_EQ(cache.slot_bytes(), 2u * 2 * kDim);
    Append(cache, 0, 1, 0, 10);  // keys 100..109, values +0.5
    EXPECT_EQ(cache.bytes(), 3 * pool->block_bytes());
    std::vector<float> expected;
    for (int i = 0; i < 10; ++i) expected.push_back(round(100.0f + i));
    EXPECT_EQ(Keys(cache, 0, 1), expected);
    KvCache clone = cache.Clone();
    ASSERT_TRUE(cache.Keep(0, 1, std::vector<int32_t>{3, 7, 9}).ok());
    EXPECT_EQ(Keys(cache, 0, 1), (std::vector<float>{expected[3], expected[7], expected[9]}));
    EXPECT_EQ(Keys(clone, 0, 1), expected);  // the copy-on-write left the clone's blocks alone
    std::vector<float> v(3 * kDim);
    cache.Gather(0, 1, 0, 3, nullptr, v.data());
    EXPECT_EQ(v[kDim], round(107.5f));
    EXPECT_EQ(v[2 * kDim + kDim - 1], round(109.5f));
  }
}

}  // namespace
}  // namespace dapq::worker
