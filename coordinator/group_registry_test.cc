// File: coordinator/group_registry_test.cc
// Routing over worker groups by their reported batch capacity and free KV pool, and the batch
// capacity the batch runner fills (heartbeats fed directly; no worker is contacted); heartbeat
// validation and forgetting silent groups.
#include "coordinator/group_registry.h"

#include <functional>
#include <set>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/util/status_matchers.h"

namespace dapq::coordinator {
namespace {

dapq::v1::GroupStatus Group(const std::string& id, int capacity, double pool_used = 0) {
  dapq::v1::GroupStatus s;
  s.set_group_id(id);
  s.set_address("127.0.0.1:1");  // never called here
  s.set_tp(1);
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
  ASSERT_TRUE(registry.Heartbeat(Group("g0", 1)).ok());   // one request at a time
  ASSERT_TRUE(registry.Heartbeat(Group("g1", 64)).ok());  // batches 64 sequences
  std::vector<std::string> picks;
  for (int i = 0; i < 6; ++i) picks.push_back(Pick(registry));
  // g0 takes the first (a tie, by name); then 1/1 > k/64 sends everything else to g1.
  EXPECT_EQ(picks, (std::vector<std::string>{"g0", "g1", "g1", "g1", "g1", "g1"}));
  EXPECT_EQ(registry.batch_capacity(/*per_group=*/2), 2 + 64);
}

TEST(GroupRegistryTest, EqualLoadGoesToTheGroupWithMoreFreeKvPool) {
  GroupRegistry registry(GroupRegistryOptions{});
  ASSERT_TRUE(registry.Heartbeat(Group("g0", 8, /*pool_used=*/0.9)).ok());
  ASSERT_TRUE(registry.Heartbeat(Group("g1", 8, /*pool_used=*/0.1)).ok());
  EXPECT_EQ(Pick(registry), "g1");
}

TEST(GroupRegistryTest, WorkersWithoutACapacityCountAsOneSlot) {
  GroupRegistry registry(GroupRegistryOptions{});
  ASSERT_TRUE(registry.Heartbeat(Group("g0", 0)).ok());
  ASSERT_TRUE(registry.Heartbeat(Group("g1", 0)).ok());
  EXPECT_EQ(Pick(registry), "g0");
  EXPECT_EQ(Pick(registry), "g1");
  EXPECT_EQ(registry.batch_capacity(2), 4);
}

// With etcd, the groups holding a lease are the routable ones: a heartbeat alone does not make a
// group routable, and one whose lease expired is forgotten (after its last request).
TEST(GroupRegistryTest, EtcdMembershipDecidesWhichGroupsExist) {
  GroupRegistry registry(GroupRegistryOptions{});
  ASSERT_TRUE(registry.Heartbeat(Group("g0", 4)).ok());
  ASSERT_TRUE(registry.Heartbeat(Group("g1", 4)).ok());
  registry.SetMembership({"g0"});
  EXPECT_EQ(registry.known_groups(), 1);  // g1 was idle: forgotten at once
  ASSERT_TRUE(registry.Heartbeat(Group("g1", 4)).ok());
  EXPECT_EQ(registry.healthy_groups(), 1);
  std::vector<dapq::v1::GroupStatus> snapshot = registry.Snapshot();
  ASSERT_EQ(snapshot.size(), 2u);
  EXPECT_EQ(snapshot[1].health_detail(), "not registered in etcd");
  registry.SetMembership({"g0", "g1"});
  EXPECT_EQ(registry.healthy_groups(), 2);

  ASSERT_OK_AND_ASSIGN(GroupLease busy, registry.Acquire("", {"g1"}));  // g0, in flight
  registry.SetMembership({"g1"});
  EXPECT_EQ(registry.healthy_groups(), 1);
  EXPECT_EQ(registry.known_groups(), 2);  // g0 stays until its request ends
  registry.Release(busy, /*group_failed=*/false, "", "");
  EXPECT_EQ(registry.known_groups(), 1);
  EXPECT_EQ(Pick(registry), "g1");
}

// Two coordinators that see the same groups send a new session to the same group, whatever
// their own load figures say, and a session whose group is excluded moves to the next group by
// the same ranking.
TEST(GroupRegistryTest, DeterministicSessionsAgreeAcrossRegistries) {
  GroupRegistryOptions options;
  options.deterministic_sessions = true;
  GroupRegistry a(options), b(options);
  for (const char* id : {"g0", "g1", "g2"}) {
    ASSERT_TRUE(a.Heartbeat(Group(id, 4)).ok());
    ASSERT_TRUE(b.Heartbeat(Group(id, 4)).ok());
  }
  for (int i = 0; i < 8; ++i) ASSERT_TRUE(b.Acquire("", {}).ok());  // load b's view only
  std::set<std::string> used;
  for (int i = 0; i < 30; ++i) {
    const std::string session = "session-" + std::to_string(i);
    ASSERT_OK_AND_ASSIGN(GroupLease la, a.Acquire(session, {}));
    ASSERT_OK_AND_ASSIGN(GroupLease lb, b.Acquire(session, {}));
    EXPECT_EQ(la.group_id, lb.group_id) << session;
    used.insert(la.group_id);
    ASSERT_OK_AND_ASSIGN(GroupLease ra, a.Acquire(session, {la.group_id}));
    ASSERT_OK_AND_ASSIGN(GroupLease rb, b.Acquire(session, {lb.group_id}));
    EXPECT_EQ(ra.group_id, rb.group_id) << session;
    EXPECT_NE(ra.group_id, la.group_id);
  }
  EXPECT_EQ(used.size(), 3u);  // sessions spread over every group
}

TEST(GroupRegistryTest, RejectsHeartbeatsNoWorkerSends) {
  GroupRegistry registry(GroupRegistryOptions{});
  const std::vector<std::pair<std::string, std::function<void(dapq::v1::GroupStatus&)>>> bad = {
      {"group_id", [](auto& s) { s.set_group_id(""); }},
      {"group_id", [](auto& s) { s.set_group_id(std::string(200, 'g')); }},
      {"address", [](auto& s) { s.set_address(""); }},
      {"tp", [](auto& s) { s.set_tp(0); }},
      {"queue_depth", [](auto& s) { s.set_queue_depth(-1); }},
      {"batch_capacity", [](auto& s) { s.set_batch_capacity(1 << 30); }},
      {"kv_bytes_used", [](auto& s) { s.set_kv_bytes_used(-5); }},
      {"ranks", [](auto& s) { s.add_ranks(); }},  // two ranks for tp 1
      {"ranks.tiers", [](auto& s) { s.mutable_ranks(0)->mutable_tiers(0)->set_used_bytes(-1); }},
  };
  for (const auto& [field, corrupt] : bad) {
    dapq::v1::GroupStatus s = Group("g0", 4);
    corrupt(s);
    EXPECT_THAT(registry.Heartbeat(s), testing::StatusIs(absl::StatusCode::kInvalidArgument,
                                                         ::testing::HasSubstr("status." + field)));
  }
  EXPECT_EQ(registry.known_groups(), 0);  // nothing registered
  EXPECT_TRUE(registry.Heartbeat(Group("g0", 4)).ok());
  EXPECT_EQ(registry.known_groups(), 1);
}

TEST(GroupRegistryTest, ForgetsGroupsThatStoppedBeatingUnlessRequestsRunThere) {
  GroupRegistryOptions options;
  options.forget_after_missed = 0;  // any silence: forgotten at the next heartbeat of another
  GroupRegistry registry(options);
  ASSERT_TRUE(registry.Heartbeat(Group("gone", 4)).ok());
  ASSERT_TRUE(registry.Heartbeat(Group("g1", 4)).ok());
  EXPECT_EQ(registry.known_groups(), 1);
  absl::StatusOr<GroupLease> lease = registry.Acquire("", {});
  ASSERT_TRUE(lease.ok()) << lease.status();
  EXPECT_EQ(lease->group_id, "g1");
  ASSERT_TRUE(registry.Heartbeat(Group("g2", 4)).ok());
  EXPECT_EQ(registry.known_groups(), 2);  // g1 has a request in flight: kept
  registry.Release(*lease, false, "", "");
  ASSERT_TRUE(registry.Heartbeat(Group("g2", 4)).ok());
  EXPECT_EQ(registry.known_groups(), 1);
}

}  // namespace
}  // namespace dapq::coordinator
