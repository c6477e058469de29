// File: kvstore/block_pool_test.cc
// BlockPool: bad options, arena addressing (ids, not pointers), the cap without side effects,
// reference counts, the prefix index (chain keys, longest-run lookup, cached blocks counted as
// free and evicted least recently used first, never while held), and a seeded random sequence of
// allocate/retain/release/insert/lookup checked against a model of the reference counts. The
// bookkeeping cases run on both arenas: the host (mmap) one and a context arena on the CPU
// context (the GPU's copy path); the context arena's own cases: the cap it needs, allocation
// failure, byte-level Read/Write/Move/CopyBlock round trips for every element type.
#include "kvstore/block_pool.h"

#include <cstring>
#include <map>
#include <numeric>
#include <random>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/device.h"
#include "tests/util/random.h"
#include "tests/util/status_matchers.h"

namespace dapq::kvstore {
namespace {
using ::dapq::testing::IsOk;
using ::dapq::testing::StatusIs;

enum class Arena { kHost, kContext };

std::shared_ptr<BlockPool> Make(int head_dim, int tpb, long max_blocks, Arena arena = Arena::kHost,
                                kernels::DType dtype = kernels::DType::kF32) {
  std::shared_ptr<kernels::ExecutionContext> context;
  if (arena == Arena::kContext) context = kernels::CreateCpuContext();
  auto pool = BlockPool::Create(head_dim, tpb, max_blocks, dtype, std::move(context));
  EXPECT_TRUE(pool.ok()) << pool.status();
  return *std::move(pool);
}

class BlockPoolArenaTest : public ::testing::TestWithParam<Arena> {};

INSTANTIATE_TEST_SUITE_P(Arenas, BlockPoolArenaTest,
                         ::testing::Values(Arena::kHost, Arena::kContext),
                         [](const ::testing::TestParamInfo<Arena>& info) {
                           return std::string(info.param == Arena::kHost ? "Host" : "Context");
                         });

TEST(BlockPoolTest, RejectsBadOptions) {
  EXPECT_THAT(BlockPool::Create(4, 12),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("power of two")));
  EXPECT_THAT(BlockPool::Create(0, 16), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(BlockPool::Create(4, 16, -1), StatusIs(absl::StatusCode::kInvalidArgument));
}

float* Floats(std::byte* p) { return reinterpret_cast<float*>(p); }

TEST_P(BlockPoolArenaTest, BlocksAreArenaOffsetsAndTheCapChangesNothing) {
  auto pool = Make(3, 4, 5, GetParam());
  std::vector<BlockId> a;
  ASSERT_THAT(pool->Allocate(3, a), IsOk());
  EXPECT_EQ(a, (std::vector<BlockId>{0, 1, 2}));
  for (BlockId id : a) {
    EXPECT_EQ(pool->keys(id), pool->keys_base() + id * pool->block_stride() * sizeof(float));
    EXPECT_EQ(pool->values(id), pool->values_base() + id * pool->block_stride() * sizeof(float));
    const std::vector<float> k(12, 1.0f + id), v(12, -1.0f - id);  // writable
    ASSERT_THAT(pool->Write(id, 0, k.data(), 12 * sizeof(float)), IsOk());
    ASSERT_THAT(pool->Write(id, pool->values_offset(), v.data(), 12 * sizeof(float)), IsOk());
  }
  float last = 0.0f;
  ASSERT_THAT(pool->Read(2, 11 * sizeof(float), &last, sizeof(last)), IsOk());
  EXPECT_EQ(last, 3.0f);
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

TEST_P(BlockPoolArenaTest, ReferenceCountsFreeOnTheLastRelease) {
  auto pool = Make(2, 2, 4, GetParam());
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

TEST_P(BlockPoolArenaTest, CachedPrefixBlocksCountAsFreeAndAreEvictedOldestTailFirst) {
  constexpr int kPer = 2;  // blocks per entry
  auto pool = Make(2, 2, 8, GetParam());
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

TEST_P(BlockPoolArenaTest, RandomOperationsKeepTheCountsOfAModel) {
  std::mt19937 rng(20261206);
  constexpr int kPer = 3, kCap = 40;
  auto pool = Make(4, 2, kCap, GetParam());
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

TEST(BlockPoolContextTest, ContextArenaNeedsACapNamingTheFlag) {
  std::shared_ptr<kernels::ExecutionContext> cpu = kernels::CreateCpuContext();
  EXPECT_THAT(
      BlockPool::Create(4, 16, 0, kernels::DType::kF32, cpu),
      StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("--kv_max_blocks")));
  EXPECT_THAT(BlockPool::Create(4, 12, 8, kernels::DType::kF32, cpu),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("power of two")));
}

TEST(BlockPoolContextTest, ContextArenaIsAllocatedOnceAndExposesItsContext) {
  std::shared_ptr<kernels::ExecutionContext> cpu = kernels::CreateCpuContext();
  ASSERT_OK_AND_ASSIGN(auto pool, BlockPool::Create(8, 16, 300, kernels::DType::kBF16, cpu));
  EXPECT_TRUE(pool->context_arena());
  EXPECT_EQ(pool->context(), cpu.get());
  EXPECT_EQ(pool->device(), cpu->device());
  EXPECT_EQ(pool->stream().backend, kernels::Backend::kCpu);
  EXPECT_EQ(pool->capacity(), 300);
  EXPECT_EQ(pool->blocks_allocated(), 300);  // committed at once, past a host chunk
  std::vector<BlockId> ids;
  ASSERT_THAT(pool->Allocate(300, ids), IsOk());
  EXPECT_EQ(ids.front(), 0);
  EXPECT_EQ(ids.back(), 299);
  pool->Release(ids);

  auto host = Make(8, 16, 300);
  EXPECT_FALSE(host->context_arena());
  EXPECT_EQ(host->context(), nullptr);
  EXPECT_EQ(host->device(), kernels::Device{});
  EXPECT_EQ(host->stream().handle, nullptr);
}

// A context on "cuda:3" whose allocations always fail.
class OutOfMemoryContext final : public kernels::ExecutionContext {
 public:
  kernels::Device device() const override { return {kernels::Backend::kCuda, 3}; }
  kernels::Stream stream() const override { return {kernels::Backend::kCuda, nullptr}; }
  absl::StatusOr<kernels::DeviceMemory> Allocate(size_t bytes, kernels::MemoryKind) override {
    return absl::ResourceExhaustedError(absl::StrCat("out of memory for ", bytes));
  }
  absl::Status CopyAsync(void*, const void*, size_t, kernels::CopyKind) override {
    return absl::InternalError("no copies");
  }
  absl::StatusOr<kernels::Event> RecordEvent() override { return kernels::Event(); }
  absl::Status StreamWait(const kernels::Event&) override { return absl::OkStatus(); }
  absl::StatusOr<bool> EventDone(const kernels::Event&) override { return true; }
  absl::Status Synchronize() override { return absl::OkStatus(); }
};

TEST(BlockPoolContextTest, ArenaAllocationFailureIsResourceExhaustedNamingBytesAndDevice) {
  auto context = std::make_shared<OutOfMemoryContext>();
  // 10 blocks of 2 x 16 x 8 fp16 elements: 5120 bytes.
  EXPECT_THAT(BlockPool::Create(8, 16, 10, kernels::DType::kF16, context),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       ::testing::AllOf(::testing::HasSubstr("5120 bytes"),
                                        ::testing::HasSubstr("cuda:3"))));
}

// Read/Write/Move/CopyBlock against a host model of every block's bytes, for each element type
// (head_dim 5: rows that are not a multiple of any vector width).
TEST_P(BlockPoolArenaTest, ByteAccessRoundTripsForEveryElementType) {
  for (kernels::DType dtype : {kernels::DType::kF32, kernels::DType::kBF16, kernels::DType::kF16}) {
    SCOPED_TRACE(kernels::DTypeName(dtype));
    constexpr int kDim = 5, kTpb = 4, kBlocks = 6;
    auto pool = Make(kDim, kTpb, kBlocks, GetParam(), dtype);
    std::vector<BlockId> ids;
    ASSERT_THAT(pool->Allocate(kBlocks, ids), IsOk());
    const size_t bb = pool->block_bytes();
    const size_t row = kDim * pool->element_bytes();
    EXPECT_EQ(pool->values_offset(), bb / 2);
    std::vector<std::vector<std::byte>> model(kBlocks, std::vector<std::byte>(bb));
    std::mt19937_64 rng(4242 + static_cast<int>(dtype));
    for (int b = 0; b < kBlocks; ++b) {
      for (std::byte& x : model[b]) x = static_cast<std::byte>(rng() & 0xff);
      ASSERT_THAT(pool->Write(b, 0, model[b].data(), bb), IsOk());
    }
    // A partial write: value row 2 of block 1.
    const auto rowv = dapq::testing::UniformFloats(kDim, 7);
    std::vector<std::byte> encoded(row);
    for (int j = 0; j < kDim; ++j) {
      if (dtype == kernels::DType::kF32) {
        std::memcpy(encoded.data() + 4 * j, &rowv[j], 4);
      } else {
        const uint16_t h = dtype == kernels::DType::kBF16 ? kernels::FloatToBf16(rowv[j])
                                                          : kernels::FloatToF16(rowv[j]);
        std::memcpy(encoded.data() + 2 * j, &h, 2);
      }
    }
    ASSERT_THAT(pool->Write(1, pool->values_offset() + 2 * row, encoded.data(), row), IsOk());
    std::memcpy(model[1].data() + pool->values_offset() + 2 * row, encoded.data(), row);
    // Whole-block copy, a move across blocks, and a move inside one block that does not overlap.
    ASSERT_THAT(pool->CopyBlock(4, 1), IsOk());
    model[4] = model[1];
    ASSERT_THAT(pool->Move(0, row, 3, 2 * row, 2 * row), IsOk());
    std::memcpy(model[0].data() + row, model[3].data() + 2 * row, 2 * row);
    ASSERT_THAT(pool->Move(5, 0, 5, 2 * row, 2 * row), IsOk());  // adjacent rows
    std::memmove(model[5].data(), model[5].data() + 2 * row, 2 * row);
    // Rejected, nothing copied: an overlapping move, ranges past the block or the pool.
    EXPECT_THAT(pool->Move(2, 0, 2, row, 2 * row), StatusIs(absl::StatusCode::kInvalidArgument));
    EXPECT_THAT(pool->Read(0, bb - row + 1, encoded.data(), row),
                StatusIs(absl::StatusCode::kOutOfRange));
    EXPECT_THAT(pool->Write(kBlocks, 0, encoded.data(), row),
                StatusIs(absl::StatusCode::kOutOfRange));
    EXPECT_THAT(pool->Move(-1, 0, 0, 0, row), StatusIs(absl::StatusCode::kOutOfRange));
    for (int b = 0; b < kBlocks; ++b) {
      std::vector<std::byte> got(bb);
      ASSERT_THAT(pool->Read(b, 0, got.data(), bb), IsOk());
      EXPECT_EQ(got, model[b]) << "block " << b;
    }
    // A partial read at an odd offset.
    std::vector<std::byte> part(3);
    ASSERT_THAT(pool->Read(4, 7, part.data(), 3), IsOk());
    EXPECT_EQ(part, std::vector<std::byte>(model[4].begin() + 7, model[4].begin() + 10));
    pool->Release(ids);
  }
}

// ReadAsync copies many ranges out at once and WriteAsync back in: the same bytes as Read and
// Write, one wait for all of them on the copy stream; a bad range anywhere rejects the whole
// batch before anything is copied.
TEST_P(BlockPoolArenaTest, AsyncCopiesMoveManyRangesWithOneWait) {
  constexpr int kDim = 8, kTpb = 4, kBlocks = 5;
  auto pool = Make(kDim, kTpb, kBlocks, GetParam(), kernels::DType::kBF16);
  std::vector<BlockId> ids;
  ASSERT_THAT(pool->Allocate(kBlocks, ids), IsOk());
  const size_t bb = pool->block_bytes();
  std::mt19937_64 rng(77);
  std::vector<std::byte> bytes(bb);
  for (BlockId b : ids) {
    for (std::byte& x : bytes) x = static_cast<std::byte>(rng() & 0xff);
    ASSERT_THAT(pool->Write(b, 0, bytes.data(), bb), IsOk());
  }
  // Keys of block 3, a value row of block 0, all of block 4, and an empty range.
  const size_t row = kDim * pool->element_bytes();
  const std::vector<BlockPool::HostCopy> ranges = {{3, 0, nullptr, bb / 2},
                                                   {0, pool->values_offset() + row, nullptr, row},
                                                   {4, 0, nullptr, bb},
                                                   {1, 5, nullptr, 0}};
  std::vector<std::vector<std::byte>> got(ranges.size()), want(ranges.size());
  std::vector<BlockPool::HostCopy> copies = ranges;
  for (size_t i = 0; i < ranges.size(); ++i) {
    got[i].assign(ranges[i].bytes, std::byte{0});
    want[i].resize(ranges[i].bytes);
    copies[i].host = got[i].data();
    ASSERT_THAT(pool->Read(ranges[i].id, ranges[i].offset, want[i].data(), ranges[i].bytes),
                IsOk());
  }
  ASSERT_OK_AND_ASSIGN(kernels::Event done, pool->ReadAsync(copies));
  ASSERT_THAT(pool->WaitCopies(), IsOk());
  ASSERT_OK_AND_ASSIGN(const bool complete, pool->CopiesDone(done));
  EXPECT_TRUE(complete);
  for (size_t i = 0; i < ranges.size(); ++i) EXPECT_EQ(got[i], want[i]) << "range " << i;
  std::vector<std::byte> untouched(row, std::byte{0x5a});
  const std::vector<BlockPool::HostCopy> bad = {{2, 0, untouched.data(), row},
                                                {kBlocks, 0, untouched.data(), row}};
  EXPECT_THAT(pool->ReadAsync(bad).status(), StatusIs(absl::StatusCode::kOutOfRange));
  EXPECT_EQ(untouched, std::vector<std::byte>(row, std::byte{0x5a}));
  // And in: WriteAsync puts the same ranges back from other bytes; a bad batch writes nothing.
  std::vector<std::vector<std::byte>> fresh(ranges.size());
  for (size_t i = 0; i < ranges.size(); ++i) {
    fresh[i].resize(ranges[i].bytes);
    for (std::byte& x : fresh[i]) x = static_cast<std::byte>(rng() & 0xff);
    copies[i].host = fresh[i].data();
  }
  ASSERT_THAT(pool->WriteAsync(copies).status(), IsOk());
  ASSERT_THAT(pool->WaitCopies(), IsOk());
  for (size_t i = 0; i < ranges.size(); ++i) {
    std::vector<std::byte> back(ranges[i].bytes);
    ASSERT_THAT(pool->Read(ranges[i].id, ranges[i].offset, back.data(), back.size()), IsOk());
    EXPECT_EQ(back, fresh[i]) << "range " << i;
  }
  std::vector<std::byte> before(row), after(row);
  ASSERT_THAT(pool->Read(2, 0, before.data(), row), IsOk());
  EXPECT_THAT(pool->WriteAsync(bad).status(), StatusIs(absl::StatusCode::kOutOfRange));
  ASSERT_THAT(pool->Read(2, 0, after.data(), row), IsOk());
  EXPECT_EQ(after, before);
  pool->Release(ids);
}

// The same allocations, releases and prefix entries on both arenas: the same ids, the same
// ResourceExhausted (message included) at the cap, the same evictions.
TEST(BlockPoolContextTest, CapacityExhaustionMatchesTheHostArena) {
  std::shared_ptr<BlockPool> pools[2] = {Make(4, 4, 7), Make(4, 4, 7, Arena::kContext)};
  std::vector<BlockId> a[2], b[2], c[2], d[2];
  absl::Status s[2];
  for (int i = 0; i < 2; ++i) {
    ASSERT_THAT(pools[i]->Allocate(4, a[i]), IsOk());
    EXPECT_EQ(pools[i]->blocks_allocated(), 7);
    s[i] = pools[i]->Allocate(4, b[i]);
    EXPECT_THAT(s[i], StatusIs(absl::StatusCode::kResourceExhausted));
    EXPECT_TRUE(b[i].empty());
    pools[i]->InsertPrefix(std::vector<uint64_t>{5, 6}, a[i], 2);
    pools[i]->Release(a[i]);                           // only the index holds them now
    ASSERT_THAT(pools[i]->Allocate(5, c[i]), IsOk());  // evicts the tail entry
    EXPECT_EQ(pools[i]->prefix_entries(), 1);
    EXPECT_THAT(pools[i]->Allocate(1, d[i]), IsOk());  // evicts the head entry
    EXPECT_THAT(pools[i]->Allocate(2, d[i]), StatusIs(absl::StatusCode::kResourceExhausted));
  }
  EXPECT_EQ(s[0].message(), s[1].message());
  EXPECT_EQ(a[0], a[1]);
  EXPECT_EQ(c[0], c[1]);
  EXPECT_EQ(d[0], d[1]);
  EXPECT_EQ(pools[0]->blocks_in_use(), pools[1]->blocks_in_use());
  EXPECT_EQ(pools[0]->prefix_entries(), 0);
  EXPECT_EQ(pools[1]->prefix_entries(), 0);
}

}  // namespace
}  // namespace dapq::kvstore
