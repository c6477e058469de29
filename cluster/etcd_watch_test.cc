// File: cluster/etcd_watch_test.cc
// PrefixWatcher against a real etcd: the initial list and callback, puts and deletes and a
// lease expiring, keys outside the prefix ignored; etcd killed (healthy() false, the last map
// kept) and restarted (in sync again, changes seen), etcd restarted without its data (the map
// follows the empty store); a failed first list; Stop() returning promptly in the middle of a
// stream and during a backoff.
#include "cluster/etcd_watch.h"

#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "gtest/gtest.h"
#include "tests/util/etcd_server.h"
#include "tests/util/redis_server.h"
#include "tests/util/status_matchers.h"

namespace dapq::cluster {
namespace {
using ::dapq::testing::EtcdServer;
using ::dapq::testing::IsOk;
using ::dapq::testing::StatusIs;
using Map = PrefixWatcher::Map;

constexpr absl::Duration kWait = absl::Seconds(15);

std::shared_ptr<EtcdClient> Client(const EtcdServer& etcd) {
  absl::StatusOr<std::unique_ptr<EtcdClient>> c = EtcdClient::FromUrl(etcd.url());
  EXPECT_TRUE(c.ok()) << c.status();
  return std::shared_ptr<EtcdClient>(std::move(*c));
}

// Records every map the callback receives.
struct Recorder {
  absl::Mutex mu;
  std::vector<Map> maps ABSL_GUARDED_BY(mu);
  PrefixWatcher::Callback callback() {
    return [this](const Map& m) {
      absl::MutexLock lock(&mu);
      maps.push_back(m);
    };
  }
  std::vector<Map> Get() {
    absl::MutexLock lock(&mu);
    return maps;
  }
  // Until the last map received equals `want` (the callback runs after the watcher's map
  // changed, so the watcher's Await can return before it).
  bool AwaitLast(const Map& want, absl::Duration timeout) {
    absl::MutexLock lock(&mu);
    const auto reached = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
      return !maps.empty() && maps.back() == want;
    };
    return mu.AwaitWithTimeout(absl::Condition(&reached), timeout);
  }
};

bool Has(const Map& m, const std::string& key, const std::string& value) {
  auto it = m.find(key);
  return it != m.end() && it->second == value;
}

TEST(PrefixWatcherTest, SeesInitialKeysPutsDeletesAndLeaseExpiry) {
  ASSERT_OK_AND_ASSIGN(auto etcd, EtcdServer::Start());
  auto client = Client(*etcd);
  ASSERT_THAT(client->Put("/w/before", "0").status(), IsOk());
  ASSERT_THAT(client->Put("/wx", "outside").status(), IsOk());
  Recorder recorder;
  ASSERT_OK_AND_ASSIGN(auto watcher, PrefixWatcher::Start(client, "/w/", recorder.callback()));
  ASSERT_EQ(recorder.Get().size(), 1u) << "Start calls back once with the initial list";
  EXPECT_EQ(recorder.Get()[0], (Map{{"/w/before", "0"}}));
  EXPECT_TRUE(watcher->healthy());

  ASSERT_THAT(client->Put("/w/a", "1").status(), IsOk());
  ASSERT_THAT(client->Put("/wy", "outside").status(), IsOk());
  EXPECT_TRUE(watcher->Await([](const Map& m, bool) { return Has(m, "/w/a", "1"); }, kWait));
  ASSERT_THAT(client->Put("/w/a", "2").status(), IsOk());
  EXPECT_TRUE(watcher->Await([](const Map& m, bool) { return Has(m, "/w/a", "2"); }, kWait));
  ASSERT_THAT(client->Delete("/w/before").status(), IsOk());
  EXPECT_TRUE(watcher->Await([](const Map& m, bool) { return m.count("/w/before") == 0; }, kWait));

  ASSERT_OK_AND_ASSIGN(int64_t lease, client->LeaseGrant(2));
  ASSERT_THAT(client->Put("/w/leased", "x", lease).status(), IsOk());
  EXPECT_TRUE(watcher->Await([](const Map& m, bool) { return m.count("/w/leased") == 1; }, kWait));
  EXPECT_TRUE(watcher->Await([](const Map& m, bool) { return m.count("/w/leased") == 0; }, kWait))
      << "the lease expiring deletes the key";
  EXPECT_EQ(watcher->Snapshot(), (Map{{"/w/a", "2"}}));
  EXPECT_GT(watcher->revision(), 0);
  // The callback saw every change (each waited for before the next) and never a key outside
  // the prefix.
  ASSERT_TRUE(recorder.AwaitLast(Map{{"/w/a", "2"}}, kWait));
  const std::vector<Map> maps = recorder.Get();
  EXPECT_EQ(maps.size(), 6u);
  for (const Map& m : maps) {
    EXPECT_EQ(m.count("/wx") + m.count("/wy"), 0u);
  }
}

TEST(PrefixWatcherTest, KeepsTheMapWhileEtcdIsDownAndResyncsAfterRestart) {
  ASSERT_OK_AND_ASSIGN(auto etcd, EtcdServer::Start());
  auto client = Client(*etcd);
  ASSERT_THAT(client->Put("/r/a", "1").status(), IsOk());
  PrefixWatcherOptions options;
  options.min_backoff = absl::Milliseconds(50);
  options.max_backoff = absl::Milliseconds(400);
  ASSERT_OK_AND_ASSIGN(auto watcher, PrefixWatcher::Start(client, "/r/", nullptr, options));

  etcd->Kill();
  EXPECT_TRUE(watcher->Await([](const Map&, bool healthy) { return !healthy; }, kWait));
  EXPECT_EQ(watcher->Snapshot(), (Map{{"/r/a", "1"}})) << "the last known map is kept";

  ASSERT_THAT(etcd->Restart(), IsOk());
  EXPECT_TRUE(watcher->Await([](const Map&, bool healthy) { return healthy; }, kWait));
  ASSERT_THAT(client->Put("/r/b", "2").status(), IsOk());
  ASSERT_THAT(client->Delete("/r/a").status(), IsOk());
  EXPECT_TRUE(watcher->Await([](const Map& m, bool) { return m == Map{{"/r/b", "2"}}; }, kWait));
  EXPECT_GE(watcher->resyncs(), 1);

  // etcd comes back without its data: revisions start over and the map follows the empty
  // store (a resumed watch from the old revision would wait for revisions that never come).
  ASSERT_THAT(etcd->RestartEmpty(), IsOk());
  EXPECT_TRUE(watcher->Await([](const Map& m, bool h) { return h && m.empty(); }, kWait));
  ASSERT_THAT(client->Put("/r/c", "3").status(), IsOk());
  EXPECT_TRUE(watcher->Await([](const Map& m, bool) { return m == Map{{"/r/c", "3"}}; }, kWait));
}

TEST(PrefixWatcherTest, StartFailsWhenTheFirstListFails) {
  ASSERT_OK_AND_ASSIGN(int port, dapq::testing::PickFreePort());
  ASSERT_OK_AND_ASSIGN(auto c, EtcdClient::FromUrl(absl::StrCat("etcd://127.0.0.1:", port)));
  EXPECT_THAT(PrefixWatcher::Start(std::move(c), "/x/").status(),
              StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_THAT(PrefixWatcher::Start(nullptr, "/x/").status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(PrefixWatcherTest, StopIsPromptDuringAStreamAndDuringBackoff) {
  ASSERT_OK_AND_ASSIGN(auto etcd, EtcdServer::Start());
  auto client = Client(*etcd);
  PrefixWatcherOptions options;
  options.idle_resync = absl::Seconds(300);
  options.max_backoff = absl::Seconds(30);
  options.min_backoff = absl::Seconds(30);
  {
    ASSERT_OK_AND_ASSIGN(auto watcher, PrefixWatcher::Start(client, "/s/", nullptr, options));
    ASSERT_THAT(client->Put("/s/a", "1").status(), IsOk());
    ASSERT_TRUE(watcher->Await([](const Map& m, bool) { return m.size() == 1; }, kWait));
    const absl::Time start = absl::Now();
    watcher->Stop();
    EXPECT_LT(absl::Now() - start, absl::Seconds(2)) << "Stop in the middle of a stream";
    watcher->Stop();  // idempotent
    EXPECT_EQ(watcher->Snapshot().size(), 1u);
  }
  ASSERT_OK_AND_ASSIGN(auto watcher, PrefixWatcher::Start(client, "/s/", nullptr, options));
  etcd->Kill();
  ASSERT_TRUE(watcher->Await([](const Map&, bool healthy) { return !healthy; }, kWait));
  const absl::Time start = absl::Now();
  watcher.reset();  // in a 30 s backoff
  EXPECT_LT(absl::Now() - start, absl::Seconds(2)) << "Stop during a backoff";
}

}  // namespace
}  // namespace dapq::cluster
