// File: coordinator/group_registry_test.cc
// Routing over worker groups by their reported batch capacity and free KV pool, and the batch
// capacity the batch runner fills (heartbeats fed directly; no worker is contacted).
#include "coordinator/group_registry.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/util/status_matchers.h"

namespace dapq::coordinator {
namespace {

dapq::v1::GroupStatus Group(const std::string& id, int capacity, double pool_used = 0) {
  dapq::v1::GroupStatus s;
  s.set_group_id(id);
  s.set_address("127.0.0.1:1");  // never called here
  s.set_healthy(true);
  s.set_batch_capacity(capacity);
  dapq::v1::TierUsage* cache = s.add_ranks()->add_tiers();
  cache->set_tier("cache");
  cache->set_capacity_bytes(1000);
  cache->set_used_bytes(static_cast<int64_t>(pool_used * 1000));
  return s;
}

std::string Pick(GroupRegistry& registry) {
  absl::StatusOr<GroupLease> lease = registry.Acquire("", {});
  EXPECT_TRUE(lease.ok()) << lease.status();
  return lease.ok() ? lease->group_id : "";
}

TEST(GroupRegistryTest, RoutesByLoadPerBatchSlot) {
  GroupRegistry registry(GroupRegistryOptions{});
  registry.Heartbeat(Group("g0", 1));   // one request at a time
  registry.Heartbeat(Group("g1", 64));  // batches 64 sequences
  std::vector<std::string> picks;
  for (int i = 0; i < 6; ++i) picks.push_back(Pick(registry));
  // g0 takes the first (a tie, by name); then 1/1 > k/64 sends everything else to g1.
  EXPECT_EQ(picks, (std::vector<std::string>{"g0", "g1", "g1", "g1", "g1", "g1"}));
  EXPECT_EQ(registry.batch_capacity(/*per_group=*/2), 2 + 64);
}

TEST(GroupRegistryTest, EqualLoadGoesToTheGroupWithMoreFreeKvPool) {
  GroupRegistry registry(GroupRegistryOptions{});
  registry.Heartbeat(Group("g0", 8, /*pool_used=*/0.9));
  registry.Heartbeat(Group("g1", 8, /*pool_used=*/0.1));
  EXPECT_EQ(Pick(registry), "g1");
}

TEST(GroupRegistryTest, WorkersWithoutACapacityCountAsOneSlot) {
  GroupRegistry registry(GroupRegistryOptions{});
  registry.Heartbeat(Group("g0", 0));
  registry.Heartbeat(Group("g1", 0));
  EXPECT_EQ(Pick(registry), "g0");
  EXPECT_EQ(Pick(registry), "g1");
  EXPECT_EQ(registry.batch_capacity(2), 4);
}

}  // namespace
}  // namespace dapq::coordinator
