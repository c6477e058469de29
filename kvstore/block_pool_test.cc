// File: kvstore/block_pool_test.cc
// BlockPool: bad options, arena addressing (ids, not pointers), the cap without side effects,
// reference counts, the prefix index (chain keys, longest-run lookup, cached blocks counted as
// free and evicted least recently used first, never while held), and a seeded random sequence of
// allocate/retain/release/insert/lookup checked against a model of the reference counts.
#include "kvstore/block_pool.h"

#include <map>
#include <numeric>
#include <random>

#include "gtest/gtest.h"
#include "tests/util/status_matchers.h"

namespace dapq::kvstore {
namespace {
using ::dapq::testing::IsOk;
using ::dapq::testing::StatusIs;

std::shared_ptr<BlockPool> Make(int head_dim, int tpb, long max_blocks) {
  auto pool = BlockPool::Create(head_dim, tpb, max_blocks);
  EXPECT_TRUE(pool.ok()) << pool.status();
  return *std::move(pool);
}

TEST(BlockPoolTest, RejectsBadOptions) {
  EXPECT_THAT(BlockPool::Create(4, 12),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("power of two")));
  EXPECT_THAT(BlockPool::Create(0, 16), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(BlockPool::Create(4, 16, -1), StatusIs(absl::StatusCode::kInvalidArgument));
}

float* Floats(std::byte* p) { return reinterpret_cast<float*>(p); }

TEST(BlockPoolTest, BlocksAreArenaOffsetsAndTheCapChangesNothing) {
  auto pool = Make(3, 4, 5);
  std::vector<BlockId> a;
  ASSERT_THAT(pool->Allocate(3, a), IsOk());
  EXPECT_EQ(a, (std::vector<BlockId>{0, 1, 2}));
  for (BlockId id : a) {
    EXPECT_EQ(pool->keys(id), pool->keys_base() + id * pool->block_stride() * sizeof(float));
    EXPECT_EQ(pool->values(id), pool->values_base() + id * pool->block_stride() * sizeof(float));
    std::fill_n(Floats(pool->keys(id)), 12, 1.0f + id);  // writable
    std::fill_n(Floats(pool->values(id)), 12, -1.0f - id);
  }
  EXPECT_EQ(Floats(pool->keys(2))[11], 3.0f);
  std::vector<BlockId> b;
  EXPECT_THAT(pool->Allocate(3, b),
              StatusIs(absl::StatusCode::kResourceExhausted, ::testing::HasSubstr("2 of 5 free")));
  EXPECT_TRUE(b.empty());
  EXPECT_EQ(pool->blocks_in_use(), 3);
  pool->Release(a);
  EXPECT_EQ(pool->blocks_in_use(), 0);
  ASSERT_THAT(pool->Allocate(5, b), IsOk());
  EXPECT_EQ(b, (std::vector<BlockId>{0, 1, 2, 3, 4}));  // freed blocks come back in order
  pool->Release(b);
}

TEST(BlockPoolTest, UncappedPoolCommitsChunksWithoutMovingTheBase) {
  auto pool = Make(8, 16, 0);
  const std::byte* base = pool->keys_base();
  std::vector<BlockId> ids;
  ASSERT_THAT(pool->Allocate(BlockPool::kBlocksPerChunk + 1, ids), IsOk());
  EXPECT_EQ(pool->blocks_allocated(), 2 * BlockPool::kBlocksPerChunk);
  EXPECT_EQ(pool->keys_base(), base);
  Floats(pool->values(ids.back()))[16 * 8 - 1] = 7.0f;  // the last element of the newest block
  pool->Release(ids);
}

TEST(BlockPoolTest, TwoByteElementsHalveTheBlocks) {
  ASSERT_OK_AND_ASSIGN(auto fp32, BlockPool::Create(8, 16, 4));
  for (kernels::DType dtype : {kernels::DType::kBF16, kernels::DType::kF16}) {
    ASSERT_OK_AND_ASSIGN(auto pool, BlockPool::Create(8, 16, 4, dtype));
    EXPECT_EQ(pool->dtype(), dtype);
    EXPECT_EQ(pool->element_bytes(), 2u);
    EXPECT_EQ(pool->block_bytes() * 2, fp32->block_bytes());
    EXPECT_EQ(pool->block_stride(), fp32->block_stride());  // in elements
    std::vector<BlockId> ids;
    ASSERT_THAT(pool->Allocate(4, ids), IsOk());
    EXPECT_EQ(pool->keys(3), pool->keys_base() + 3 * pool->block_bytes());
    EXPECT_EQ(pool->values(3), pool->keys(3) + 16 * 8 * 2);
    pool->values(3)[16 * 8 * 2 - 1] = std::byte{7};  // the last byte of the last block
    pool->Release(ids);
  }
}

TEST(BlockPoolTest, ReferenceCountsFreeOnTheLastRelease) {
  auto pool = Make(2, 2, 4);
  std::vector<BlockId> ids;
  ASSERT_THAT(pool->Allocate(2, ids), IsOk());
  pool->Retain(ids);
  EXPECT_EQ(pool->RefCount(ids[0]), 2);
  pool->Release(ids);
  EXPECT_EQ(pool->RefCount(ids[0]), 1);
  EXPECT_EQ(pool->blocks_in_use(), 2);
  pool->Release(ids);
  EXPECT_EQ(pool->RefCount(ids[0]), 0);
  EXPECT_EQ(pool->blocks_in_use(), 0);
}

TEST(BlockPoolTest, PrefixKeysChainOverEveryEarlierToken) {
  const std::vector<int> a = {1, 2, 3, 4, 5, 6, 7, 8, 9};
  std::vector<int> b = a;
  b[5] = 60;
  const std::vector<uint64_t> ka = PrefixKeys(a, 4), kb = PrefixKeys(b, 4);
  ASSERT_EQ(ka.size(), 2u);  // full blocks only
  EXPECT_EQ(ka[0], kb[0]);
  EXPECT_NE(ka[1], kb[1]);
  std::vector<int> c = a;
  c[0] = 10;  // an early token changes every later key
  EXPECT_NE(PrefixKeys(c, 4)[1], ka[1]);
  EXPECT_NE(PrefixKeys(a, 2)[1], ka[0]);  // the block size is part of the key
}

TEST(BlockPoolTest, CachedPrefixBlocksCountAsFreeAndAreEvictedOldestTailFirst) {
  constexpr int kPer = 2;  // blocks per entry
  auto pool = Make(2, 2, 8);
  std::vector<BlockId> seq;
  ASSERT_THAT(pool->Allocate(3 * kPer, seq), IsOk());
  const std::vector<uint64_t> keys = {11, 22, 33};
  pool->InsertPrefix(keys, seq, kPer);
  EXPECT_EQ(pool->blocks_cached(), 6);
  EXPECT_EQ(pool->cached_idle(), 0);  // the sequence still holds them
  pool->Release(seq);
  EXPECT_EQ(pool->blocks_in_use(), 0);  // only the index holds them: free
  EXPECT_EQ(pool->cached_idle(), 6);

  // A lookup takes the longest run and retains it for the caller.
  std::vector<BlockId> got;
  EXPECT_EQ(pool->LookupPrefix(std::vector<uint64_t>{11, 22, 99}, kPer, got), 2);
  EXPECT_EQ(got, (std::vector<BlockId>(seq.begin(), seq.begin() + 4)));
  EXPECT_EQ(pool->blocks_in_use(), 4);
  // Allocating past the free list evicts what nothing else holds: entry 33, not the held ones.
  std::vector<BlockId> more;
  ASSERT_THAT(pool->Allocate(4, more), IsOk());
  EXPECT_EQ(pool->prefix_entries(), 2);
  std::vector<BlockId> none;
  EXPECT_THAT(pool->Allocate(1, none), StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_EQ(pool->prefix_entries(), 2);  // held entries are never evicted for nothing
  pool->Release(more);
  pool->Release(got);
  pool->ClearPrefixes();
  EXPECT_EQ(pool->blocks_in_use(), 0);
  EXPECT_EQ(pool->blocks_cached(), 0);
  std::vector<BlockId> all;
  EXPECT_THAT(pool->Allocate(8, all), IsOk());
  pool->Release(all);
}

TEST(BlockPoolTest, RandomOperationsKeepTheCountsOfAModel) {
  std::mt19937 rng(20261206);
  constexpr int kPer = 3, kCap = 40;
  auto pool = Make(4, 2, kCap);
  std::vector<std::vector<BlockId>> held;  // each a holder's references
  uint64_t next_key = 1;
  std::map<uint64_t, std::vector<BlockId>> published;
  for (int step = 0; step < 2000; ++step) {
    const int op = std::uniform_int_distribution<int>(0, 4)(rng);
    if (op == 0) {
      std::vector<BlockId> ids;
      const int n = std::uniform_int_distribution<int>(1, 6)(rng) * kPer;
      if (pool->Allocate(n, ids).ok()) {
        EXPECT_EQ(static_cast<int>(ids.size()), n);
        held.push_back(ids);
      } else {
        EXPECT_TRUE(ids.empty());
      }
    } else if (op == 1 && !held.empty()) {
      const size_t i = rng() % held.size();
      pool->Release(held[i]);
      held.erase(held.begin() + i);
    } else if (op == 2 && !held.empty()) {
      const std::vector<BlockId> copy = held[rng() % held.size()];
      pool->Retain(copy);
      held.push_back(copy);
    } else if (op == 3 && !held.empty()) {
      const std::vector<BlockId>& ids = held[rng() % held.size()];
      std::vector<uint64_t> keys(ids.size() / kPer);
      for (auto& k : keys) k = next_key++;
      pool->InsertPrefix(keys, ids, kPer);
    } else if (op == 4 && next_key > 1) {
      std::vector<BlockId> got;
      const uint64_t k = 1 + rng() % (next_key - 1);
      if (pool->LookupPrefix(std::vector<uint64_t>{k}, kPer, got) == 1) held.push_back(got);
    }
    // Invariants: every held block has a reference per holder at least; the pool's in-use count
    // is the number of distinct blocks some holder holds.
    std::map<BlockId, int> refs;
    for (const auto& h : held) {
      for (BlockId b : h) ++refs[b];
    }
    for (const auto& [b, n] : refs) ASSERT_GE(pool->RefCount(b), n) << "block " << b;
    ASSERT_EQ(pool->blocks_in_use(), static_cast<long>(refs.size())) << "step " << step;
    ASSERT_LE(pool->blocks_in_use() + pool->cached_idle(), kCap);
  }
  for (const auto& h : held) pool->Release(h);
  pool->ClearPrefixes();
  EXPECT_EQ(pool->blocks_in_use(), 0);
  EXPECT_EQ(pool->cached_idle(), 0);
}

}  // namespace
}  // namespace dapq::kvstore
