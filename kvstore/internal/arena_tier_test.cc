// File: kvstore/internal/arena_tier_test.cc
// The CPU half of the CUDA tiers: the extent allocator (best fit, scattering, coalescing, against
// a byte-map model under random use) and ArenaTier over heap memory with failing copies; and the
// tier contract (tier_contract.h) on MemoryTier and ArenaTier, the checks that the GPU tiers run
// in cuda/cuda_tiers_test.cc.
#include "kvstore/internal/arena_tier.h"

#include <cstring>
#include <iterator>
#include <map>
#include <random>

#include "gtest/gtest.h"
#include "kvstore/internal/tier_contract.h"
#include "kvstore/memory_tier.h"
#include "tests/util/status_matchers.h"

namespace dapq::kvstore::internal {
namespace {
using ::dapq::testing::IsOk;
using ::dapq::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(ExtentAllocatorTest, BestFitThenScatterThenCoalesce) {
  ExtentAllocator a(100);
  ASSERT_OK_AND_ASSIGN(std::vector<Extent> x, a.Allocate(30));  // [0,30)
  ASSERT_OK_AND_ASSIGN(std::vector<Extent> y, a.Allocate(10));  // [30,40)
  ASSERT_OK_AND_ASSIGN(std::vector<Extent> z, a.Allocate(20));  // [40,60)
  ASSERT_OK_AND_ASSIGN(std::vector<Extent> w, a.Allocate(5));   // [60,65)
  EXPECT_THAT(x, ElementsAre(Extent{0, 30}));
  EXPECT_THAT(w, ElementsAre(Extent{60, 5}));
  a.Free(x);
  a.Free(z);  // free: [0,30) [40,60) [65,100)
  EXPECT_EQ(a.free_bytes(), 85u);
  ASSERT_OK_AND_ASSIGN(std::vector<Extent> fit, a.Allocate(18));  // smallest that holds it
  EXPECT_THAT(fit, ElementsAre(Extent{40, 18}));
  ASSERT_OK_AND_ASSIGN(std::vector<Extent> wide, a.Allocate(60));  // no single extent: scatter
  EXPECT_THAT(wide, ElementsAre(Extent{0, 30}, Extent{58, 2}, Extent{65, 28}));
  EXPECT_EQ(a.free_bytes(), 7u);
  EXPECT_THAT(a.Allocate(8), StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_EQ(a.free_bytes(), 7u);  // nothing taken
  ASSERT_OK_AND_ASSIGN(std::vector<Extent> none, a.Allocate(0));
  EXPECT_TRUE(none.empty());
  for (const auto* e : {&wide, &fit, &y, &w}) a.Free(*e);
  EXPECT_THAT(a.FreeExtents(), ElementsAre(Extent{0, 100}));
  EXPECT_EQ(a.free_bytes(), 100u);
}

TEST(ExtentAllocatorTest, RandomUseMatchesAByteMap) {
  constexpr size_t kCapacity = 4096;
  ExtentAllocator a(kCapacity);
  std::vector<int> owner(kCapacity, -1);  // which live allocation holds each byte
  std::map<int, std::vector<Extent>> live;
  std::mt19937_64 rng(7);
  SCOPED_TRACE("seed 7");
  for (int step = 0; step < 5000; ++step) {
    if (live.empty() || rng() % 3 != 0) {
      const size_t bytes = rng() % 700;
      absl::StatusOr<std::vector<Extent>> got = a.Allocate(bytes);
      const size_t free_before = a.free_bytes() + (got.ok() ? bytes : 0);
      if (bytes > free_before) {
        ASSERT_THAT(got.status(), StatusIs(absl::StatusCode::kResourceExhausted));
        continue;
      }
      ASSERT_TRUE(got.ok()) << got.status() << " step " << step;
      size_t total = 0;
      for (const Extent& e : *got) {
        ASSERT_GT(e.length, 0u);
        ASSERT_LE(e.offset + e.length, kCapacity);
        for (size_t i = e.offset; i < e.offset + e.length; ++i) {
          ASSERT_EQ(owner[i], -1) << "byte " << i << " given twice, step " << step;
          owner[i] = step;
        }
        total += e.length;
      }
      ASSERT_EQ(total, bytes);
      live[step] = *got;
    } else {
      auto it = std::next(live.begin(), static_cast<long>(rng() % live.size()));
      for (const Extent& e : it->second) {
        for (size_t i = e.offset; i < e.offset + e.length; ++i) owner[i] = -1;
      }
      a.Free(it->second);
      live.erase(it);
    }
    size_t free_in_map = 0;
    for (int o : owner) free_in_map += o == -1;
    ASSERT_EQ(a.free_bytes(), free_in_map) << "step " << step;
    const std::vector<Extent> free = a.FreeExtents();
    for (size_t i = 1; i < free.size(); ++i) {
      ASSERT_LT(free[i - 1].offset + free[i - 1].length, free[i].offset) << "not coalesced";
    }
  }
}

// ArenaTier over heap memory, with copies that fail on request.
class HeapArenaTier final : public ArenaTier {
 public:
  static absl::StatusOr<std::unique_ptr<HeapArenaTier>> Create(const TierOptions& options) {
    absl::Status s = options.Validate();
    if (!s.ok()) return s;
    return std::unique_ptr<HeapArenaTier>(new HeapArenaTier(options));
  }
  int fail_copy_in = 0;  // the next n CopyIn / CopyOut calls fail
  int fail_copy_out = 0;

 private:
  explicit HeapArenaTier(const TierOptions& options)
      : ArenaTier(options), memory_(options.capacity_bytes) {}

  absl::Status CopyIn(const std::string& block, const std::vector<Extent>& extents) override {
    if (fail_copy_in > 0) {
      --fail_copy_in;
      return absl::InternalError("injected copy-in failure");
    }
    size_t at = 0;
    for (const Extent& e : extents) {
      std::memcpy(memory_.data() + e.offset, block.data() + at, e.length);
      at += e.length;
    }
    return absl::OkStatus();
  }
  absl::StatusOr<std::string> CopyOut(const std::vector<Extent>& extents, size_t bytes) override {
    if (fail_copy_out > 0) {
      --fail_copy_out;
      return absl::InternalError("injected copy-out failure");
    }
    std::string out(bytes, '\0');
    size_t at = 0;
    for (const Extent& e : extents) {
      std::memcpy(out.data() + at, memory_.data() + e.offset, e.length);
      at += e.length;
    }
    return out;
  }

  std::vector<char> memory_;
};

absl::StatusOr<std::unique_ptr<Tier>> MakeHeapArenaTier(const TierOptions& options) {
  absl::StatusOr<std::unique_ptr<HeapArenaTier>> tier = HeapArenaTier::Create(options);
  if (!tier.ok()) return tier.status();
  return std::unique_ptr<Tier>(*std::move(tier));
}

absl::StatusOr<std::unique_ptr<Tier>> MakeMemoryTier(const TierOptions& options) {
  absl::StatusOr<std::unique_ptr<MemoryTier>> tier = MemoryTier::Create(options);
  if (!tier.ok()) return tier.status();
  return std::unique_ptr<Tier>(*std::move(tier));
}

TEST(TierContractTest, MemoryTier) { ExpectTierContract(MakeMemoryTier); }

TEST(TierContractTest, ArenaTier) { ExpectTierContract(MakeHeapArenaTier); }

TEST(ArenaTierTest, FailedCopiesLeaveTheTierAsItWas) {
  ASSERT_OK_AND_ASSIGN(auto tier, HeapArenaTier::Create({"device", 1000, 0.9, 0.7}));
  ASSERT_THAT(tier->Put("a", ContractBytes(300, 1)), IsOk());
  tier->fail_copy_in = 1;
  EXPECT_THAT(tier->Put("b", ContractBytes(300, 2)),
              StatusIs(absl::StatusCode::kInternal,
                       ::testing::AllOf(HasSubstr("tier device: put b"), HasSubstr("injected"))));
  EXPECT_FALSE(tier->Contains("b"));
  EXPECT_EQ(tier->used_bytes(), 300u);
  // A replacement with room of its own keeps the old block when its copy fails.
  tier->fail_copy_in = 1;
  EXPECT_THAT(tier->Put("a", ContractBytes(400, 3)), StatusIs(absl::StatusCode::kInternal));
  ASSERT_OK_AND_ASSIGN(std::string a, tier->Get("a"));
  EXPECT_EQ(a, ContractBytes(300, 1));
  EXPECT_EQ(tier->used_bytes(), 300u);
  tier->fail_copy_out = 1;
  EXPECT_THAT(tier->Get("a"), StatusIs(absl::StatusCode::kInternal, HasSubstr("get a")));
  ASSERT_OK_AND_ASSIGN(a, tier->Get("a"));  // still there
  EXPECT_EQ(a, ContractBytes(300, 1));
  // The arena is intact: it fills to capacity.
  ASSERT_THAT(tier->Put("fill", ContractBytes(700, 4)), IsOk());
  EXPECT_EQ(tier->used_bytes(), 1000u);
}

TEST(ArenaTierTest, FailedReplacementInItsPredecessorsSpaceDropsTheKey) {
  ASSERT_OK_AND_ASSIGN(auto tier, HeapArenaTier::Create({"device", 1000, 0.9, 0.7}));
  ASSERT_THAT(tier->Put("a", ContractBytes(500, 1)), IsOk());
  ASSERT_THAT(tier->Put("b", ContractBytes(400, 2)), IsOk());
  tier->fail_copy_in = 1;  // 600 bytes fit only in a's 500 plus the free 100
  EXPECT_THAT(tier->Put("a", ContractBytes(600, 3)),
              StatusIs(absl::StatusCode::kInternal, HasSubstr("earlier block is lost")));
  EXPECT_FALSE(tier->Contains("a"));
  EXPECT_THAT(tier->Get("a"), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_EQ(tier->used_bytes(), 400u);
  ASSERT_THAT(tier->Put("a", ContractBytes(600, 4)), IsOk());  // all its space came back
  ASSERT_OK_AND_ASSIGN(std::string a, tier->Get("a"));
  EXPECT_EQ(a, ContractBytes(600, 4));
  ASSERT_OK_AND_ASSIGN(std::string b, tier->Get("b"));
  EXPECT_EQ(b, ContractBytes(400, 2));
}

}  // namespace
}  // namespace dapq::kvstore::internal
