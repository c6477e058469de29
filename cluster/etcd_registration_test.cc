// File: cluster/etcd_registration_test.cc
// LeasedKey and KeptAliveLease against a real etcd: register, update, Stop removing the key at
// once; the key staying while kept alive and vanishing within the TTL once its owner stops
// refreshing without revoking (AbandonForTesting) or is SIGKILLed (a forked owner); surviving
// an etcd restart; registering again when etcd lost its data, when the lease is revoked by
// someone else, and putting a deleted key back; KeptAliveLease reporting a lost lease.
#include "cluster/etcd_registration.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>

#include "cluster/etcd_watch.h"
#include "gtest/gtest.h"
#include "tests/util/etcd_server.h"
#include "tests/util/status_matchers.h"

namespace dapq::cluster {
namespace {
using ::dapq::testing::EtcdServer;
using ::dapq::testing::IsOk;
using ::dapq::testing::StatusIs;
using Map = PrefixWatcher::Map;

constexpr absl::Duration kWait = absl::Seconds(15);
constexpr int64_t kTtl = 2;  // etcd's minimum with default election settings
// How late etcd may delete an expired lease's keys: it checks for expired leases every 500 ms.
constexpr absl::Duration kExpirySlack = absl::Milliseconds(1500);

std::shared_ptr<EtcdClient> Client(const EtcdServer& etcd) {
  absl::StatusOr<std::unique_ptr<EtcdClient>> c = EtcdClient::FromUrl(etcd.url());
  EXPECT_TRUE(c.ok()) << c.status();
  return std::shared_ptr<EtcdClient>(std::move(*c));
}

bool Has(const Map& m, const std::string& key, const std::string& value) {
  auto it = m.find(key);
  return it != m.end() && it->second == value;
}

TEST(LeasedKeyTest, RegistersUpdatesAndStopRemovesTheKeyAtOnce) {
  ASSERT_OK_AND_ASSIGN(auto etcd, EtcdServer::Start());
  auto client = Client(*etcd);
  ASSERT_OK_AND_ASSIGN(auto key, LeasedKey::Create(client, "/reg/w0", "addr-1", 10));
  ASSERT_OK_AND_ASSIGN(std::optional<EtcdKeyValue> kv, client->Get("/reg/w0"));
  ASSERT_TRUE(kv.has_value());
  EXPECT_EQ(kv->value, "addr-1");
  EXPECT_EQ(kv->lease, key->lease_id());
  EXPECT_EQ(key->registrations(), 1);

  ASSERT_THAT(key->Update("addr-2"), IsOk());
  ASSERT_OK_AND_ASSIGN(kv, client->Get("/reg/w0"));
  EXPECT_EQ(kv->value, "addr-2");
  EXPECT_EQ(key->value(), "addr-2");

  ASSERT_THAT(key->Stop(), IsOk());
  ASSERT_OK_AND_ASSIGN(kv, client->Get("/reg/w0"));
  EXPECT_FALSE(kv.has_value()) << "Stop revokes the lease";
  EXPECT_THAT(key->Stop(), IsOk());
  EXPECT_THAT(key->Update("x"), StatusIs(absl::StatusCode::kFailedPrecondition));

  EXPECT_THAT(LeasedKey::Create(client, "", "v", 10).status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(LeasedKey::Create(client, "/k", "v", 0).status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(LeasedKeyTest, StaysWhileKeptAliveAndVanishesWithinTtlWhenAbandoned) {
  ASSERT_OK_AND_ASSIGN(auto etcd, EtcdServer::Start());
  auto client = Client(*etcd);
  ASSERT_OK_AND_ASSIGN(auto watcher, PrefixWatcher::Start(client, "/reg/"));
  ASSERT_OK_AND_ASSIGN(auto key, LeasedKey::Create(client, "/reg/w1", "up", kTtl));
  ASSERT_TRUE(watcher->Await([](const Map& m, bool) { return Has(m, "/reg/w1", "up"); }, kWait));
  // More than twice the TTL: the key stays only because it is kept alive.
  EXPECT_FALSE(watcher->Await([](const Map& m, bool) { return m.count("/reg/w1") == 0; },
                              absl::Seconds(2 * kTtl) + absl::Milliseconds(500)));
  EXPECT_TRUE(key->healthy());

  key->AbandonForTesting();
  const absl::Time abandoned = absl::Now();
  ASSERT_TRUE(watcher->Await([](const Map& m, bool) { return m.count("/reg/w1") == 0; }, kWait));
  EXPECT_LE(absl::Now() - abandoned, absl::Seconds(kTtl) + kExpirySlack);
  EXPECT_THAT(key->Stop(), IsOk());  // nothing left to revoke
}

TEST(LeasedKeyTest, KilledOwnersKeyVanishesWithinTtl) {
  ASSERT_OK_AND_ASSIGN(auto etcd, EtcdServer::Start());
  const std::string url = etcd->url();
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  std::fflush(nullptr);
  const pid_t pid = ::fork();  // before this test starts any thread
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::close(ready[0]);
    absl::StatusOr<std::unique_ptr<EtcdClient>> c = EtcdClient::FromUrl(url);
    if (!c.ok()) ::_exit(2);
    absl::StatusOr<std::unique_ptr<LeasedKey>> key =
        LeasedKey::Create(std::shared_ptr<EtcdClient>(std::move(*c)), "/reg/killed", "x", kTtl);
    if (!key.ok()) ::_exit(3);
    const char one = 1;
    (void)::write(ready[1], &one, 1);
    ::pause();  // until the parent's SIGKILL
    ::_exit(4);
  }
  ::close(ready[1]);
  char byte = 0;
  ASSERT_EQ(::read(ready[0], &byte, 1), 1) << "the owner failed to register";
  ::close(ready[0]);
  auto client = Client(*etcd);
  ASSERT_OK_AND_ASSIGN(auto watcher, PrefixWatcher::Start(client, "/reg/"));
  ASSERT_EQ(watcher->Snapshot().count("/reg/killed"), 1u);
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
  const absl::Time killed = absl::Now();
  ASSERT_TRUE(
      watcher->Await([](const Map& m, bool) { return m.count("/reg/killed") == 0; }, kWait));
  EXPECT_LE(absl::Now() - killed, absl::Seconds(kTtl) + kExpirySlack);
}

TEST(LeasedKeyTest, SurvivesAnEtcdRestartAndRegistersAgainWhenEtcdLostItsData) {
  ASSERT_OK_AND_ASSIGN(auto etcd, EtcdServer::Start());
  auto client = Client(*etcd);
  ASSERT_OK_AND_ASSIGN(auto key, LeasedKey::Create(client, "/reg/w2", "v", kTtl));
  const int64_t first_lease = key->lease_id();

  ASSERT_THAT(etcd->Restart(), IsOk());
  ASSERT_OK_AND_ASSIGN(std::optional<EtcdKeyValue> kv, client->Get("/reg/w2"));
  ASSERT_TRUE(kv.has_value()) << "etcd keeps leases across a restart";
  EXPECT_EQ(kv->lease, first_lease);

  ASSERT_THAT(etcd->RestartEmpty(), IsOk());
  ASSERT_TRUE(key->AwaitRegistrations(2, kWait)) << "the lost lease is replaced";
  ASSERT_OK_AND_ASSIGN(kv, client->Get("/reg/w2"));
  ASSERT_TRUE(kv.has_value());
  EXPECT_EQ(kv->value, "v");
  EXPECT_EQ(kv->lease, key->lease_id());
  EXPECT_NE(key->lease_id(), first_lease);
  ASSERT_THAT(key->Stop(), IsOk());
  ASSERT_OK_AND_ASSIGN(kv, client->Get("/reg/w2"));
  EXPECT_FALSE(kv.has_value());
}

TEST(LeasedKeyTest, RegistersAgainAfterARevokeAndPutsBackADeletedKey) {
  ASSERT_OK_AND_ASSIGN(auto etcd, EtcdServer::Start());
  auto client = Client(*etcd);
  ASSERT_OK_AND_ASSIGN(auto watcher, PrefixWatcher::Start(client, "/reg/"));
  ASSERT_OK_AND_ASSIGN(auto key, LeasedKey::Create(client, "/reg/w3", "v", kTtl));
  ASSERT_THAT(client->LeaseRevoke(key->lease_id()), IsOk());
  ASSERT_TRUE(key->AwaitRegistrations(2, kWait));
  ASSERT_TRUE(watcher->Await([](const Map& m, bool) { return Has(m, "/reg/w3", "v"); }, kWait));

  ASSERT_OK_AND_ASSIGN(int64_t deleted, client->Delete("/reg/w3"));
  ASSERT_EQ(deleted, 1);
  ASSERT_TRUE(watcher->Await([](const Map& m, bool) { return m.count("/reg/w3") == 0; }, kWait));
  ASSERT_TRUE(watcher->Await([](const Map& m, bool) { return Has(m, "/reg/w3", "v"); }, kWait))
      << "the keepalive round puts a deleted key back";
  EXPECT_EQ(key->registrations(), 2) << "under the same lease";
}

TEST(KeptAliveLeaseTest, KeepsItsKeysReportsLossAndRevokeDeletesThem) {
  ASSERT_OK_AND_ASSIGN(auto etcd, EtcdServer::Start());
  auto client = Client(*etcd);
  ASSERT_OK_AND_ASSIGN(auto watcher, PrefixWatcher::Start(client, "/kal/"));
  ASSERT_OK_AND_ASSIGN(auto lease, KeptAliveLease::Grant(client, kTtl));
  ASSERT_THAT(client->Put("/kal/a", "1", lease->id()).status(), IsOk());
  ASSERT_TRUE(watcher->Await([](const Map& m, bool) { return m.count("/kal/a") == 1; }, kWait));
  EXPECT_FALSE(watcher->Await([](const Map& m, bool) { return m.count("/kal/a") == 0; },
                              absl::Seconds(2 * kTtl) + absl::Milliseconds(500)));
  EXPECT_FALSE(lease->lost());
  ASSERT_THAT(lease->Revoke(), IsOk());
  ASSERT_OK_AND_ASSIGN(std::optional<EtcdKeyValue> kv, client->Get("/kal/a"));
  EXPECT_FALSE(kv.has_value());
  EXPECT_THAT(lease->Revoke(), IsOk());

  ASSERT_OK_AND_ASSIGN(auto other, KeptAliveLease::Grant(client, kTtl));
  ASSERT_THAT(client->LeaseRevoke(other->id()), IsOk());
  // The next keepalive round (every TTL / 3) finds it gone.
  EXPECT_TRUE(other->AwaitLost(kWait));
}

}  // namespace
}  // namespace dapq::cluster
