// File: coordinator/postgres_batch_store_test.cc
// What only PostgresBatchStore has, against a real PostgreSQL 15 (tests/util/postgres_server.h),
// one fresh cluster per test: BatchStore::Open taking postgres URLs, a large job created in
// chunks, a newer schema refused, malformed URLs and unreachable servers, and what several
// coordinators on one database add: two stores claiming concurrently from several threads,
// concurrent finishing and cancelling, items of a live coordinator left alone, items of a
// closed or SIGKILLed coordinator reclaimed (after the owner TTL), a PostgreSQL crash and restart
// in the middle of a job, COMMITs whose answer (or request) a proxy loses on purpose, also across
// a crash that makes the server reuse the lost transaction's id. The BatchStore contract it
// shares with the SQLite store is in batch_store_contract_test.cc.
#include "coordinator/postgres_batch_store.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <functional>
#include <iostream>
#include <memory>
#include <mutex>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/mutex.h"
#include "coordinator/internal/pg_connection.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/util/postgres_server.h"
#include "tests/util/redis_server.h"
#include "tests/util/status_matchers.h"
#include "tests/util/test_paths.h"

namespace dapq::coordinator {
namespace {
using ::dapq::testing::IsOk;
using ::dapq::testing::PostgresServer;
using ::dapq::testing::StatusIs;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::SizeIs;
using Clock = std::chrono::steady_clock;

std::vector<std::string> Requests(int n, const std::string& prefix = "req-") {
  std::vector<std::string> out;
  out.reserve(n);
  for (int i = 0; i < n; ++i) out.push_back(prefix + std::to_string(i));
  return out;
}

JobSpec Spec(const std::string& name, int max_attempts = 3) {
  return JobSpec{name, "opts:" + name, "", max_attempts, ""};
}

class PostgresBatchStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // A missing PostgreSQL is a failure with the reason, never a skip.
    ASSERT_OK_AND_ASSIGN(server_, PostgresServer::Start("pg_batch_store"));
  }
  void TearDown() override {
    if (HasFailure() && server_ != nullptr) {
      std::cerr << "postgres log (" << server_->dir() << "/postgres.log):\n"
                << server_->log() << "\n";
    }
  }

  absl::StatusOr<std::unique_ptr<PostgresBatchStore>> Open(
      const PostgresBatchStoreOptions& options = {}) {
    return PostgresBatchStore::Open(server_->url(), options);
  }

  // Runs `sql` (no parameters) on its own connection; the first column of the first row.
  std::string RawQuery(const std::string& sql) {
    auto url = internal::PgUrl::Parse(server_->url());
    if (!url.ok()) return url.status().ToString();
    auto conn = internal::PgConnection::Connect(*url, std::chrono::seconds(5));
    if (!conn.ok()) return conn.status().ToString();
    auto r = (*conn)->Query("raw", sql.c_str());
    if (!r.ok()) return r.status().ToString();
    return r->rows() > 0 && !r->IsNull(0, 0) ? r->Bytes(0, 0) : "";
  }

  std::unique_ptr<PostgresServer> server_;
};

// ---- PostgreSQL URLs, large jobs and the schema ----

TEST_F(PostgresBatchStoreTest, BatchStoreOpenTakesPostgresUrls) {
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<BatchStore> store, BatchStore::Open(server_->url()));
  EXPECT_EQ(store->path(), server_->url());
  ASSERT_OK_AND_ASSIGN(std::string id, store->CreateJob(Spec("via-open"), Requests(2)));
  EXPECT_EQ(id, "job-000001");
  const std::string url = server_->url();
  const std::string postgresql = "postgresql" + url.substr(url.find("://"));
  ASSERT_OK_AND_ASSIGN(store, BatchStore::Open(postgresql));
  ASSERT_OK_AND_ASSIGN(JobInfo job, store->GetJob(id));
  EXPECT_EQ(job.spec.name, "via-open");
}

TEST_F(PostgresBatchStoreTest, CreatesALargeJobInChunks) {
  ASSERT_OK_AND_ASSIGN(auto store, Open());
  std::vector<std::string> requests;
  requests.reserve(12'346);
  for (int i = 0; i < 12'345; ++i) requests.push_back(std::string(i % 7, 'x') + std::to_string(i));
  requests.push_back(std::string(9 << 20, 'y'));  // one item bigger than a chunk's byte budget
  ASSERT_OK_AND_ASSIGN(std::string id, store->CreateJob(Spec("big"), requests));
  ASSERT_OK_AND_ASSIGN(JobInfo job, store->GetJob(id));
  EXPECT_EQ(job.total, static_cast<int>(requests.size()));
  EXPECT_EQ(job.pending, static_cast<int>(requests.size()));
  for (int from : {0, 4999, 5000, 10'001, 12'340}) {
    ASSERT_OK_AND_ASSIGN(std::vector<ItemRecord> items, store->ListItems(id, from, 3));
    ASSERT_FALSE(items.empty());
    for (const ItemRecord& item : items) EXPECT_EQ(item.request, requests[item.index]);
    EXPECT_EQ(items[0].index, from);
  }
  ASSERT_OK_AND_ASSIGN(std::vector<ItemRecord> last, store->ListItems(id, 12'345, 10));
  ASSERT_THAT(last, SizeIs(1));
  EXPECT_EQ(last[0].request, requests.back());
}

TEST_F(PostgresBatchStoreTest, ANewerSchemaIsRefused) {
  { ASSERT_OK_AND_ASSIGN(auto store, Open()); }
  EXPECT_EQ(RawQuery("SELECT version::text FROM dapq_schema WHERE component = 'batch_store'"), "1");
  RawQuery("UPDATE dapq_schema SET version = 99 WHERE component = 'batch_store'");
  EXPECT_THAT(Open(), StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("version 99")));
}

// ---- Malformed URLs and unreachable servers ----

TEST_F(PostgresBatchStoreTest, BadUrlsAreInvalidArgumentAndNeverShowThePassword) {
  for (const std::string url :
       {"mysql://u:s3cret@127.0.0.1/db", "postgres://u:s3cret@127.0.0.1:notaport/db",
        "postgres://u:s3cret@127.0.0.1:99999/db", "postgres://u:s3cret@[::1/db",
        "postgresql://u@127.0.0.1/db?password=s3cret&nonsense=1",
        "postgres://u:s3%zzcret@127.0.0.1:x/db"}) {
    SCOPED_TRACE(url);
    auto store = PostgresBatchStore::Open(url);
    EXPECT_THAT(store, StatusIs(absl::StatusCode::kInvalidArgument));
    EXPECT_THAT(store.status().message(), Not(HasSubstr("s3cret")));
    EXPECT_THAT(store.status().message(), Not(HasSubstr("s3%zzcret")));
  }
  PostgresBatchStoreOptions options;
  options.owner_ttl = std::chrono::milliseconds(0);
  EXPECT_THAT(PostgresBatchStore::Open(server_->url(), options),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("owner_ttl")));
}

TEST_F(PostgresBatchStoreTest, AnUnreachableServerIsUnavailableNamingHostAndPort) {
  ASSERT_OK_AND_ASSIGN(int port, ::dapq::testing::PickFreePort());  // nothing listens there
  PostgresBatchStoreOptions options;
  options.reconnect_timeout = std::chrono::milliseconds(500);
  const Clock::time_point start = Clock::now();
  auto store = PostgresBatchStore::Open(
      absl::StrCat("postgres://dapq:s3cret@127.0.0.1:", port, "/jobs"), options);
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(10));  // bounded by the timeout
  EXPECT_THAT(store, StatusIs(absl::StatusCode::kUnavailable,
                              HasSubstr(absl::StrCat("127.0.0.1:", port, "/jobs"))));
  EXPECT_THAT(store.status().message(), Not(HasSubstr("s3cret")));

  // A store whose server goes away and does not come back: Unavailable after the timeout.
  ASSERT_OK_AND_ASSIGN(auto live, Open(options));
  ASSERT_THAT(server_->Stop(), IsOk());
  EXPECT_THAT(live->ListJobs(1), StatusIs(absl::StatusCode::kUnavailable,
                                          HasSubstr(absl::StrCat("127.0.0.1:", server_->port()))));
  ASSERT_THAT(server_->Restart(), IsOk());
  EXPECT_THAT(live->ListJobs(1), IsOk());  // and it reconnects once the server is back
}

// ---- Several coordinators on one database ----

TEST_F(PostgresBatchStoreTest, OpenLeavesTheItemsOfALiveCoordinatorAlone) {
  ASSERT_OK_AND_ASSIGN(auto a, Open());
  ASSERT_OK_AND_ASSIGN(std::string id, a->CreateJob(Spec("live"), Requests(5)));
  ASSERT_OK_AND_ASSIGN(std::vector<ClaimedItem> mine, a->ClaimItems(3));
  ASSERT_THAT(mine, SizeIs(3));
  ASSERT_OK_AND_ASSIGN(auto b, Open());
  EXPECT_NE(a->owner_id(), b->owner_id());
  EXPECT_EQ(b->recovered_items(), 0);
  ASSERT_OK_AND_ASSIGN(std::vector<ClaimedItem> theirs, b->ClaimItems(10));
  ASSERT_THAT(theirs, SizeIs(2));
  EXPECT_EQ(theirs[0].index, 3);
  EXPECT_EQ(theirs[1].index, 4);
  EXPECT_EQ(b->recovered_items(), 0);
  // Each completes only its own claims.
  EXPECT_THAT(b->CompleteItem(id, 0, 1, "stolen"),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr(a->owner_id())));
  for (const ClaimedItem& c : mine) EXPECT_THAT(a->CompleteItem(id, c.index, 1, "a"), IsOk());
  for (const ClaimedItem& c : theirs) EXPECT_THAT(b->CompleteItem(id, c.index, 1, "b"), IsOk());
  ASSERT_OK_AND_ASSIGN(JobInfo job, a->GetJob(id));
  EXPECT_EQ(job.state, JobState::kSucceeded);
  ASSERT_OK_AND_ASSIGN(std::vector<ItemRecord> items, b->ListItems(id, 0, 10));
  for (const ItemRecord& item : items) EXPECT_EQ(item.result, item.index < 3 ? "a" : "b");
}

TEST_F(PostgresBatchStoreTest, AClosedCoordinatorsItemsAreReclaimedAtOnce) {
  ASSERT_OK_AND_ASSIGN(auto b, Open());
  std::string id;
  {
    ASSERT_OK_AND_ASSIGN(auto a, Open());
    ASSERT_OK_AND_ASSIGN(id, a->CreateJob(Spec("closed"), Requests(4)));
    ASSERT_OK_AND_ASSIGN(std::vector<ClaimedItem> c, a->ClaimItems(3));
    ASSERT_THAT(a->CompleteItem(id, 0, 1, "a0"), IsOk());
    ASSERT_OK_AND_ASSIGN(std::vector<ClaimedItem> none, b->ClaimItems(10));
    ASSERT_THAT(none, SizeIs(1));  // only item 3: a lives
    EXPECT_EQ(none[0].index, 3);
  }  // a closes with items 1 and 2 running
  ASSERT_OK_AND_ASSIGN(std::vector<ClaimedItem> got, b->ClaimItems(10));
  ASSERT_THAT(got, SizeIs(2));
  EXPECT_EQ(got[0].index, 1);
  EXPECT_EQ(got[1].index, 2);
  EXPECT_EQ(got[0].attempt, 1);  // the closed coordinator's attempt is not counted
  EXPECT_EQ(b->recovered_items(), 2);
}

// A forked child runs `body(report, go)` and exits with its result (never returns).
struct Child {
  pid_t pid = -1;
  int from_child = -1;
  int to_child = -1;
};

bool WriteByte(int fd, char c) { return ::write(fd, &c, 1) == 1; }
char ReadByte(int fd) {
  char c = 0;
  return ::read(fd, &c, 1) == 1 ? c : '\0';
}

Child ForkChild(const std::function<int(int, int)>& body) {
  int up[2], down[2];
  if (::pipe(up) != 0 || ::pipe(down) != 0) return {};
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(up[0]);
    ::close(down[1]);
    ::_exit(body(up[1], down[0]));
  }
  ::close(up[1]);
  ::close(down[0]);
  return Child{pid, up[0], down[1]};
}

void KillAndReap(const Child& child) {
  ::kill(child.pid, SIGKILL);
  int status = 0;
  ::waitpid(child.pid, &status, 0);
  ::close(child.from_child);
  ::close(child.to_child);
}

TEST_F(PostgresBatchStoreTest, ADeadCoordinatorsItemsAreReclaimedAfterTheTtl) {
  constexpr int kItems = 8, kChildClaims = 5;
  {
    ASSERT_OK_AND_ASSIGN(auto setup, Open());
    ASSERT_OK_AND_ASSIGN(std::string id, setup->CreateJob(Spec("dead"), Requests(kItems)));
  }
  const std::string url = server_->url();
  // The child is a coordinator that claims items and is then SIGKILLed: no unregistering, its
  // heartbeat (every 250 ms) just stops.
  const Child child = ForkChild([&](int report, int go) {
    PostgresBatchStoreOptions o;
    o.owner_ttl = std::chrono::milliseconds(1000);
    auto store = PostgresBatchStore::Open(url, o);
    if (!store.ok()) return 2;
    auto claimed = (*store)->ClaimItems(kChildClaims);
    if (!claimed.ok() || claimed->size() != kChildClaims) return 3;
    if (!WriteByte(report, 'k')) return 4;
    ReadByte(go);  // wait to be killed
    return 0;
  });
  ASSERT_GT(child.pid, 0);
  ASSERT_EQ(ReadByte(child.from_child), 'k') << "the child coordinator failed";

  PostgresBatchStoreOptions options;
  options.owner_ttl = std::chrono::milliseconds(3000);  // well above the child's heartbeat
  ASSERT_OK_AND_ASSIGN(auto survivor, Open(options));
  ASSERT_OK_AND_ASSIGN(std::vector<ClaimedItem> rest, survivor->ClaimItems(kItems));
  ASSERT_THAT(rest, SizeIs(kItems - kChildClaims));  // the live child keeps its items
  EXPECT_EQ(rest[0].index, kChildClaims);
  EXPECT_EQ(survivor->recovered_items(), 0);
  const Clock::time_point killed = Clock::now();
  KillAndReap(child);

  // Poll with a deadline until the lapsed owner's items come back (after owner_ttl).
  std::vector<ClaimedItem> reclaimed;
  const Clock::time_point deadline = killed + std::chrono::seconds(60);
  while (reclaimed.size() < kChildClaims && Clock::now() < deadline) {
    ASSERT_OK_AND_ASSIGN(std::vector<ClaimedItem> got, survivor->ClaimItems(kItems));
    reclaimed.insert(reclaimed.end(), got.begin(), got.end());
  }
  ASSERT_THAT(reclaimed, SizeIs(kChildClaims));
  EXPECT_GE(Clock::now() - killed, std::chrono::milliseconds(2000));  // not before the TTL
  EXPECT_EQ(survivor->recovered_items(), kChildClaims);
  for (int i = 0; i < kChildClaims; ++i) {
    EXPECT_EQ(reclaimed[i].index, i);
    EXPECT_EQ(reclaimed[i].attempt, 1);  // the dead coordinator's attempt is not counted
  }
  for (const std::vector<ClaimedItem>* claims : {&rest, &reclaimed}) {
    for (const ClaimedItem& c : *claims) {
      ASSERT_THAT(survivor->CompleteItem(c.job_id, c.index, c.attempt, "done"), IsOk());
    }
  }
  ASSERT_OK_AND_ASSIGN(JobInfo job, survivor->GetJob("job-000001"));
  EXPECT_EQ(job.state, JobState::kSucceeded);
  EXPECT_EQ(job.succeeded, kItems);
  // The dead coordinator is forgotten once its items are back.
  EXPECT_EQ(RawQuery("SELECT count(*)::text FROM dapq_owners"), "1");
}

// Coordinators (stores) x threads claim and complete one job's items; returns per item how many
// completions committed. `on_progress(completed)` runs on the worker threads after each one.
struct Crowd {
  std::vector<std::atomic<int>> claims;       // claims of attempt 1 per item
  std::vector<std::atomic<int>> completions;  // CompleteItem calls that returned OK per item
  std::atomic<int> completed{0};
  std::atomic<int> unexpected{0};
  Mutex mu;
  std::vector<std::string> errors ABSL_GUARDED_BY(mu);

  // Spinning on a job that never finishes (an item lost while running) fails, not hangs.
  const Clock::time_point deadline = Clock::now() + std::chrono::seconds(180);

  explicit Crowd(int items) : claims(items), completions(items) {}

  void Error(const absl::Status& s) {
    ++unexpected;
    MutexLock lock(&mu);
    errors.push_back(s.ToString());
  }

  void Work(BatchStore* store, const std::string& id, int seed,
            const std::function<void(int)>& on_progress) {
    std::mt19937 rng(seed);
    for (;;) {
      auto claimed = store->ClaimItems(1 + static_cast<int>(rng() % 4));
      if (!claimed.ok()) return Error(claimed.status());
      if (claimed->empty()) {
        auto job = store->GetJob(id);
        if (!job.ok()) return Error(job.status());
        if (job->finished()) return;
        if (Clock::now() > deadline) {
          return Error(absl::DeadlineExceededError(absl::StrCat(
              "job not finished: ", job->pending, " pending, ", job->running, " running")));
        }
        std::this_thread::yield();  // other coordinators still hold running items
        continue;
      }
      for (const ClaimedItem& c : *claimed) {
        if (c.attempt == 1) ++claims[c.index];
        const absl::Status s = store->CompleteItem(id, c.index, c.attempt, "r" + c.request);
        if (s.ok()) {
          ++completions[c.index];
          on_progress(++completed);
        } else if (s.code() != absl::StatusCode::kFailedPrecondition) {
          Error(s);  // FailedPrecondition: the claim was lost (reclaimed), never a duplicate
        }
      }
    }
  }
};

void ExpectEveryItemOnce(BatchStore* store, const std::string& id, Crowd& crowd, int items) {
  EXPECT_EQ(crowd.unexpected.load(), 0);
  {
    MutexLock lock(&crowd.mu);
    for (const std::string& e : crowd.errors) ADD_FAILURE() << e;
  }
  for (int i = 0; i < items; ++i) EXPECT_EQ(crowd.completions[i].load(), 1) << "item " << i;
  ASSERT_OK_AND_ASSIGN(JobInfo job, store->GetJob(id));
  EXPECT_EQ(job.state, JobState::kSucceeded);
  EXPECT_EQ(job.succeeded, items);
  ASSERT_OK_AND_ASSIGN(std::vector<ItemRecord> records, store->ListItems(id, 0, items));
  ASSERT_THAT(records, SizeIs(items));
  for (const ItemRecord& r : records) {
    EXPECT_EQ(r.state, ItemState::kSucceeded) << r.index;
    EXPECT_EQ(r.attempts, 1) << r.index;  // nothing counted twice
    EXPECT_EQ(r.result, "rreq-" + std::to_string(r.index)) << r.index;
  }
}

TEST_F(PostgresBatchStoreTest, TwoCoordinatorsClaimDisjointItemsConcurrently) {
  constexpr int kItems = 300, kThreadsPerStore = 3;
  // Both open at once on an empty database: the schema is created once, under the lock.
  std::unique_ptr<PostgresBatchStore> stores[2];
  absl::Status open_status[2];
  {
    std::vector<std::thread> openers;
    openers.reserve(2);
    for (int s = 0; s < 2; ++s) {
      openers.emplace_back([&, s] {
        auto store = Open();
        open_status[s] = store.status();
        if (store.ok()) stores[s] = *std::move(store);
      });
    }
    for (std::thread& t : openers) t.join();
  }
  ASSERT_THAT(open_status[0], IsOk());
  ASSERT_THAT(open_status[1], IsOk());
  ASSERT_OK_AND_ASSIGN(std::string id, stores[0]->CreateJob(Spec("crowd"), Requests(kItems)));

  Crowd crowd(kItems);
  std::vector<std::thread> threads;
  for (int s = 0; s < 2; ++s) {
    for (int t = 0; t < kThreadsPerStore; ++t) {
      threads.emplace_back([&, s, t] { crowd.Work(stores[s].get(), id, 10 * s + t, [](int) {}); });
    }
  }
  for (std::thread& t : threads) t.join();
  for (int i = 0; i < kItems; ++i) EXPECT_EQ(crowd.claims[i].load(), 1) << "item " << i;
  ExpectEveryItemOnce(stores[1].get(), id, crowd, kItems);
  EXPECT_EQ(stores[0]->recovered_items() + stores[1]->recovered_items(), 0);
}

TEST_F(PostgresBatchStoreTest, ConcurrentLastCompletionsFinishTheJobOnce) {
  ASSERT_OK_AND_ASSIGN(auto a, Open());
  ASSERT_OK_AND_ASSIGN(auto b, Open());
  for (int round = 0; round < 20; ++round) {
    SCOPED_TRACE(round);
    ASSERT_OK_AND_ASSIGN(std::string id, a->CreateJob(Spec("pair"), Requests(2)));
    ASSERT_OK_AND_ASSIGN(std::vector<ClaimedItem> ca, a->ClaimItems(1));
    ASSERT_OK_AND_ASSIGN(std::vector<ClaimedItem> cb, b->ClaimItems(1));
    ASSERT_THAT(ca, SizeIs(1));
    ASSERT_THAT(cb, SizeIs(1));
    // Both completions start together; one must see the other and finish the job.
    Mutex mu;
    CondVar cv;
    int ready = 0;
    absl::Status sa, sb;
    auto complete = [&](BatchStore* store, const ClaimedItem& c, absl::Status* out) {
      {
        MutexLock lock(&mu);
        ++ready;
        cv.SignalAll();
        cv.Wait(&mu, [&] { return ready == 2; });
      }
      *out = store->CompleteItem(id, c.index, c.attempt, "x");
    };
    std::thread ta(complete, a.get(), ca[0], &sa);
    std::thread tb(complete, b.get(), cb[0], &sb);
    ta.join();
    tb.join();
    EXPECT_THAT(sa, IsOk());
    EXPECT_THAT(sb, IsOk());
    ASSERT_OK_AND_ASSIGN(JobInfo job, a->GetJob(id));
    EXPECT_EQ(job.state, JobState::kSucceeded);
    EXPECT_TRUE(job.finished());
  }
}

TEST_F(PostgresBatchStoreTest, CancelRacingClaimsAndRetriesLeavesNothingPending) {
  ASSERT_OK_AND_ASSIGN(auto worker, Open());
  ASSERT_OK_AND_ASSIGN(auto canceller, Open());
  for (int round = 0; round < 10; ++round) {
    SCOPED_TRACE(round);
    // Attempts never run out here: only the cancel ends the job.
    ASSERT_OK_AND_ASSIGN(std::string id, worker->CreateJob(Spec("race", 1000), Requests(30)));
    std::atomic<bool> cancelled{false};
    std::atomic<int> unexpected{0};
    // The worker claims and fails every attempt (retryable), putting items back to pending,
    // while the other coordinator cancels the job.
    std::thread work([&] {
      for (int i = 0; i < 200; ++i) {
        auto claimed = worker->ClaimItems(3);
        if (!claimed.ok()) {
          ++unexpected;
          return;
        }
        if (claimed->empty() && cancelled.load()) return;
        for (const ClaimedItem& c : *claimed) {
          const absl::Status s = worker->FailItem(id, c.index, c.attempt, "again", true);
          if (!s.ok()) ++unexpected;
        }
      }
    });
    std::thread cancel([&] {
      for (int i = 0; i < round; ++i) std::this_thread::yield();
      if (!canceller->CancelJob(id).ok()) ++unexpected;
      cancelled = true;
    });
    cancel.join();
    work.join();
    EXPECT_EQ(unexpected.load(), 0);
    ASSERT_OK_AND_ASSIGN(JobInfo job, canceller->GetJob(id));
    EXPECT_EQ(job.state, JobState::kCancelled);
    EXPECT_EQ(job.pending, 0);
    EXPECT_EQ(job.running, 0);
    EXPECT_TRUE(job.finished());
    EXPECT_EQ(job.cancelled, 30);
  }
}

TEST_F(PostgresBatchStoreTest, EveryItemSucceedsOnceAcrossAPostgresCrashAndRestart) {
  constexpr int kItems = 300, kThreadsPerStore = 2, kKillAfter = 100;
  ASSERT_OK_AND_ASSIGN(auto a, Open());
  ASSERT_OK_AND_ASSIGN(auto b, Open());
  ASSERT_OK_AND_ASSIGN(std::string id, a->CreateJob(Spec("crash"), Requests(kItems)));

  Crowd crowd(kItems);
  Mutex mu;
  CondVar cv;
  auto progress = [&](int completed) {
    if (completed == kKillAfter) {
      MutexLock lock(&mu);
      cv.SignalAll();
    }
  };
  std::vector<std::thread> threads;
  for (BatchStore* store : {static_cast<BatchStore*>(a.get()), static_cast<BatchStore*>(b.get())}) {
    for (int t = 0; t < kThreadsPerStore; ++t) {
      threads.emplace_back(
          [&, store, t] { crowd.Work(store, id, t + (store == a.get() ? 0 : 100), progress); });
    }
  }
  int completed_at_kill = 0;
  {
    MutexLock lock(&mu);
    cv.Wait(&mu, [&] { return crowd.completed.load() >= kKillAfter || crowd.unexpected > 0; });
    completed_at_kill = crowd.completed.load();
  }
  // A crash of the whole server in the middle of the job (commits in flight are lost or not),
  // then crash recovery on the same data directory and port.
  ASSERT_THAT(server_->Kill(), IsOk());
  ASSERT_THAT(server_->Restart(), IsOk());
  for (std::thread& t : threads) t.join();
  EXPECT_LT(completed_at_kill, kItems);  // the crash really was mid-job
  ExpectEveryItemOnce(a.get(), id, crowd, kItems);
  EXPECT_THAT(server_->log(), HasSubstr("database system was interrupted"));
}

// ---- Commits whose outcome the client cannot know ----

// A TCP proxy in front of PostgreSQL that loses the next COMMIT on purpose: kAnswer lets the
// server commit and drops its answer (the client cannot know it committed), kRequest drops the
// COMMIT itself (the server rolls back); both then close the connection. kRequestKeepSession
// drops the COMMIT and closes only the client's side, like a network that failed: the server's
// session stays idle in its transaction (until the proxy goes away). It parses
// the protocol's message framing only (clients connect with sslmode=disable and
// gssencmode=disable, so everything after the startup packet is typed messages).
class CommitCuttingProxy {
 public:
  enum class Cut { kNone, kAnswer, kRequest, kRequestKeepSession };

  static absl::StatusOr<std::unique_ptr<CommitCuttingProxy>> Start(int server_port) {
    auto proxy = std::unique_ptr<CommitCuttingProxy>(new CommitCuttingProxy(server_port));
    proxy->listen_fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr);
    if (proxy->listen_fd_ < 0 ||
        ::bind(proxy->listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
        ::listen(proxy->listen_fd_, 16) != 0 ||
        ::getsockname(proxy->listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      return absl::InternalError("proxy: cannot listen");
    }
    proxy->port_ = ntohs(addr.sin_port);
    CommitCuttingProxy* raw = proxy.get();
    proxy->accept_thread_ = std::thread([raw] { raw->AcceptLoop(); });
    return proxy;
  }

  ~CommitCuttingProxy() {
    ::shutdown(listen_fd_, SHUT_RDWR);
    accept_thread_.join();
    ::close(listen_fd_);
    std::vector<std::thread> threads;
    std::vector<int> fds;
    {
      MutexLock lock(&mu_);
      stopping_ = true;
      for (int fd : fds_) ::shutdown(fd, SHUT_RDWR);
      threads.swap(threads_);
      fds = fds_;
    }
    for (std::thread& t : threads) t.join();
    for (int fd : fds) ::close(fd);
  }

  int port() const { return port_; }
  // `before_close` runs on the proxy's thread once the COMMIT is cut, before the client learns
  // anything (its connection is closed after it returns).
  void CutNextCommit(Cut how, std::function<void()> before_close = nullptr) {
    {
      MutexLock lock(&mu_);
      before_close_ = std::move(before_close);
    }
    next_cut_ = how;
  }
  int cuts() const { return cuts_.load(); }

 private:
  // One proxied connection's state, shared by its two pumps.
  struct Link {
    int client = -1, server = -1;
    Mutex mu;
    CondVar cv;
    bool cutting ABSL_GUARDED_BY(mu) = false;   // the client pump closes the connection
    bool swallow ABSL_GUARDED_BY(mu) = false;   // drop the server's answers from now on
    bool answered ABSL_GUARDED_BY(mu) = false;  // the swallowed answer is complete
  };

  explicit CommitCuttingProxy(int server_port) : server_port_(server_port) {}

  static bool ReadFull(int fd, char* buf, size_t n) {
    while (n > 0) {
      const ssize_t r = ::read(fd, buf, n);
      if (r <= 0) return false;
      buf += r;
      n -= static_cast<size_t>(r);
    }
    return true;
  }
  static bool WriteFull(int fd, const std::string& data) {
    for (size_t off = 0; off < data.size();) {
      const ssize_t w = ::send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
      if (w <= 0) return false;
      off += static_cast<size_t>(w);
    }
    return true;
  }
  // One message: `typed` ones start with a type byte; then a length that counts itself.
  static bool ReadMessage(int fd, bool typed, std::string* out) {
    out->assign(typed ? 5 : 4, '\0');
    if (!ReadFull(fd, out->data(), out->size())) return false;
    uint32_t len = 0;
    std::memcpy(&len, out->data() + (typed ? 1 : 0), 4);
    len = ntohl(len);
    if (len < 4 || len > (1u << 30)) return false;
    const size_t header = out->size();
    out->resize(header + len - 4);
    return ReadFull(fd, out->data() + header, len - 4);
  }

  void AcceptLoop() {
    for (;;) {
      const int client = ::accept(listen_fd_, nullptr, nullptr);
      if (client < 0) return;
      const int server = ::socket(AF_INET, SOCK_STREAM, 0);
      sockaddr_in addr{};
      addr.sin_family = AF_INET;
      addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      addr.sin_port = htons(static_cast<uint16_t>(server_port_));
      if (server < 0 || ::connect(server, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
        ::close(client);
        if (server >= 0) ::close(server);
        continue;
      }
      const int one = 1;  // forward each message at once (no Nagle delays)
      ::setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
      ::setsockopt(server, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
      auto link = std::make_shared<Link>();
      link->client = client;
      link->server = server;
      MutexLock lock(&mu_);
      if (stopping_) {
        ::close(client);
        ::close(server);
        return;
      }
      fds_.push_back(client);
      fds_.push_back(server);
      threads_.emplace_back([this, link] { ClientToServer(*link); });
      threads_.emplace_back([link] { ServerToClient(*link); });
    }
  }

  static void Close(const Link& link) {
    ::shutdown(link.client, SHUT_RDWR);
    ::shutdown(link.server, SHUT_RDWR);
  }

  void ClientToServer(Link& link) {
    std::string msg;
    bool typed = false;  // the startup packet has no type byte
    while (ReadMessage(link.client, typed, &msg)) {
      typed = true;
      const bool commit = msg.size() > 5 && msg[0] == 'Q' && msg.compare(5, 6, "COMMIT") == 0;
      const Cut cut = commit ? next_cut_.exchange(Cut::kNone) : Cut::kNone;
      if (cut != Cut::kNone) {
        ++cuts_;
        {
          MutexLock lock(&link.mu);
          link.cutting = true;  // even if the server goes away now, the client waits for us
        }
        std::function<void()> before_close;
        {
          MutexLock lock(&mu_);
          before_close.swap(before_close_);
        }
        if (before_close && cut == Cut::kRequest) before_close();
      }
      if (cut == Cut::kRequest) break;  // the server never sees this COMMIT
      if (cut == Cut::kRequestKeepSession) {
        ::shutdown(link.client, SHUT_RDWR);
        return;
      }
      if (cut == Cut::kAnswer) {
        MutexLock lock(&link.mu);
        link.swallow = true;
      }
      if (!WriteFull(link.server, msg)) break;
      if (cut == Cut::kAnswer) {
        MutexLock lock(&link.mu);
        link.cv.WaitFor(&link.mu, std::chrono::seconds(30), [&] { return link.answered; });
        break;
      }
    }
    Close(link);
  }

  static void ServerToClient(Link& link) {
    std::string msg;
    while (ReadMessage(link.server, true, &msg)) {
      {
        MutexLock lock(&link.mu);
        if (link.swallow) {
          if (msg[0] == 'Z') {  // ReadyForQuery: the COMMIT's answer is complete
            link.answered = true;
            link.cv.SignalAll();
          }
          continue;
        }
      }
      if (!WriteFull(link.client, msg)) break;
    }
    MutexLock lock(&link.mu);
    link.answered = true;
    link.cv.SignalAll();
    if (!link.cutting) Close(link);
  }

  const int server_port_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<Cut> next_cut_{Cut::kNone};
  std::atomic<int> cuts_{0};
  std::thread accept_thread_;
  Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<int> fds_ ABSL_GUARDED_BY(mu_);
  std::vector<std::thread> threads_ ABSL_GUARDED_BY(mu_);
  std::function<void()> before_close_ ABSL_GUARDED_BY(mu_);
};

TEST_F(PostgresBatchStoreTest, ACommitOfUnknownOutcomeTakesEffectExactlyOnce) {
  using Cut = CommitCuttingProxy::Cut;
  ASSERT_OK_AND_ASSIGN(auto proxy, CommitCuttingProxy::Start(server_->port()));
  ASSERT_OK_AND_ASSIGN(auto store, PostgresBatchStore::Open(absl::StrCat(
                                       "postgres://postgres@127.0.0.1:", proxy->port(),
                                       "/postgres?sslmode=disable&gssencmode=disable")));
  const std::string owner = store->owner_id();
  // Each call below loses its COMMIT's answer (the server committed) or the COMMIT itself (the
  // server rolled back), reconnects, learns which from pg_xact_status, and takes effect once.
  proxy->CutNextCommit(Cut::kAnswer);
  ASSERT_OK_AND_ASSIGN(std::string id, store->CreateJob(Spec("unknown"), Requests(6)));
  EXPECT_EQ(proxy->cuts(), 1);
  EXPECT_EQ(id, "job-000001");
  ASSERT_OK_AND_ASSIGN(std::vector<JobInfo> jobs, store->ListJobs(10));
  EXPECT_THAT(jobs, SizeIs(1));  // not created twice

  proxy->CutNextCommit(Cut::kAnswer);
  ASSERT_OK_AND_ASSIGN(std::vector<ClaimedItem> first, store->ClaimItems(2));
  EXPECT_EQ(proxy->cuts(), 2);
  ASSERT_THAT(first, SizeIs(2));  // the committed claim, not a second one
  EXPECT_EQ(first[0].index, 0);
  EXPECT_EQ(first[1].index, 1);
  proxy->CutNextCommit(Cut::kRequest);
  ASSERT_OK_AND_ASSIGN(std::vector<ClaimedItem> second, store->ClaimItems(2));
  EXPECT_EQ(proxy->cuts(), 3);
  ASSERT_THAT(second, SizeIs(2));  // the rolled-back claim ran again
  EXPECT_EQ(second[0].index, 2);
  EXPECT_EQ(second[1].index, 3);
  ASSERT_OK_AND_ASSIGN(JobInfo job, store->GetJob(id));
  EXPECT_EQ(job.running, 4);
  EXPECT_EQ(job.pending, 2);

  proxy->CutNextCommit(Cut::kAnswer);
  EXPECT_THAT(store->CompleteItem(id, 0, 1, "r0"), IsOk());
  proxy->CutNextCommit(Cut::kRequest);
  EXPECT_THAT(store->CompleteItem(id, 1, 1, "r1"), IsOk());
  proxy->CutNextCommit(Cut::kAnswer);
  EXPECT_THAT(store->FailItem(id, 2, 1, "e2", true), IsOk());
  proxy->CutNextCommit(Cut::kAnswer);
  EXPECT_THAT(store->ReleaseItem(id, 3, 1), IsOk());
  proxy->CutNextCommit(Cut::kAnswer);
  EXPECT_THAT(store->CancelJob(id), IsOk());
  EXPECT_EQ(proxy->cuts(), 8);
  // The old session still holds its transaction open: the store ends it instead of waiting.
  ASSERT_OK_AND_ASSIGN(std::string other, store->CreateJob(Spec("held"), Requests(1)));
  ASSERT_OK_AND_ASSIGN(std::vector<ClaimedItem> held, store->ClaimItems(1));
  ASSERT_THAT(held, SizeIs(1));
  proxy->CutNextCommit(Cut::kRequestKeepSession);
  const Clock::time_point start = Clock::now();
  EXPECT_THAT(store->CompleteItem(other, 0, 1, "once"), IsOk());
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(20));  // not the 60 s idle timeout
  EXPECT_EQ(proxy->cuts(), 9);
  ASSERT_OK_AND_ASSIGN(std::vector<ItemRecord> held_items, store->ListItems(other, 0, 1));
  EXPECT_EQ(held_items[0].result, "once");
  EXPECT_THAT(store->CompleteItem(id, 0, 1, "r0"),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("succeeded")));
  ASSERT_OK_AND_ASSIGN(std::vector<ItemRecord> items, store->ListItems(id, 0, 10));
  ASSERT_THAT(items, SizeIs(6));
  EXPECT_EQ(items[0].state, ItemState::kSucceeded);
  EXPECT_EQ(items[0].result, "r0");
  EXPECT_EQ(items[1].state, ItemState::kSucceeded);
  EXPECT_EQ(items[1].result, "r1");
  EXPECT_EQ(items[2].state, ItemState::kCancelled);  // requeued by the failure, then cancelled
  EXPECT_EQ(items[2].attempts, 1);
  EXPECT_EQ(items[2].error, "e2");
  EXPECT_EQ(items[3].state, ItemState::kCancelled);
  EXPECT_EQ(items[3].attempts, 0);  // released once, not twice
  ASSERT_OK_AND_ASSIGN(job, store->GetJob(id));
  EXPECT_EQ(job.state, JobState::kCancelled);
  EXPECT_TRUE(job.finished());
  EXPECT_EQ(store->owner_id(), owner);  // every outcome was learned: no new owner id
}

TEST_F(PostgresBatchStoreTest, ACommitLostInACrashIsNotMistakenForAnotherOne) {
  using Cut = CommitCuttingProxy::Cut;
  ASSERT_OK_AND_ASSIGN(auto proxy, CommitCuttingProxy::Start(server_->port()));
  ASSERT_OK_AND_ASSIGN(auto store, PostgresBatchStore::Open(absl::StrCat(
                                       "postgres://postgres@127.0.0.1:", proxy->port(),
                                       "/postgres?sslmode=disable&gssencmode=disable")));
  ASSERT_OK_AND_ASSIGN(std::string id, store->CreateJob(Spec("crash"), Requests(3)));
  for (int index = 0; index < 3; ++index) {
    SCOPED_TRACE(index);
    ASSERT_OK_AND_ASSIGN(std::vector<ClaimedItem> claimed, store->ClaimItems(1));
    ASSERT_THAT(claimed, SizeIs(1));
    // The COMMIT never reaches the server, which then crashes: its transaction's WAL, never
    // flushed, is lost, so after recovery the server hands that transaction id out again, here
    // to transactions that commit before the store can ask. Only the store's own marker tells
    // that its transaction did not commit.
    proxy->CutNextCommit(Cut::kRequest, [&] {
      EXPECT_THAT(server_->Kill(), IsOk());
      EXPECT_THAT(server_->Restart(), IsOk());
      for (int i = 0; i < 5; ++i) {
        EXPECT_THAT(RawQuery("SELECT pg_current_xact_id()::text"),
                    ::testing::MatchesRegex("[0-9]+"));
      }
    });
    EXPECT_THAT(store->CompleteItem(id, index, 1, "once"), IsOk());
    ASSERT_OK_AND_ASSIGN(std::vector<ItemRecord> items, store->ListItems(id, index, 1));
    EXPECT_EQ(items[0].state, ItemState::kSucceeded);
    EXPECT_EQ(items[0].result, "once");
  }
  ASSERT_OK_AND_ASSIGN(JobInfo job, store->GetJob(id));
  EXPECT_EQ(job.state, JobState::kSucceeded);
}

}  // namespace
}  // namespace dapq::coordinator
