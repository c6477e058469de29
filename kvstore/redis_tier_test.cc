// File: kvstore/redis_tier_test.cc
// The Redis remote tier against a real redis-server started on loopback: round trips, a store
// spilling down to Redis, the server going away mid-transfer (Unavailable, the block stays on
// its upper tier, reconnect after a restart), and Redis evicting a key (DataLoss, never used).
#include "kvstore/redis_tier.h"

#include <random>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kvstore/block_codec.h"
#include "kvstore/kv_store.h"
#include "tests/util/kv_blocks.h"
#include "tests/util/redis_server.h"
#include "tests/util/status_matchers.h"

namespace dapq::kvstore {
namespace {
using ::dapq::testing::IsOk;
using ::dapq::testing::StatusIs;

std::string Block(uint64_t seed, int tokens = 10) { return dapq::testing::TestBlock(seed, tokens); }

RedisTierOptions Options(int port) {
  RedisTierOptions o;
  o.port = port;
  o.key_prefix = "test:";
  return o;
}

TEST(RedisTierTest, RoundTripAndErase) {
  ASSERT_OK_AND_ASSIGN(auto server, dapq::testing::RedisServer::Start());
  ASSERT_OK_AND_ASSIGN(auto tier, RedisTier::Connect(Options(server->port())));
  ASSERT_THAT(tier->Put("s.b0", Block(1)), IsOk());
  ASSERT_OK_AND_ASSIGN(std::string got, tier->Get("s.b0"));
  EXPECT_EQ(got, Block(1));
  EXPECT_EQ(tier->used_bytes(), Block(1).size());
  ASSERT_THAT(tier->Erase("s.b0"), IsOk());
  EXPECT_THAT(tier->Get("s.b0"), StatusIs(absl::StatusCode::kNotFound));
}

TEST(RedisTierTest, UnreachableServerIsUnavailable) {
  ASSERT_OK_AND_ASSIGN(int port, dapq::testing::PickFreePort());
  EXPECT_THAT(RedisTier::Connect(Options(port)),
              StatusIs(absl::StatusCode::kUnavailable, ::testing::HasSubstr("127.0.0.1")));
}

TEST(RedisTierTest, StoreSpillsToRedisAndSurvivesTheServerGoingAway) {
  ASSERT_OK_AND_ASSIGN(auto server, dapq::testing::RedisServer::Start());
  ASSERT_OK_AND_ASSIGN(auto remote, RedisTier::Connect(Options(server->port())));
  ASSERT_OK_AND_ASSIGN(auto store, KvStore::Open(dapq::testing::SmallStoreOver(remote.get())));
  for (int i = 0; i < 8; ++i) ASSERT_THAT(store->Put("s", absl::StrCat("s.", i), Block(i)), IsOk());
  ASSERT_THAT(store->Spill(), IsOk());
  EXPECT_GT(store->Stats()[2].blocks, 0);  // tiers: device, host, remote
  for (int i = 0; i < 8; ++i) {
    ASSERT_OK_AND_ASSIGN(std::string got, store->Get(absl::StrCat("s.", i)));
    EXPECT_EQ(got, Block(i));
  }
  // The server dies: spilling fails with Unavailable and nothing is lost from the upper tiers.
  for (int i = 8; i < 12; ++i)
    ASSERT_THAT(store->Put("t", absl::StrCat("t.", i), Block(i)), IsOk());
  server->Kill();
  EXPECT_THAT(store->Spill(), StatusIs(absl::StatusCode::kUnavailable));
  for (int i = 8; i < 12; ++i) {
    ASSERT_OK_AND_ASSIGN(std::string got, store->Get(absl::StrCat("t.", i)));
    EXPECT_EQ(got, Block(i));
  }
}

TEST(RedisTierTest, EvictedKeyIsDataLoss) {
  // A tiny Redis that evicts: write far more than it holds.
  ASSERT_OK_AND_ASSIGN(auto server,
                       dapq::testing::RedisServer::Start(
                           {"--maxmemory", "4mb", "--maxmemory-policy", "allkeys-lru"}));
  ASSERT_OK_AND_ASSIGN(auto tier, RedisTier::Connect(Options(server->port())));
  const std::string big = Block(7, 2000);  // ~130 KB
  for (int i = 0; i < 60; ++i) ASSERT_THAT(tier->Put(absl::StrCat("k", i), big), IsOk());
  int evicted = 0;
  for (int i = 0; i < 60; ++i) {
    absl::StatusOr<std::string> got = tier->Get(absl::StrCat("k", i));
    if (absl::IsDataLoss(got.status())) {
      ++evicted;
      EXPECT_THAT(got, StatusIs(absl::StatusCode::kDataLoss, ::testing::HasSubstr("evicted")));
    } else {
      ASSERT_TRUE(got.ok()) << got.status();
      EXPECT_EQ(*got, big);
    }
  }
  EXPECT_GT(evicted, 0);
}

}  // namespace
}  // namespace dapq::kvstore
