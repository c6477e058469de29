// File: kvstore/internal/tier_contract.h
// Test-only (gtest): the Tier contract of tier.h as checks that run against any in-memory tier
// made by a factory — MemoryTier and ArenaTier on the CPU (arena_tier_test.cc), the GPU and
// pinned host tiers on a GPU machine (cuda/cuda_tiers_test.cc). Running the same checks on the
// CPU tiers shows that the checks themselves hold on machines without a GPU.
#ifndef DAPQ_KVSTORE_INTERNAL_TIER_CONTRACT_H_
#define DAPQ_KVSTORE_INTERNAL_TIER_CONTRACT_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kvstore/tier.h"
#include "tests/util/kv_blocks.h"
#include "tests/util/status_matchers.h"

namespace dapq::kvstore::internal {

using TierFactory = std::function<absl::StatusOr<std::unique_ptr<Tier>>(const TierOptions&)>;

// `n` seeded bytes covering every byte value ('\0' included).
inline std::string ContractBytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string out(n, '\0');
  for (char& c : out) c = static_cast<char>(rng() & 0xff);
  return out;
}

// Blocks of awkward sizes (empty, 1, odd, around 4 KiB, an encoded KV block) come back
// byte-identical; a replaced block reads back as its successor; absent keys are NotFound.
inline void ExpectRoundTrips(const TierFactory& make) {
  using ::dapq::testing::IsOk;
  using ::dapq::testing::StatusIs;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Tier> tier, make({"contract", 1 << 16, 0.9, 0.7}));
  size_t used = 0;
  std::vector<std::string> keys;
  for (size_t n : {size_t{0}, size_t{1}, size_t{7}, size_t{4095}, size_t{4096}, size_t{12347}}) {
    const std::string key = absl::StrCat("k", n);
    ASSERT_THAT(tier->Put(key, ContractBytes(n, n)), IsOk()) << key;
    used += n;
    keys.push_back(key);
  }
  const std::string kv = dapq::testing::TestBlock(3);
  ASSERT_THAT(tier->Put("kv.b0", kv), IsOk());
  used += kv.size();
  keys.push_back("kv.b0");
  EXPECT_EQ(tier->used_bytes(), used);
  for (size_t n : {size_t{0}, size_t{1}, size_t{7}, size_t{4095}, size_t{4096}, size_t{12347}}) {
    const std::string key = absl::StrCat("k", n);
    ASSERT_OK_AND_ASSIGN(std::string got, tier->Get(key));
    EXPECT_EQ(got, ContractBytes(n, n)) << key;
    EXPECT_TRUE(tier->Contains(key));
  }
  ASSERT_OK_AND_ASSIGN(std::string got_kv, tier->Get("kv.b0"));
  EXPECT_EQ(got_kv, kv);
  EXPECT_THAT(tier->Keys(), ::testing::UnorderedElementsAreArray(keys));
  // Replace with a larger and then a smaller block.
  ASSERT_THAT(tier->Put("k7", ContractBytes(1000, 70)), IsOk());
  ASSERT_OK_AND_ASSIGN(std::string bigger, tier->Get("k7"));
  EXPECT_EQ(bigger, ContractBytes(1000, 70));
  ASSERT_THAT(tier->Put("k7", ContractBytes(3, 71)), IsOk());
  ASSERT_OK_AND_ASSIGN(std::string smaller, tier->Get("k7"));
  EXPECT_EQ(smaller, ContractBytes(3, 71));
  EXPECT_EQ(tier->used_bytes(), used - 7 + 3);
  EXPECT_THAT(tier->Get("absent"),
              StatusIs(absl::StatusCode::kNotFound, ::testing::HasSubstr("contract")));
  EXPECT_FALSE(tier->Contains("absent"));
}

// Capacity and watermarks (as MemoryTierTest.CapacityAndWatermarks); a Put that does not fit is
// ResourceExhausted naming the tier and changes nothing; a replacement may use its predecessor's
// bytes; bad options are InvalidArgument.
inline void ExpectCapacityAndWatermarks(const TierFactory& make) {
  using ::dapq::testing::IsOk;
  using ::dapq::testing::StatusIs;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Tier> tier, make({"host", 5000, 0.6, 0.3}));
  EXPECT_EQ(tier->capacity_bytes(), 5000u);
  const std::string b = ContractBytes(2164, 1);
  ASSERT_THAT(tier->Put("a", b), IsOk());
  EXPECT_FALSE(tier->AboveHighWatermark());
  ASSERT_THAT(tier->Put("b", b), IsOk());
  EXPECT_TRUE(tier->AboveHighWatermark());
  EXPECT_THAT(tier->Put("c", b),
              StatusIs(absl::StatusCode::kResourceExhausted, ::testing::HasSubstr("host")));
  EXPECT_FALSE(tier->Contains("c"));
  EXPECT_EQ(tier->used_bytes(), 2 * b.size());
  // A replacement that does not fit leaves the old block as it was.
  EXPECT_THAT(tier->Put("a", ContractBytes(5000 - b.size() + 1, 2)),
              StatusIs(absl::StatusCode::kResourceExhausted));
  ASSERT_OK_AND_ASSIGN(std::string got, tier->Get("a"));
  EXPECT_EQ(got, b);
  EXPECT_EQ(tier->used_bytes(), 2 * b.size());
  ASSERT_THAT(tier->Erase("b"), IsOk());
  EXPECT_EQ(tier->used_bytes(), b.size());
  EXPECT_FALSE(tier->BelowLowWatermark());
  EXPECT_THAT(tier->Get("b"), StatusIs(absl::StatusCode::kNotFound));
  ASSERT_THAT(tier->Erase("a"), IsOk());
  EXPECT_TRUE(tier->BelowLowWatermark());
  // Exactly full, then one byte more.
  ASSERT_THAT(tier->Put("x", ContractBytes(2000, 3)), IsOk());
  ASSERT_THAT(tier->Put("y", ContractBytes(2000, 4)), IsOk());
  // A replacement that needs its predecessor's bytes: 2000 + 3000 == capacity.
  ASSERT_THAT(tier->Put("x", ContractBytes(3000, 5)), IsOk());
  EXPECT_EQ(tier->used_bytes(), 5000u);
  ASSERT_OK_AND_ASSIGN(std::string x, tier->Get("x"));
  EXPECT_EQ(x, ContractBytes(3000, 5));
  ASSERT_OK_AND_ASSIGN(std::string y, tier->Get("y"));
  EXPECT_EQ(y, ContractBytes(2000, 4));
  EXPECT_THAT(tier->Put("z", "1"), StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_THAT(tier->Put("z", ""), IsOk());  // empty blocks always fit
  EXPECT_THAT(make({"x", 10, 0.9, 0.95}), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(make({"x", 0, 0.9, 0.7}), StatusIs(absl::StatusCode::kInvalidArgument));
}

// Erase frees the block's bytes; erasing an absent key is NotFound; the key can be stored again.
inline void ExpectErase(const TierFactory& make) {
  using ::dapq::testing::IsOk;
  using ::dapq::testing::StatusIs;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Tier> tier, make({"erase", 1000, 0.9, 0.7}));
  ASSERT_THAT(tier->Put("a", ContractBytes(600, 1)), IsOk());
  ASSERT_THAT(tier->Put("b", ContractBytes(400, 2)), IsOk());
  ASSERT_THAT(tier->Erase("a"), IsOk());
  EXPECT_EQ(tier->used_bytes(), 400u);
  EXPECT_FALSE(tier->Contains("a"));
  EXPECT_THAT(tier->Get("a"), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(tier->Erase("a"),
              StatusIs(absl::StatusCode::kNotFound, ::testing::HasSubstr("erase")));
  ASSERT_THAT(tier->Put("a", ContractBytes(600, 3)), IsOk());
  ASSERT_OK_AND_ASSIGN(std::string a, tier->Get("a"));
  EXPECT_EQ(a, ContractBytes(600, 3));
  ASSERT_OK_AND_ASSIGN(std::string b, tier->Get("b"));
  EXPECT_EQ(b, ContractBytes(400, 2));
}

// Holes left by erased blocks, none large enough alone, still take a block their total admits.
inline void ExpectFullUseOfScatteredFreeSpace(const TierFactory& make) {
  using ::dapq::testing::IsOk;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Tier> tier, make({"holes", 10 * 1000, 0.9, 0.7}));
  for (int i = 0; i < 10; ++i) {
    ASSERT_THAT(tier->Put(absl::StrCat("b", i), ContractBytes(1000, i)), IsOk());
  }
  for (int i = 1; i < 10; i += 2) ASSERT_THAT(tier->Erase(absl::StrCat("b", i)), IsOk());
  const std::string big = ContractBytes(5000, 99);
  ASSERT_THAT(tier->Put("big", big), IsOk());
  EXPECT_EQ(tier->used_bytes(), tier->capacity_bytes());
  ASSERT_OK_AND_ASSIGN(std::string got, tier->Get("big"));
  EXPECT_EQ(got, big);
  for (int i = 0; i < 10; i += 2) {
    ASSERT_OK_AND_ASSIGN(std::string b, tier->Get(absl::StrCat("b", i)));
    EXPECT_EQ(b, ContractBytes(1000, i)) << i;
  }
  ASSERT_THAT(tier->Erase("big"), IsOk());
  ASSERT_THAT(tier->Put("big", ContractBytes(4999, 98)), IsOk());
  ASSERT_OK_AND_ASSIGN(std::string again, tier->Get("big"));
  EXPECT_EQ(again, ContractBytes(4999, 98));
}

// Threads putting, reading and erasing their own keys at once see only their own bytes.
inline void ExpectConcurrentUse(const TierFactory& make) {
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Tier> tier, make({"threads", 1 << 20, 0.9, 0.7}));
  constexpr int kThreads = 4, kRounds = 100;
  std::vector<int> errors(kThreads, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&tier, &errors, t] {
      for (int i = 0; i < kRounds; ++i) {
        const std::string key = absl::StrCat("t", t, ".b", i % 5);
        const std::string bytes = ContractBytes(100 + 37 * i, t * 1000 + i);
        if (!tier->Put(key, bytes).ok()) ++errors[t];
        absl::StatusOr<std::string> got = tier->Get(key);
        if (!got.ok() || *got != bytes) ++errors[t];
        if (i % 3 == 0 && !tier->Erase(key).ok()) ++errors[t];
      }
    });
  }
  for (std::thread& th : threads) th.join();
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(errors[t], 0) << "thread " << t;
  size_t used = 0;
  for (const std::string& key : tier->Keys()) {
    absl::StatusOr<std::string> got = tier->Get(key);
    ASSERT_TRUE(got.ok()) << got.status();
    used += got->size();
  }
  EXPECT_EQ(tier->used_bytes(), used);
}

// Every check above.
inline void ExpectTierContract(const TierFactory& make) {
  {
    SCOPED_TRACE("round trips");
    ExpectRoundTrips(make);
  }
  {
    SCOPED_TRACE("capacity and watermarks");
    ExpectCapacityAndWatermarks(make);
  }
  {
    SCOPED_TRACE("erase");
    ExpectErase(make);
  }
  {
    SCOPED_TRACE("scattered free space");
    ExpectFullUseOfScatteredFreeSpace(make);
  }
  {
    SCOPED_TRACE("concurrent use");
    ExpectConcurrentUse(make);
  }
}

}  // namespace dapq::kvstore::internal

#endif  // DAPQ_KVSTORE_INTERNAL_TIER_CONTRACT_H_
