// File: coordinator/batch_store_contract_test.cc
// The BatchStore contract, written once and run against every store: SQLite (a fresh file per
// test) and PostgreSQL (one real server per suite, tests/util/postgres_server.h, with a fresh
// database per test). Jobs and items, claim order, completion fenced by attempt, retries,
// cancel, JSONL export, reopen, tenants, threads racing on one store, and a seeded random walk
// checked against an in-memory model. What only one store has (SQLite: file locking, foreign
// or corrupt files, migration, crash recovery on Open; PostgreSQL: several owners, reclaim
// after the TTL, server crashes, lost COMMITs, URLs, the schema) stays in batch_store_test.cc
// and postgres_batch_store_test.cc. Where the stores differ, it is a named member of the
// store's traits below (today: only how long the random walk runs), never a silent branch.
#include <libpq-fe.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <mutex>
#include <random>
#include <thread>
#include <type_traits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "coordinator/batch_store.h"
#include "coordinator/postgres_batch_store.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/util/postgres_server.h"
#include "tests/util/status_matchers.h"
#include "tests/util/test_paths.h"

namespace dapq::coordinator {
namespace {
using ::dapq::testing::IsOk;
using ::dapq::testing::MakeTempDir;
using ::dapq::testing::PostgresServer;
using ::dapq::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::SizeIs;

// ---- The stores: each names where a fresh store lives and how to open it there ----

// SQLite: a location is a file path in a fresh temp directory.
struct SqliteStores {
  static absl::Status SetUpSuite() { return absl::OkStatus(); }
  static void TearDownSuite() {}
  static void PrintDiagnostics() {}
  static absl::StatusOr<std::string> NewLocation(const std::string& name) {
    return MakeTempDir("contract_sqlite_" + name) + "/batch.db";
  }
  static absl::StatusOr<std::unique_ptr<BatchStore>> Open(const std::string& path) {
    return BatchStore::Open(path);
  }
  static constexpr uint32_t kWalkSeeds = 3;
  static constexpr int kWalkSteps = 250;
};

// PostgreSQL: one server for the suite; a location is the URL of a fresh database on it.
struct PostgresStores {
  static absl::Status SetUpSuite() {
    auto server = PostgresServer::Start("pg_batch_store_contract");
    if (!server.ok()) return server.status();
    server_ = std::move(*server);
    return absl::OkStatus();
  }
  static void TearDownSuite() { server_.reset(); }
  static void PrintDiagnostics() {
    if (server_ == nullptr) return;
    std::cerr << "postgres log (" << server_->dir() << "/postgres.log):\n"
              << server_->log() << "\n";
  }
  static absl::StatusOr<std::string> NewLocation(const std::string& /*name*/) {
    const std::string db = absl::StrCat("contract_", ++databases_);
    PGconn* conn = PQconnectdb(server_->url().c_str());
    std::string error;
    if (PQstatus(conn) != CONNECTION_OK) {
      error = PQerrorMessage(conn);
    } else {
      PGresult* r = PQexec(conn, ("CREATE DATABASE " + db).c_str());
      if (PQresultStatus(r) != PGRES_COMMAND_OK) error = PQresultErrorMessage(r);
      PQclear(r);
    }
    PQfinish(conn);
    if (!error.empty())
      return absl::InternalError(absl::StrCat("CREATE DATABASE ", db, ": ", error));
    return server_->url(db);
  }
  static absl::StatusOr<std::unique_ptr<BatchStore>> Open(const std::string& url) {
    auto store = PostgresBatchStore::Open(url);
    if (!store.ok()) return store.status();
    return std::unique_ptr<BatchStore>(std::move(*store));
  }
  static constexpr uint32_t kWalkSeeds = 2;
  static constexpr int kWalkSteps = 200;

  static inline std::unique_ptr<PostgresServer> server_;
  static inline int databases_ = 0;
};

template <typename Stores>
class BatchStoreContractTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { suite_status_ = Stores::SetUpSuite(); }
  static void TearDownTestSuite() { Stores::TearDownSuite(); }

  void SetUp() override {
    // A missing PostgreSQL is a failure with the reason, never a skip.
    ASSERT_THAT(suite_status_, IsOk());
    ASSERT_OK_AND_ASSIGN(
        location_, NewLocation(::testing::UnitTest::GetInstance()->current_test_info()->name()));
  }
  void TearDown() override {
    if (HasFailure()) Stores::PrintDiagnostics();
  }

  // A fresh, empty location (a file or a database) for one more store.
  static absl::StatusOr<std::string> NewLocation(const std::string& name) {
    return Stores::NewLocation(name);
  }
  static absl::StatusOr<std::unique_ptr<BatchStore>> OpenAt(const std::string& location) {
    return Stores::Open(location);
  }
  // Opens (or reopens) this test's store.
  absl::StatusOr<std::unique_ptr<BatchStore>> Open() { return Stores::Open(location_); }

  std::string location_;
  static inline absl::Status suite_status_;
};

class StoreNames {
 public:
  template <typename T>
  static std::string GetName(int) {
    return std::is_same_v<T, SqliteStores> ? "Sqlite" : "Postgres";
  }
};

using Stores = ::testing::Types<SqliteStores, PostgresStores>;
TYPED_TEST_SUITE(BatchStoreContractTest, Stores, StoreNames);

std::vector<std::string> Requests(int n, const std::string& prefix = "req-") {
  std::vector<std::string> out;
  out.reserve(n);
  for (int i = 0; i < n; ++i) out.push_back(prefix + std::to_string(i));
  return out;
}

JobSpec Spec(const std::string& name, int max_attempts = 3) {
  return JobSpec{name, "opts:" + name, "", max_attempts, ""};
}

std::vector<std::string> ReadLines(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

// ---- The contract ----

TYPED_TEST(BatchStoreContractTest, CreateGetAndList) {
  ASSERT_OK_AND_ASSIGN(auto store, this->Open());
  EXPECT_EQ(store->recovered_items(), 0);
  EXPECT_EQ(store->path(), this->location_);
  JobSpec spec{"first", std::string("bin\0opts", 8), "/out/first.jsonl", 2, ""};
  std::vector<std::string> requests = {std::string("a\0b", 3), "", "c\xff"};
  ASSERT_OK_AND_ASSIGN(std::string id1, store->CreateJob(spec, requests));
  ASSERT_OK_AND_ASSIGN(std::string id2, store->CreateJob(Spec("second"), Requests(1)));
  EXPECT_EQ(id1, "job-000001");
  EXPECT_EQ(id2, "job-000002");

  ASSERT_OK_AND_ASSIGN(JobInfo job, store->GetJob(id1));
  EXPECT_EQ(job.id, id1);
  EXPECT_EQ(job.spec.name, "first");
  EXPECT_EQ(job.spec.options, spec.options);  // binary-safe
  EXPECT_EQ(job.spec.output_path, "/out/first.jsonl");
  EXPECT_EQ(job.spec.max_attempts, 2);
  EXPECT_EQ(job.state, JobState::kQueued);
  EXPECT_GT(job.created_unix_ms, 0);
  EXPECT_EQ(job.finished_unix_ms, 0);
  EXPECT_EQ(job.total, 3);
  EXPECT_EQ(job.pending, 3);
  EXPECT_EQ(job.running + job.succeeded + job.failed + job.cancelled, 0);

  ASSERT_OK_AND_ASSIGN(std::vector<ItemRecord> items, store->ListItems(id1, 0, 10));
  ASSERT_THAT(items, SizeIs(3));
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(items[i].job_id, id1);
    EXPECT_EQ(items[i].index, i);
    EXPECT_EQ(items[i].state, ItemState::kPending);
    EXPECT_EQ(items[i].attempts, 0);
    EXPECT_EQ(items[i].request, requests[i]);
  }
  ASSERT_OK_AND_ASSIGN(items, store->ListItems(id1, 1, 1));
  ASSERT_THAT(items, SizeIs(1));
  EXPECT_EQ(items[0].index, 1);

  ASSERT_OK_AND_ASSIGN(std::vector<JobInfo> jobs, store->ListJobs(10));
  ASSERT_THAT(jobs, SizeIs(2));
  EXPECT_EQ(jobs[0].id, id2);  // newest first
  EXPECT_EQ(jobs[1].id, id1);
  EXPECT_EQ(jobs[1].pending, 3);
  ASSERT_OK_AND_ASSIGN(jobs, store->ListJobs(1));
  ASSERT_THAT(jobs, SizeIs(1));
  EXPECT_EQ(jobs[0].id, id2);

  for (const char* bad : {"job-000099", "nonsense", "job-1", "job--00001", ""}) {
    EXPECT_THAT(store->GetJob(bad), StatusIs(absl::StatusCode::kNotFound, HasSubstr(bad)));
  }
  EXPECT_THAT(store->ListItems("job-000099", 0, 1),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("job-000099")));
  EXPECT_THAT(store->CreateJob(Spec("empty"), {}), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(store->CreateJob(Spec("zero", 0), Requests(1)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("max_attempts")));
  EXPECT_THAT(store->ListJobs(-1), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(store->ListItems(id1, -1, 1), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(store->ClaimItems(-1), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_EQ(JobStateName(JobState::kCancelled), "cancelled");
  EXPECT_EQ(ItemStateName(ItemState::kPending), "pending");
}

TYPED_TEST(BatchStoreContractTest, ClaimsOldestJobFirstThenByIndex) {
  ASSERT_OK_AND_ASSIGN(auto store, this->Open());
  ASSERT_OK_AND_ASSIGN(std::string a, store->CreateJob(Spec("a"), Requests(3, "a")));
  ASSERT_OK_AND_ASSIGN(std::string b, store->CreateJob(Spec("b"), Requests(2, "b")));
  ASSERT_OK_AND_ASSIGN(std::vector<ClaimedItem> none, store->ClaimItems(0));
  EXPECT_TRUE(none.empty());

  ASSERT_OK_AND_ASSIGN(std::vector<ClaimedItem> first, store->ClaimItems(2));
  ASSERT_THAT(first, SizeIs(2));
  EXPECT_EQ(first[0].job_id, a);
  EXPECT_EQ(first[0].index, 0);
  EXPECT_EQ(first[0].attempt, 1);
  EXPECT_EQ(first[0].request, "a0");
  EXPECT_EQ(first[0].options, "opts:a");
  EXPECT_EQ(first[1].index, 1);
  ASSERT_OK_AND_ASSIGN(JobInfo ja, store->GetJob(a));
  ASSERT_OK_AND_ASSIGN(JobInfo jb, store->GetJob(b));
  EXPECT_EQ(ja.state, JobState::kRunning);
  EXPECT_EQ(ja.running, 2);
  EXPECT_EQ(ja.pending, 1);
  EXPECT_EQ(jb.state, JobState::kQueued);

  ASSERT_OK_AND_ASSIGN(std::vector<ClaimedItem> rest, store->ClaimItems(10));
  std::vector<std::string> got;
  got.reserve(rest.size());
  for (const ClaimedItem& c : rest) got.push_back(c.job_id + "/" + c.request);
  EXPECT_THAT(got, ElementsAre(a + "/a2", b + "/b0", b + "/b1"));
  ASSERT_OK_AND_ASSIGN(jb, store->GetJob(b));
  EXPECT_EQ(jb.state, JobState::kRunning);
  ASSERT_OK_AND_ASSIGN(none, store->ClaimItems(5));
  EXPECT_TRUE(none.empty());
}

TYPED_TEST(BatchStoreContractTest, CompletingEveryItemFinishesTheJob) {
  ASSERT_OK_AND_ASSIGN(auto store, this->Open());
  ASSERT_OK_AND_ASSIGN(std::string id, store->CreateJob(Spec("c"), Requests(2)));
  ASSERT_OK_AND_ASSIGN(std::vector<ClaimedItem> claimed, store->ClaimItems(2));
  ASSERT_THAT(claimed, SizeIs(2));
  EXPECT_THAT(store->CompleteItem(id, 0, 1, R"({"text":"zero"})"), IsOk());
  ASSERT_OK_AND_ASSIGN(JobInfo job, store->GetJob(id));
  EXPECT_EQ(job.state, JobState::kRunning);
  EXPECT_EQ(job.succeeded, 1);
  EXPECT_FALSE(job.finished());
  EXPECT_THAT(store->CompleteItem(id, 1, 1, R"({"text":"one"})"), IsOk());
  ASSERT_OK_AND_ASSIGN(job, store->GetJob(id));
  EXPECT_EQ(job.state, JobState::kSucceeded);
  EXPECT_EQ(job.succeeded, 2);
  EXPECT_GE(job.finished_unix_ms, job.created_unix_ms);
  ASSERT_OK_AND_ASSIGN(std::vector<ItemRecord> items, store->ListItems(id, 0, 10));
  EXPECT_EQ(items[0].state, ItemState::kSucceeded);
  EXPECT_EQ(items[0].result, R"({"text":"zero"})");
  EXPECT_EQ(items[1].result, R"({"text":"one"})");
  // A second completion of the same attempt is refused: no double completion.
  EXPECT_THAT(store->CompleteItem(id, 0, 1, "again"),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("succeeded")));
  EXPECT_THAT(store->CompleteItem(id, 7, 1, "x"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("no item 7")));
  EXPECT_THAT(store->CompleteItem("job-000042", 0, 1, "x"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("job-000042")));
  EXPECT_THAT(store->CancelJob(id),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("finished")));
}

TYPED_TEST(BatchStoreContractTest, RetriesUpToMaxAttemptsThenFails) {
  ASSERT_OK_AND_ASSIGN(auto store, this->Open());
  ASSERT_OK_AND_ASSIGN(std::string id, store->CreateJob(Spec("r", 3), Requests(2)));
  for (int attempt = 1; attempt <= 3; ++attempt) {
    ASSERT_OK_AND_ASSIGN(std::vector<ClaimedItem> c, store->ClaimItems(1));
    ASSERT_THAT(c, SizeIs(1));
    EXPECT_EQ(c[0].index, 0);
    EXPECT_EQ(c[0].attempt, attempt);
    EXPECT_THAT(store->FailItem(id, 0, attempt, "boom " + std::to_string(attempt), true), IsOk());
    ASSERT_OK_AND_ASSIGN(std::vector<ItemRecord> items, store->ListItems(id, 0, 1));
    EXPECT_EQ(items[0].attempts, attempt);
    EXPECT_EQ(items[0].error, "boom " + std::to_string(attempt));
    EXPECT_EQ(items[0].state, attempt < 3 ? ItemState::kPending : ItemState::kFailed);
  }
  // A release does not count: the next claim is attempt 1 again.
  ASSERT_OK_AND_ASSIGN(std::vector<ClaimedItem> c, store->ClaimItems(1));
  ASSERT_THAT(c, SizeIs(1));
  EXPECT_EQ(c[0].index, 1);
  EXPECT_THAT(store->ReleaseItem(id, 1, 1), IsOk());
  ASSERT_OK_AND_ASSIGN(std::vector<ItemRecord> items, store->ListItems(id, 1, 1));
  EXPECT_EQ(items[0].state, ItemState::kPending);
  EXPECT_EQ(items[0].attempts, 0);
  ASSERT_OK_AND_ASSIGN(c, store->ClaimItems(1));
  ASSERT_THAT(c, SizeIs(1));
  EXPECT_EQ(c[0].attempt, 1);
  // Not retryable: failed at once, and the job finishes as failed.
  EXPECT_THAT(store->FailItem(id, 1, 1, "bad request", false), IsOk());
  ASSERT_OK_AND_ASSIGN(JobInfo job, store->GetJob(id));
  EXPECT_EQ(job.state, JobState::kFailed);
  EXPECT_EQ(job.failed, 2);
  EXPECT_TRUE(job.finished());
}

TYPED_TEST(BatchStoreContractTest, StaleAttemptCannotCompleteFailOrRelease) {
  ASSERT_OK_AND_ASSIGN(auto store, this->Open());
  ASSERT_OK_AND_ASSIGN(std::string id, store->CreateJob(Spec("s"), Requests(1)));
  ASSERT_OK_AND_ASSIGN(std::vector<ClaimedItem> c1, store->ClaimItems(1));
  ASSERT_THAT(store->FailItem(id, 0, 1, "timeout", true), IsOk());
  ASSERT_OK_AND_ASSIGN(std::vector<ClaimedItem> c2, store->ClaimItems(1));
  ASSERT_THAT(c2, SizeIs(1));
  ASSERT_EQ(c2[0].attempt, 2);
  // The first worker comes back late: every call with attempt 1 is refused.
  EXPECT_THAT(store->CompleteItem(id, 0, 1, "late"),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("attempt 1")));
  EXPECT_THAT(store->FailItem(id, 0, 1, "late", true),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(store->ReleaseItem(id, 0, 1), StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(store->CompleteItem(id, 0, 3, "future"),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(store->CompleteItem(id, 0, 2, "current"), IsOk());
  EXPECT_THAT(store->CompleteItem(id, 0, 2, "twice"),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  ASSERT_OK_AND_ASSIGN(std::vector<ItemRecord> items, store->ListItems(id, 0, 1));
  EXPECT_EQ(items[0].result, "current");
  EXPECT_EQ(items[0].attempts, 2);
}

TYPED_TEST(BatchStoreContractTest, CancelStopsPendingItemsAndLetsRunningOnesFinish) {
  ASSERT_OK_AND_ASSIGN(auto store, this->Open());
  ASSERT_OK_AND_ASSIGN(std::string id, store->CreateJob(Spec("x"), Requests(4)));
  ASSERT_OK_AND_ASSIGN(std::string other, store->CreateJob(Spec("y"), Requests(1)));
  ASSERT_OK_AND_ASSIGN(std::vector<ClaimedItem> c, store->ClaimItems(2));
  EXPECT_THAT(store->CancelJob(id), IsOk());
  ASSERT_OK_AND_ASSIGN(JobInfo job, store->GetJob(id));
  EXPECT_EQ(job.state, JobState::kCancelled);
  EXPECT_FALSE(job.finished());  // two items still running
  EXPECT_EQ(job.cancelled, 2);
  EXPECT_EQ(job.running, 2);
  EXPECT_EQ(job.pending, 0);
  EXPECT_THAT(store->CancelJob(id), IsOk());  // still draining: nothing more to do
  ASSERT_OK_AND_ASSIGN(c, store->ClaimItems(10));
  ASSERT_THAT(c, SizeIs(1));
  EXPECT_EQ(c[0].job_id, other);

  EXPECT_THAT(store->CompleteItem(id, 0, 1, "kept"), IsOk());
  EXPECT_THAT(store->FailItem(id, 1, 1, "retryable, but cancelled", true), IsOk());
  ASSERT_OK_AND_ASSIGN(job, store->GetJob(id));
  EXPECT_EQ(job.state, JobState::kCancelled);
  EXPECT_TRUE(job.finished());
  EXPECT_EQ(job.succeeded, 1);
  EXPECT_EQ(job.cancelled, 3);
  ASSERT_OK_AND_ASSIGN(std::vector<ItemRecord> items, store->ListItems(id, 0, 10));
  EXPECT_EQ(items[0].result, "kept");
  EXPECT_EQ(items[1].state, ItemState::kCancelled);
  EXPECT_THAT(store->CancelJob(id), StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(store->CancelJob("job-000077"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("job-000077")));
  // With nothing running, a cancelled job finishes at once.
  ASSERT_OK_AND_ASSIGN(std::string idle, store->CreateJob(Spec("z"), Requests(2)));
  EXPECT_THAT(store->CancelJob(idle), IsOk());
  ASSERT_OK_AND_ASSIGN(job, store->GetJob(idle));
  EXPECT_TRUE(job.finished());
  EXPECT_EQ(job.state, JobState::kCancelled);
}

// ---- Concurrency: threads racing on one store ----

TYPED_TEST(BatchStoreContractTest, ThreadsNeverCompleteAnItemTwice) {
  ASSERT_OK_AND_ASSIGN(auto store, this->Open());
  constexpr int kItems = 120, kThreads = 4;
  ASSERT_OK_AND_ASSIGN(std::string id, store->CreateJob(Spec("t", 5), Requests(kItems)));
  std::vector<std::atomic<int>> completions(kItems);
  std::atomic<int> unexpected{0};
  std::mutex claims_mu;
  std::vector<ClaimedItem> all_claims;  // every claim ever made, for other threads to steal

  auto worker = [&](int seed) {
    std::mt19937 rng(seed);
    for (;;) {
      auto claimed = store->ClaimItems(3);
      if (!claimed.ok()) {
        ++unexpected;
        return;
      }
      if (claimed->empty()) {
        auto job = store->GetJob(id);
        if (!job.ok()) ++unexpected;
        if (!job.ok() || job->finished()) return;
        std::this_thread::yield();  // others still hold running items
        continue;
      }
      {
        std::lock_guard<std::mutex> lock(claims_mu);
        all_claims.insert(all_claims.end(), claimed->begin(), claimed->end());
      }
      for (const ClaimedItem& c : *claimed) {
        // Race another thread's claim (current or stale) before finishing our own.
        ClaimedItem theirs;
        {
          std::lock_guard<std::mutex> lock(claims_mu);
          theirs = all_claims[rng() % all_claims.size()];
        }
        for (const ClaimedItem& target : {theirs, c}) {
          absl::Status s;
          const bool fail = (target.index + target.attempt) % 4 == 0 && target.attempt < 3;
          s = fail ? store->FailItem(id, target.index, target.attempt, "flaky", true)
                   : store->CompleteItem(id, target.index, target.attempt, "done");
          if (s.ok() && !fail) ++completions[target.index];
          if (!s.ok() && s.code() != absl::StatusCode::kFailedPrecondition) ++unexpected;
        }
      }
    }
  };
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) threads.emplace_back(worker, 100 + t);
  for (std::thread& t : threads) t.join();

  EXPECT_EQ(unexpected.load(), 0);
  for (int i = 0; i < kItems; ++i) EXPECT_EQ(completions[i].load(), 1) << "item " << i;
  ASSERT_OK_AND_ASSIGN(JobInfo job, store->GetJob(id));
  EXPECT_EQ(job.state, JobState::kSucceeded);
  EXPECT_EQ(job.succeeded, kItems);
}

TYPED_TEST(BatchStoreContractTest, ExportsResultsAsJsonlAtomically) {
  const std::string dir = MakeTempDir("contract_export");
  ASSERT_OK_AND_ASSIGN(auto store, this->Open());
  ASSERT_OK_AND_ASSIGN(std::string id, store->CreateJob(Spec("e", 1), Requests(4)));
  ASSERT_OK_AND_ASSIGN(std::vector<ClaimedItem> c, store->ClaimItems(3));
  const std::string out = dir + "/results.jsonl";
  EXPECT_THAT(store->ExportResultsJsonl(id, out),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("running")));
  EXPECT_FALSE(std::filesystem::exists(out));
  ASSERT_THAT(store->CompleteItem(id, 0, 1, R"({"text":"a"})"), IsOk());
  ASSERT_THAT(store->CompleteItem(id, 1, 1, "{\n  \"text\": \"b\"\n}"), IsOk());
  ASSERT_THAT(store->FailItem(id, 2, 1, "bad \"quote\"\nand \xff byte", true), IsOk());
  ASSERT_THAT(store->CancelJob(id), IsOk());
  WriteFile(out, "old contents\n");
  ASSERT_THAT(store->ExportResultsJsonl(id, out), IsOk());

  const std::vector<std::string> lines = ReadLines(out);
  EXPECT_THAT(lines, ElementsAre(R"({"text":"a"})", R"({   "text": "b" })",
                                 "{\"index\":2,\"state\":\"failed\",\"error\":\"bad "
                                 "\\\"quote\\\"\\nand \xEF\xBF\xBD byte\"}",
                                 R"({"index":3,"state":"cancelled","error":""})"));
  for (const std::string& line : lines) {
    EXPECT_TRUE(nlohmann::json::accept(line)) << line;
  }
  ASSERT_THAT(lines, SizeIs(4));
  EXPECT_EQ(nlohmann::json::parse(lines[1])["text"], "b");
  // Only the export is left in its directory: no temp file is left behind.
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    EXPECT_THAT(entry.path().filename().string(), ::testing::Not(HasSubstr(".tmp")));
  }
  EXPECT_THAT(store->ExportResultsJsonl(id, dir + "/missing/dir/out.jsonl"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("missing/dir")));
  EXPECT_THAT(store->ExportResultsJsonl("job-000404", out), StatusIs(absl::StatusCode::kNotFound));
}

TYPED_TEST(BatchStoreContractTest, ReopenKeepsEverything) {
  std::vector<JobInfo> before;
  std::vector<ItemRecord> items_before;
  {
    ASSERT_OK_AND_ASSIGN(auto store, this->Open());
    ASSERT_OK_AND_ASSIGN(std::string a, store->CreateJob(Spec("a", 2), Requests(3)));
    ASSERT_OK_AND_ASSIGN(std::string b, store->CreateJob(Spec("b"), Requests(2)));
    ASSERT_OK_AND_ASSIGN(std::vector<ClaimedItem> c, store->ClaimItems(4));
    ASSERT_THAT(store->CompleteItem(a, 0, 1, "r0"), IsOk());
    ASSERT_THAT(store->FailItem(a, 1, 1, "e1", true), IsOk());
    ASSERT_THAT(store->FailItem(a, 2, 1, "e2", false), IsOk());
    ASSERT_OK_AND_ASSIGN(before, store->ListJobs(10));
    ASSERT_OK_AND_ASSIGN(items_before, store->ListItems(a, 0, 10));
    // b/0 is still running when the store closes (PostgreSQL: closing unregisters the owner).
  }
  ASSERT_OK_AND_ASSIGN(auto store, this->Open());
  EXPECT_EQ(store->recovered_items(), 1);
  ASSERT_OK_AND_ASSIGN(std::vector<JobInfo> after, store->ListJobs(10));
  ASSERT_THAT(after, SizeIs(2));
  for (size_t i = 0; i < after.size(); ++i) {
    EXPECT_EQ(after[i].id, before[i].id);
    EXPECT_EQ(after[i].spec.name, before[i].spec.name);
    EXPECT_EQ(after[i].spec.options, before[i].spec.options);
    EXPECT_EQ(after[i].spec.max_attempts, before[i].spec.max_attempts);
    EXPECT_EQ(after[i].state, before[i].state);
    EXPECT_EQ(after[i].created_unix_ms, before[i].created_unix_ms);
    EXPECT_EQ(after[i].succeeded, before[i].succeeded);
    EXPECT_EQ(after[i].failed, before[i].failed);
  }
  EXPECT_EQ(after[0].running, 0);  // b/0 went back to pending, uncounted
  EXPECT_EQ(after[0].pending, 2);
  ASSERT_OK_AND_ASSIGN(std::vector<ItemRecord> items, store->ListItems("job-000001", 0, 10));
  ASSERT_THAT(items, SizeIs(items_before.size()));
  for (size_t i = 0; i < items.size(); ++i) {
    EXPECT_EQ(items[i].state, items_before[i].state);
    EXPECT_EQ(items[i].attempts, items_before[i].attempts);
    EXPECT_EQ(items[i].result, items_before[i].result);
    EXPECT_EQ(items[i].error, items_before[i].error);
  }
  ASSERT_OK_AND_ASSIGN(std::vector<ItemRecord> b_items, store->ListItems("job-000002", 0, 1));
  EXPECT_EQ(b_items[0].state, ItemState::kPending);
  EXPECT_EQ(b_items[0].attempts, 0);
  ASSERT_OK_AND_ASSIGN(std::string next, store->CreateJob(Spec("c"), Requests(1)));
  EXPECT_EQ(next, "job-000003");  // ids keep counting across restarts
}

TYPED_TEST(BatchStoreContractTest, JobsBelongToTheirTenant) {
  ASSERT_OK_AND_ASSIGN(auto store, this->Open());
  JobSpec alice = Spec("a1");
  alice.tenant = "alice";
  JobSpec bob = Spec("b1");
  bob.tenant = "bob";
  ASSERT_OK_AND_ASSIGN(std::string a1, store->CreateJob(alice, Requests(1)));
  ASSERT_OK_AND_ASSIGN(std::string b1, store->CreateJob(bob, Requests(1)));
  ASSERT_OK_AND_ASSIGN(std::string a2, store->CreateJob(alice, Requests(2)));
  ASSERT_OK_AND_ASSIGN(JobInfo job, store->GetJob(b1));
  EXPECT_EQ(job.spec.tenant, "bob");
  ASSERT_OK_AND_ASSIGN(std::vector<JobInfo> jobs, store->ListTenantJobs(10, "alice"));
  ASSERT_THAT(jobs, SizeIs(2));
  EXPECT_EQ(jobs[0].id, a2);
  EXPECT_EQ(jobs[1].id, a1);
  EXPECT_EQ(jobs[0].total, 2);
  ASSERT_OK_AND_ASSIGN(jobs, store->ListTenantJobs(1, "alice"));
  EXPECT_THAT(jobs, SizeIs(1));
  ASSERT_OK_AND_ASSIGN(jobs, store->ListTenantJobs(10, "carol"));
  EXPECT_THAT(jobs, SizeIs(0));
  ASSERT_OK_AND_ASSIGN(jobs, store->ListJobs(10));  // every tenant's
  EXPECT_THAT(jobs, SizeIs(3));
}

// ---- Property test: a seeded random walk against an in-memory model ----

struct ModelItem {
  ItemState state = ItemState::kPending;
  int attempts = 0;
  std::string request, result, error;
};

struct ModelJob {
  std::string id;
  JobSpec spec;
  JobState state = JobState::kQueued;
  bool finished = false;
  std::vector<ModelItem> items;

  void FinishIfDone() {
    if (finished) return;
    bool failed = false;
    for (const ModelItem& it : items) {
      if (it.state == ItemState::kPending || it.state == ItemState::kRunning) return;
      failed |= it.state == ItemState::kFailed;
    }
    finished = true;
    if (state != JobState::kCancelled) state = failed ? JobState::kFailed : JobState::kSucceeded;
  }
  ItemState Requeued() const {
    return state == JobState::kCancelled ? ItemState::kCancelled : ItemState::kPending;
  }
};

void ExpectJobMatchesModel(const JobInfo& job, const ModelJob& m) {
  EXPECT_EQ(job.id, m.id);
  EXPECT_EQ(job.state, m.state) << m.id;
  EXPECT_EQ(job.finished(), m.finished) << m.id;
  int counts[5] = {};
  for (const ModelItem& it : m.items) ++counts[static_cast<int>(it.state)];
  EXPECT_EQ(job.pending, counts[0]) << m.id;
  EXPECT_EQ(job.running, counts[1]) << m.id;
  EXPECT_EQ(job.succeeded, counts[2]) << m.id;
  EXPECT_EQ(job.failed, counts[3]) << m.id;
  EXPECT_EQ(job.cancelled, counts[4]) << m.id;
}

// Every job, as GetJob and as ListJobs (newest first) see it, and every item.
void ExpectMatchesModel(BatchStore& store, const std::vector<ModelJob>& model) {
  ASSERT_OK_AND_ASSIGN(std::vector<JobInfo> jobs, store.ListJobs(1000));
  ASSERT_EQ(jobs.size(), model.size());
  for (size_t j = 0; j < model.size(); ++j) {
    const ModelJob& m = model[j];
    ExpectJobMatchesModel(jobs[model.size() - 1 - j], m);
    ASSERT_OK_AND_ASSIGN(JobInfo job, store.GetJob(m.id));
    ExpectJobMatchesModel(job, m);
    ASSERT_OK_AND_ASSIGN(std::vector<ItemRecord> items, store.ListItems(m.id, 0, 1000));
    ASSERT_EQ(items.size(), m.items.size());
    for (size_t i = 0; i < items.size(); ++i) {
      EXPECT_EQ(items[i].state, m.items[i].state) << m.id << "/" << i;
      EXPECT_EQ(items[i].attempts, m.items[i].attempts) << m.id << "/" << i;
      EXPECT_EQ(items[i].request, m.items[i].request) << m.id << "/" << i;
      EXPECT_EQ(items[i].result, m.items[i].result) << m.id << "/" << i;
      EXPECT_EQ(items[i].error, m.items[i].error) << m.id << "/" << i;
    }
  }
}

// `open(location)` opens the store at a fresh location, and again on each simulated restart.
template <typename OpenFn>
void RunRandomWalk(const std::string& location, OpenFn open, uint32_t seed, int steps) {
  std::mt19937 rng(seed);
  auto pick = [&](int n) { return static_cast<int>(rng() % static_cast<uint32_t>(n)); };
  ASSERT_OK_AND_ASSIGN(auto store, open(location));
  std::vector<ModelJob> model;
  std::vector<ClaimedItem> claims;  // every claim ever made; most become stale
  auto job_of = [&](const std::string& id) -> ModelJob& {
    return model[std::stoi(id.substr(4)) - 1];
  };

  for (int step = 0; step < steps; ++step) {
    SCOPED_TRACE(::testing::Message() << "seed " << seed << " step " << step);
    const int op = pick(100);
    if (op < 10 || model.empty()) {  // create
      ModelJob m;
      m.spec = Spec("job" + std::to_string(model.size()), 1 + pick(3));
      std::vector<std::string> requests;
      for (int i = 0, n = 1 + pick(4); i < n; ++i) {
        requests.push_back(std::string("r\0", 2) + std::to_string(pick(1000)));
        m.items.push_back(ModelItem{ItemState::kPending, 0, requests.back(), "", ""});
      }
      ASSERT_OK_AND_ASSIGN(m.id, store->CreateJob(m.spec, requests));
      model.push_back(std::move(m));
    } else if (op < 35) {  // claim
      const int n = pick(4);
      ASSERT_OK_AND_ASSIGN(std::vector<ClaimedItem> got, store->ClaimItems(n));
      std::vector<ClaimedItem> want;
      for (ModelJob& m : model) {
        for (size_t i = 0; i < m.items.size() && static_cast<int>(want.size()) < n; ++i) {
          ModelItem& it = m.items[i];
          if (it.state != ItemState::kPending) continue;
          it.state = ItemState::kRunning;
          ++it.attempts;
          if (m.state == JobState::kQueued) m.state = JobState::kRunning;
          want.push_back(
              ClaimedItem{m.id, static_cast<int>(i), it.attempts, it.request, m.spec.options});
        }
      }
      ASSERT_EQ(got.size(), want.size());
      for (size_t i = 0; i < got.size(); ++i) {
        EXPECT_EQ(got[i].job_id, want[i].job_id);
        EXPECT_EQ(got[i].index, want[i].index);
        EXPECT_EQ(got[i].attempt, want[i].attempt);
        EXPECT_EQ(got[i].request, want[i].request);
        EXPECT_EQ(got[i].options, want[i].options);
      }
      claims.insert(claims.end(), got.begin(), got.end());
    } else if (op < 85 && !claims.empty()) {  // complete / fail / release a claim
      // Mostly recent claims (likely current), sometimes any (likely stale).
      const size_t k = pick(3) == 0 ? pick(static_cast<int>(claims.size()))
                                    : claims.size() - 1 - pick(std::min<int>(4, claims.size()));
      const ClaimedItem c = claims[k];
      ModelJob& m = job_of(c.job_id);
      ModelItem& it = m.items[c.index];
      const bool current = it.state == ItemState::kRunning && it.attempts == c.attempt;
      absl::Status s;
      if (op < 60) {
        const std::string result = "result-" + std::to_string(step);
        s = store->CompleteItem(c.job_id, c.index, c.attempt, result);
        if (current) {
          it.state = ItemState::kSucceeded;
          it.result = result;
        }
      } else if (op < 75) {
        const bool retryable = pick(4) != 0;
        const std::string error = "error-" + std::to_string(step);
        s = store->FailItem(c.job_id, c.index, c.attempt, error, retryable);
        if (current) {
          it.error = error;
          it.state =
              retryable && it.attempts < m.spec.max_attempts ? m.Requeued() : ItemState::kFailed;
        }
      } else {
        s = store->ReleaseItem(c.job_id, c.index, c.attempt);
        if (current) {
          --it.attempts;
          it.state = m.Requeued();
        }
      }
      if (current) {
        EXPECT_THAT(s, IsOk());
        m.FinishIfDone();
      } else {
        EXPECT_THAT(s, StatusIs(absl::StatusCode::kFailedPrecondition));
      }
    } else if (op < 92) {  // cancel
      ModelJob& m = model[pick(static_cast<int>(model.size()))];
      const absl::Status s = store->CancelJob(m.id);
      if (m.finished) {
        EXPECT_THAT(s, StatusIs(absl::StatusCode::kFailedPrecondition));
      } else {
        EXPECT_THAT(s, IsOk());
        for (ModelItem& it : m.items) {
          if (it.state == ItemState::kPending) it.state = ItemState::kCancelled;
        }
        m.state = JobState::kCancelled;
        m.FinishIfDone();
      }
    } else {  // the owner restarts: its running items are recovered, uncounted
      store.reset();
      ASSERT_OK_AND_ASSIGN(store, open(location));
      int running = 0;
      for (ModelJob& m : model) {
        for (ModelItem& it : m.items) {
          if (it.state != ItemState::kRunning) continue;
          ++running;
          --it.attempts;
          it.state = m.Requeued();
        }
        m.FinishIfDone();
      }
      EXPECT_EQ(store->recovered_items(), running);
    }
    ExpectMatchesModel(*store, model);
    if (::testing::Test::HasFailure()) return;  // the first divergence is enough
  }
}

// Each seed runs on a fresh location. The stores differ only in how long the walk runs (a
// PostgreSQL round trip costs more): TypeParam::kWalkSeeds seeds of kWalkSteps steps.
TYPED_TEST(BatchStoreContractTest, RandomOperationsMatchTheModel) {
  for (uint32_t seed = 1; seed <= TypeParam::kWalkSeeds; ++seed) {
    ASSERT_OK_AND_ASSIGN(std::string location, this->NewLocation("model_" + std::to_string(seed)));
    RunRandomWalk(location, &TestFixture::OpenAt, seed, TypeParam::kWalkSteps);
    if (this->HasFailure()) break;
  }
}

}  // namespace
}  // namespace dapq::coordinator
