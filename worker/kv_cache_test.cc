// File: worker/kv_cache_test.cc
// The paged KvCache over the block pool (kvstore/block_pool_test.cc tests the pool): slots across
// block boundaries, ragged per-head compaction, blocks returned by Keep/DropLast/Clear/
// destruction, ResourceExhausted leaving the cache unchanged, moves, and copy-on-write of shared
// blocks (clones and attached prefixes) that never changes what the other holder reads. Every
// case runs on both arenas: the host (mmap) one read in place, and a context arena on the CPU
// context, reached only through the pool's copies exactly as a GPU arena is; a seeded random
// sequence of operations then checks the two give identical results, and a context whose copies
// fail shows device faults of slot reads and writes returned as statuses.
#include "worker/kv_cache.h"

#include <algorithm>
#include <cstring>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/device.h"
#include "kernels/types.h"
#include "tests/util/random.h"
#include "tests/util/status_matchers.h"

namespace dapq::worker {
namespace {
using ::dapq::testing::IsOk;
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
  EXPECT_TRUE(cache.Gather(layer, head, 0, cache.length(layer, head), k.data(), nullptr).ok());
  std::vector<float> first;
  for (size_t i = 0; i < k.size(); i += kDim) first.push_back(k[i]);
  return first;
}

enum class Arena { kHost, kContext };

// Blocks of a context arena when the test asks for an uncapped pool (a context arena needs a cap).
constexpr long kContextCap = 256;

// A pool of kDim-wide slots on `arena` (the context arena on the CPU context).
std::shared_ptr<kvstore::BlockPool> MakePool(Arena arena, int tpb, long max_blocks,
                                             kernels::DType dtype = kernels::DType::kF32) {
  std::shared_ptr<kernels::ExecutionContext> context;
  if (arena == Arena::kContext) {
    context = kernels::CreateCpuContext();
    if (max_blocks == 0) max_blocks = kContextCap;
  }
  auto pool = kvstore::BlockPool::Create(kDim, tpb, max_blocks, dtype, std::move(context));
  EXPECT_TRUE(pool.ok()) << pool.status();
  return *std::move(pool);
}

// Element `row` (of kDim) of block `id`'s keys (values when `values`), read through the pool.
float PoolRow(const kvstore::BlockPool& pool, kvstore::BlockId id, int row, bool values) {
  float x = 0.0f;
  const size_t offset = (values ? pool.values_offset() : 0) + row * kDim * sizeof(float);
  EXPECT_TRUE(pool.Read(id, offset, &x, sizeof(x)).ok());
  return x;
}

class KvCacheTest : public ::testing::TestWithParam<Arena> {
 protected:
  std::shared_ptr<kvstore::BlockPool> Pool(int tpb, long max_blocks = 0,
                                           kernels::DType dtype = kernels::DType::kF32) {
    auto pool = MakePool(GetParam(), tpb, max_blocks, dtype);
    EXPECT_EQ(pool->context_arena(), GetParam() == Arena::kContext);
    return pool;
  }
};

INSTANTIATE_TEST_SUITE_P(Arenas, KvCacheTest, ::testing::Values(Arena::kHost, Arena::kContext),
                         [](const ::testing::TestParamInfo<Arena>& info) {
                           return std::string(info.param == Arena::kHost ? "Host" : "Context");
                         });

TEST_P(KvCacheTest, SlotsCrossBlocksAndRaggedKeepReturnsBlocks) {
  auto pool = Pool(4);
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
    ASSERT_TRUE(cache.Gather(1, 0, 1, 2, nullptr, v.data()).ok());
    EXPECT_EQ(v[0], 1005.5f);
    EXPECT_EQ(v[kDim], 1009.5f);
    EXPECT_EQ(cache.num_blocks(1, 0), 1);
    EXPECT_EQ(cache.num_blocks(1, 1), 2);
    EXPECT_EQ(pool->blocks_in_use(), 9);
    const std::span<const kvstore::BlockId> t = cache.block_ids(1, 1);
    EXPECT_EQ(t.size(), 2u);
    EXPECT_EQ(PoolRow(*pool, t[1], 1, false), 1109.0f);  // block 1, row 1
    EXPECT_EQ(PoolRow(*pool, t[1], 1, true), 1109.5f);
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
          ASSERT_TRUE(cache.WriteSlot(l, h, cache.length(l, h) + i, row.data(), row.data()).ok());
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

TEST_P(KvCacheTest, FullPoolIsResourceExhaustedAndChangesNothing) {
  auto pool = Pool(2, 5);
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

TEST_P(KvCacheTest, CopyOnWriteKeepsTheOtherHolderUnchanged) {
  auto pool = Pool(4, 64);
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
  ASSERT_TRUE(c.WriteSlot(0, 0, 6, row.data(), nullptr).ok());
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

TEST_P(KvCacheTest, PrefixBlocksAttachToAFreshCache) {
  auto pool = Pool(2, 64);
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
TEST_P(KvCacheTest, TwoByteElementsRoundOnWriteAndMoveIntact) {
  for (kernels::DType dtype : {kernels::DType::kBF16, kernels::DType::kF16}) {
    SCOPED_TRACE(kernels::DTypeName(dtype));
    const auto round = [&](float x) {
      return dtype == kernels::DType::kBF16 ? kernels::Bf16ToFloat(kernels::FloatToBf16(x))
                                            : kernels::F16ToFloat(kernels::FloatToF16(x));
    };
    auto pool = Pool(4, 0, dtype);
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
    ASSERT_TRUE(cache.Gather(0, 1, 0, 3, nullptr, v.data()).ok());
    EXPECT_EQ(v[kDim], round(107.5f));
    EXPECT_EQ(v[2 * kDim + kDim - 1], round(109.5f));
  }
}

// The layer's block table as the kernels take it: [kv_heads, blocks_per_head], padded with 0.
std::vector<int32_t> LayerTable(const KvCache& cache, int layer, int& blocks_per_head) {
  blocks_per_head = 1;
  for (int h = 0; h < cache.kv_heads(); ++h) {
    blocks_per_head = std::max(blocks_per_head, cache.num_blocks(layer, h));
  }
  std::vector<int32_t> table(static_cast<size_t>(cache.kv_heads()) * blocks_per_head, 0);
  for (int h = 0; h < cache.kv_heads(); ++h) {
    const auto ids = cache.block_ids(layer, h);
    std::copy(ids.begin(), ids.end(), table.begin() + h * blocks_per_head);
  }
  return table;
}

// A forward pass through AppendRows (the default stream: the pool's own on a context arena):
// `rows` rows of every head of every layer, drawn from `seed`, committed at `first_position`.
void AppendForward(KvCache& cache, int rows, uint64_t seed, int first_position) {
  ASSERT_TRUE(cache.ReserveAppend(rows).ok());
  const int stride = cache.kv_heads() * kDim;
  for (int l = 0; l < cache.n_layers(); ++l) {
    const auto k = dapq::testing::UniformFloats(static_cast<size_t>(rows) * stride, seed + 2 * l);
    const auto v = dapq::testing::UniformFloats(k.size(), seed + 2 * l + 1);
    int bph = 0;
    const std::vector<int32_t> table = LayerTable(cache, l, bph);
    ASSERT_TRUE(cache.AppendRows(l, rows, k.data(), v.data(), stride, table.data(), bph).ok());
  }
  std::vector<int32_t> pos(rows);
  std::iota(pos.begin(), pos.end(), first_position);
  cache.Commit(pos.data(), rows);
}

// AppendRows writes after each head's (ragged) length, rounds to the pool's type, and copies a
// shared partly filled block first: the clone holding it reads what it read before.
TEST_P(KvCacheTest, AppendRowsWritesAfterRaggedLengthsAndCopiesSharedBlocks) {
  for (kernels::DType dtype : {kernels::DType::kF32, kernels::DType::kBF16, kernels::DType::kF16}) {
    SCOPED_TRACE(kernels::DTypeName(dtype));
    auto pool = Pool(4, 64, dtype);
    KvCache cache(2, 2, kDim, pool);
    for (int l = 0; l < 2; ++l) {
      for (int h = 0; h < 2; ++h) Append(cache, l, h, 0, 6);
    }
    ASSERT_TRUE(cache.Keep(1, 0, std::vector<int32_t>{1, 4}).ok());
    std::vector<float> before(6 * kDim);
    ASSERT_TRUE(cache.Gather(0, 1, 0, 6, before.data(), nullptr).ok());
    KvCache clone = cache.Clone();
    AppendForward(cache, 3, 77, 100);
    EXPECT_EQ(cache.length(1, 0), 5);
    EXPECT_EQ(cache.length(0, 1), 9);
    EXPECT_NE(cache.block_ids(0, 1)[1], clone.block_ids(0, 1)[1]);  // copied before the write
    EXPECT_EQ(cache.block_ids(0, 1)[0], clone.block_ids(0, 1)[0]);  // untouched: still shared
    std::vector<float> after(6 * kDim);
    ASSERT_TRUE(clone.Gather(0, 1, 0, 6, after.data(), nullptr).ok());
    EXPECT_EQ(after, before);
    // Head 1 of layer 0 is row 1 of each token in layer 0's input.
    const auto k0 = dapq::testing::UniformFloats(3 * 2 * kDim, 77);
    std::vector<float> got(3 * kDim);
    ASSERT_TRUE(cache.Gather(0, 1, 6, 3, got.data(), nullptr).ok());
    for (int t = 0; t < 3; ++t) {
      for (int j = 0; j < kDim; ++j) {
        const float x = k0[(t * 2 + 1) * kDim + j];
        const float want = dtype == kernels::DType::kF32 ? x
                           : dtype == kernels::DType::kBF16
                               ? kernels::Bf16ToFloat(kernels::FloatToBf16(x))
                               : kernels::F16ToFloat(kernels::FloatToF16(x));
        EXPECT_EQ(got[t * kDim + j], want) << "token " << t << " lane " << j;
      }
    }
  }
}

// Both arenas under one seeded random sequence of appends (AppendSlots, WriteSlot, AppendRows),
// clones, compactions, drops, clears and prefix sharing: the same statuses, block tables,
// positions, pool counts and bit-identical gathers after every step.
class TwoArenas {
 public:
  explicit TwoArenas(kernels::DType dtype)
      : pools_{MakePool(Arena::kHost, 4, kCap, dtype), MakePool(Arena::kContext, 4, kCap, dtype)} {}
  static constexpr long kCap = 120;
  std::shared_ptr<kvstore::BlockPool> pools_[2];
  std::vector<KvCache> caches_[2];

  void ExpectSame(int step) const {
    SCOPED_TRACE(::testing::Message() << "step " << step);
    ASSERT_EQ(caches_[0].size(), caches_[1].size());
    EXPECT_EQ(pools_[0]->blocks_in_use(), pools_[1]->blocks_in_use());
    EXPECT_EQ(pools_[0]->cached_idle(), pools_[1]->cached_idle());
    EXPECT_EQ(pools_[0]->prefix_entries(), pools_[1]->prefix_entries());
    for (size_t c = 0; c < caches_[0].size(); ++c) {
      const KvCache& a = caches_[0][c];
      const KvCache& b = caches_[1][c];
      for (int l = 0; l < a.n_layers(); ++l) {
        for (int h = 0; h < a.kv_heads(); ++h) {
          ASSERT_EQ(a.length(l, h), b.length(l, h)) << "cache " << c << " slab " << l << "," << h;
          EXPECT_TRUE(std::equal(a.positions(l, h).begin(), a.positions(l, h).end(),
                                 b.positions(l, h).begin(), b.positions(l, h).end()));
          EXPECT_TRUE(std::equal(a.block_ids(l, h).begin(), a.block_ids(l, h).end(),
                                 b.block_ids(l, h).begin(), b.block_ids(l, h).end()));
          const int n = a.length(l, h);
          if (n == 0) continue;  // nothing to gather (and memcmp takes no null pointers)
          std::vector<float> ka(n * kDim), va(ka.size()), kb(ka.size()), vb(ka.size());
          ASSERT_TRUE(a.Gather(l, h, 0, n, ka.data(), va.data()).ok());
          ASSERT_TRUE(b.Gather(l, h, 0, n, kb.data(), vb.data()).ok());
          EXPECT_EQ(std::memcmp(ka.data(), kb.data(), ka.size() * sizeof(float)), 0);
          EXPECT_EQ(std::memcmp(va.data(), vb.data(), va.size() * sizeof(float)), 0);
        }
      }
    }
  }
};

TEST(KvCacheArenaTest, RandomOperationsGiveIdenticalResultsOnBothArenas) {
  constexpr int kLayers = 2, kHeads = 2, kMaxCaches = 4;
  for (kernels::DType dtype : {kernels::DType::kF32, kernels::DType::kBF16, kernels::DType::kF16}) {
    SCOPED_TRACE(kernels::DTypeName(dtype));
    constexpr uint64_t kSeed = 20260701;
    SCOPED_TRACE(::testing::Message() << "seed " << kSeed);
    std::mt19937_64 rng(kSeed);
    TwoArenas t(dtype);
    uint64_t next_key = 1;
    for (int step = 0; step < 300; ++step) {
      const int op = static_cast<int>(rng() % 9);
      const uint64_t seed = rng();
      const size_t count = t.caches_[0].size();
      const size_t c = count == 0 ? 0 : rng() % count;
      const int layer = static_cast<int>(rng() % kLayers), head = static_cast<int>(rng() % kHeads);
      if (count == 0 || (op == 8 && count < kMaxCaches)) {  // a new sequence
        for (int a = 0; a < 2; ++a) t.caches_[a].emplace_back(kLayers, kHeads, kDim, t.pools_[a]);
      } else if (op == 0) {  // restore slots
        const int n = 1 + static_cast<int>(rng() % 7);
        std::vector<int32_t> pos(n);
        std::iota(pos.begin(), pos.end(), step * 16);
        const auto k = dapq::testing::UniformFloats(n * kDim, seed);
        const auto v = dapq::testing::UniformFloats(n * kDim, seed + 1);
        absl::Status s[2];
        for (int a = 0; a < 2; ++a) {
          s[a] = t.caches_[a][c].AppendSlots(layer, head, pos, k.data(), v.data());
        }
        ASSERT_EQ(s[0].code(), s[1].code()) << s[0] << " vs " << s[1];
      } else if (op == 1 || op == 2) {  // a forward pass: AppendRows or WriteSlot
        const int rows = 1 + static_cast<int>(rng() % 5);
        absl::Status s[2];
        for (int a = 0; a < 2; ++a) s[a] = t.caches_[a][c].ReserveAppend(rows);
        ASSERT_EQ(s[0].code(), s[1].code()) << s[0] << " vs " << s[1];
        for (int a = 0; a < 2 && s[0].ok(); ++a) {
          KvCache& cache = t.caches_[a][c];
          if (op == 1) {
            AppendForward(cache, rows, seed, step * 16);  // its reservation is made: no blocks
            continue;
          }
          for (int l = 0; l < kLayers; ++l) {
            for (int h = 0; h < kHeads; ++h) {
              const auto kv = dapq::testing::UniformFloats(2 * rows * kDim, seed + l * kHeads + h);
              for (int r = 0; r < rows; ++r) {
                const absl::Status written =
                    cache.WriteSlot(l, h, cache.length(l, h) + r, kv.data() + r * kDim,
                                    kv.data() + (rows + r) * kDim);
                ASSERT_TRUE(written.ok()) << written;
              }
            }
          }
          std::vector<int32_t> pos(rows);
          std::iota(pos.begin(), pos.end(), step * 16);
          cache.Commit(pos.data(), rows);
        }
      } else if (op == 3) {  // a fork
        if (count >= kMaxCaches) continue;
        for (int a = 0; a < 2; ++a) t.caches_[a].push_back(t.caches_[a][c].Clone());
      } else if (op == 4) {  // a compaction
        std::vector<int32_t> keep;
        for (int i = 0; i < t.caches_[0][c].length(layer, head); ++i) {
          if (rng() % 5 < 3) keep.push_back(i);
        }
        absl::Status s[2];
        for (int a = 0; a < 2; ++a) s[a] = t.caches_[a][c].Keep(layer, head, keep);
        ASSERT_EQ(s[0].code(), s[1].code()) << s[0] << " vs " << s[1];
      } else if (op == 5) {  // drop pseudo tokens
        const int n = static_cast<int>(rng() % 3);
        absl::Status s[2];
        for (int a = 0; a < 2; ++a) s[a] = t.caches_[a][c].DropLast(n);
        ASSERT_EQ(s[0].code(), s[1].code());
      } else if (op == 6) {  // a sequence ends
        for (int a = 0; a < 2; ++a) t.caches_[a].erase(t.caches_[a].begin() + c);
      } else {  // publish the full blocks, then attach them to a fresh cache
        int min_len = t.caches_[0][c].length(0, 0);
        for (int l = 0; l < kLayers; ++l) {
          for (int h = 0; h < kHeads; ++h)
            min_len = std::min(min_len, t.caches_[0][c].length(l, h));
        }
        const int blocks = min_len / 4;
        if (blocks == 0 || count >= kMaxCaches) continue;
        std::vector<uint64_t> keys(blocks);
        std::iota(keys.begin(), keys.end(), next_key);
        next_key += blocks;
        int found[2];
        for (int a = 0; a < 2; ++a) {
          const std::vector<kvstore::BlockId> ids = t.caches_[a][c].PrefixBlocks(blocks);
          t.pools_[a]->InsertPrefix(keys, ids, kLayers * kHeads);
          std::vector<kvstore::BlockId> got;
          // Fewer than `blocks` when some of them already belong to another entry.
          found[a] = t.pools_[a]->LookupPrefix(keys, kLayers * kHeads, got);
          t.caches_[a].emplace_back(kLayers, kHeads, kDim, t.pools_[a]);
          t.caches_[a].back().AttachPrefix(got);
        }
        ASSERT_EQ(found[0], found[1]);
      }
      t.ExpectSame(step);
      if (::testing::Test::HasFatalFailure()) return;
    }
    for (int a = 0; a < 2; ++a) {
      t.caches_[a].clear();
      t.pools_[a]->ClearPrefixes();
      EXPECT_EQ(t.pools_[a]->blocks_in_use(), 0);
    }
  }
}

// The CPU context with switchable copy failures: a device fault, as a CUDA context reports it.
class FaultyContext : public kernels::ExecutionContext {
 public:
  FaultyContext() : inner_(kernels::CreateCpuContext()) {}
  ~FaultyContext() override { ReleaseWorkspace(); }
  void set_fail(bool fail) { fail_ = fail; }

  kernels::Device device() const override { return inner_->device(); }
  kernels::Stream stream() const override { return inner_->stream(); }
  absl::StatusOr<kernels::DeviceMemory> Allocate(size_t bytes, kernels::MemoryKind kind) override {
    return inner_->Allocate(bytes, kind);
  }
  absl::Status CopyAsync(void* dst, const void* src, size_t bytes,
                         kernels::CopyKind kind) override {
    if (fail_) return absl::InternalError("injected device fault");
    return inner_->CopyAsync(dst, src, bytes, kind);
  }
  absl::StatusOr<kernels::Event> RecordEvent() override { return inner_->RecordEvent(); }
  absl::Status StreamWait(const kernels::Event& event) override {
    return inner_->StreamWait(event);
  }
  absl::StatusOr<bool> EventDone(const kernels::Event& event) override {
    return inner_->EventDone(event);
  }
  absl::Status Synchronize() override { return inner_->Synchronize(); }

 private:
  std::unique_ptr<kernels::ExecutionContext> inner_;
  bool fail_ = false;
};

// A failed device copy under WriteSlot, Gather and GatherLayer is returned (naming the layer,
// head and slots), not fatal; the cache works again once the device does.
TEST(KvCacheArenaTest, DeviceFaultsOfSlotReadsAndWritesAreReturned) {
  auto context = std::make_shared<FaultyContext>();
  auto pool = kvstore::BlockPool::Create(kDim, 4, 16, kernels::DType::kF32, context);
  ASSERT_TRUE(pool.ok()) << pool.status();
  KvCache cache(2, 2, kDim, *pool);
  for (int l = 0; l < 2; ++l) {
    for (int h = 0; h < 2; ++h) Append(cache, l, h, 0, 3);
  }
  ASSERT_TRUE(cache.ReserveAppend(1).ok());
  const std::vector<float> row(kDim, -1.0f);
  std::vector<float> k(3 * kDim);
  std::vector<float> layer_k;

  context->set_fail(true);
  EXPECT_THAT(cache.WriteSlot(1, 0, 3, row.data(), row.data()),
              StatusIs(absl::StatusCode::kInternal,
                       ::testing::AllOf(::testing::HasSubstr("slot 3 of layer 1 head 0"),
                                        ::testing::HasSubstr("injected device fault"))));
  EXPECT_THAT(cache.Gather(1, 1, 0, 3, k.data(), nullptr),
              StatusIs(absl::StatusCode::kInternal,
                       ::testing::HasSubstr("slots [0, 3) of layer 1 head 1")));
  EXPECT_THAT(cache.GatherLayer(0, 3, &layer_k, nullptr),
              StatusIs(absl::StatusCode::kInternal, ::testing::HasSubstr("of layer 0 head 0")));

  context->set_fail(false);
  ASSERT_THAT(cache.WriteSlot(1, 0, 3, row.data(), row.data()), IsOk());
  ASSERT_THAT(cache.Gather(1, 1, 0, 3, k.data(), nullptr), IsOk());
  EXPECT_EQ(k[2 * kDim], 1102.0f);
  ASSERT_THAT(cache.GatherLayer(0, 3, &layer_k, nullptr), IsOk());
  EXPECT_EQ(layer_k.size(), 2u * 3 * kDim);
  EXPECT_EQ(layer_k[3 * kDim], 100.0f);  // head 1, slot 0
}

}  // namespace
}  // namespace dapq::worker
