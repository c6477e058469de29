// File: coordinator/batch_store_test.cc
// BatchStore on real SQLite files: jobs and items, claim order, completion fenced by attempt,
// retries, cancel, JSONL export, reopen, recovery after a real SIGKILL of a forked owner,
// concurrent claimers, a seeded random walk checked against an in-memory model, and files that
// are not batch stores.
#include "coordinator/batch_store.h"

#include <signal.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/util/status_matchers.h"
#include "tests/util/test_paths.h"

namespace dapq::coordinator {
namespace {
using ::dapq::testing::IsOk;
using ::dapq::testing::MakeTempDir;
using ::dapq::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::SizeIs;

std::string DbPath(const std::string& test) { return MakeTempDir(test) + "/batch.db"; }

std::vector<std::string> Requests(int n, const std::string& prefix = "req-") {
  std::vector<std::string> out;
  for (int i = 0; i < n; ++i) out.push_back(prefix + std::to_string(i));
  return out;
}

JobSpec Spec(const std::string& name, int max_attempts = 3) {
  return JobSpec{name, "opts:" + name, "", max_attempts};
}

std::vector<std::string> ReadLines(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

// Runs SQL on the file with SQLite directly (to fake other applications and newer schemas).
void RawSql(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  EXPECT_EQ(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr), SQLITE_OK)
      << sqlite3_errmsg(db);
  sqlite3_close(db);
}

// The first column of the first row of `sql`, as text.
std::string RawQuery(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  std::string out;
  if (sqlite3_open(path.c_str(), &db) == SQLITE_OK) {
    sqlite3_stmt* stmt = nullptr;
    if (sqlite3_prepare_v2(db, sql.c_str(), -1, &stmt, nullptr) == SQLITE_OK &&
        sqlite3_step(stmt) == SQLITE_ROW) {
      out = reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0));
    }
    sqlite3_finalize(stmt);
  }
  sqlite3_close(db);
  return out;
}

TEST(BatchStoreTest, CreateGetAndList) {
  ASSERT_OK_AND_ASSIGN(auto store, BatchStore::Open(DbPath("create_get_list")));
  EXPECT_EQ(store->recovered_items(), 0);
  JobSpec spec{"first", std::string("bin\0opts", 8), "/out/first.jsonl", 2};
  std::vector<std::string> requests = {std::string("a\0b", 3), "", "c"};
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
  ASSERT_OK_AND_ASSIGN(jobs, store->ListJobs(1));
  ASSERT_THAT(jobs, SizeIs(1));
  EXPECT_EQ(jobs[0].id, id2);

  for (const char* bad : {"job-000099", "nonsense", "job-1", "job--00001", ""}) {
    EXPECT_THAT(store->GetJob(bad), StatusIs(absl::StatusCode::kNotFound, HasSubstr(bad)));
  }
  EXPECT_THAT(store->ListItems("job-000099", 0, 1), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(store->CreateJob(Spec("empty"), {}), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(store->CreateJob(Spec("zero", 0), Requests(1)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("max_attempts")));
  EXPECT_THAT(store->ListJobs(-1), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(store->ListItems(id1, -1, 1), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(store->ClaimItems(-1), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_EQ(JobStateName(JobState::kCancelled), "cancelled");
  EXPECT_EQ(ItemStateName(ItemState::kPending), "pending");
}

TEST(BatchStoreTest, ClaimsOldestJobFirstThenByIndex) {
  ASSERT_OK_AND_ASSIGN(auto store, BatchStore::Open(DbPath("claim_order")));
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
  for (const ClaimedItem& c : rest) got.push_back(c.job_id + "/" + c.request);
  EXPECT_THAT(got, ElementsAre(a + "/a2", b + "/b0", b + "/b1"));
  ASSERT_OK_AND_ASSIGN(jb, store->GetJob(b));
  EXPECT_EQ(jb.state, JobState::kRunning);
  ASSERT_OK_AND_ASSIGN(none, store->ClaimItems(5));
  EXPECT_TRUE(none.empty());
}

TEST(BatchStoreTest, CompletingEveryItemFinishesTheJob) {
  ASSERT_OK_AND_ASSIGN(auto store, BatchStore::Open(DbPath("complete")));
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

TEST(BatchStoreTest, RetriesUpToMaxAttemptsThenFails) {
  ASSERT_OK_AND_ASSIGN(auto store, BatchStore::Open(DbPath("retries")));
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

TEST(BatchStoreTest, StaleAttemptCannotCompleteFailOrRelease) {
  ASSERT_OK_AND_ASSIGN(auto store, BatchStore::Open(DbPath("stale")));
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

TEST(BatchStoreTest, CancelStopsPendingItemsAndLetsRunningOnesFinish) {
  ASSERT_OK_AND_ASSIGN(auto store, BatchStore::Open(DbPath("cancel")));
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

TEST(BatchStoreTest, ExportsResultsAsJsonlAtomically) {
  const std::string dir = MakeTempDir("export");
  ASSERT_OK_AND_ASSIGN(auto store, BatchStore::Open(dir + "/batch.db"));
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
  ASSERT_THAT(lines, SizeIs(4));
  EXPECT_EQ(lines[0], R"({"text":"a"})");
  EXPECT_EQ(lines[1], R"({   "text": "b" })");
  EXPECT_EQ(lines[2],
            "{\"index\":2,\"state\":\"failed\",\"error\":\"bad \\\"quote\\\"\\nand "
            "\xEF\xBF\xBD byte\"}");
  EXPECT_EQ(lines[3], R"({"index":3,"state":"cancelled","error":""})");
  for (const std::string& line : lines) {
    EXPECT_TRUE(nlohmann::json::accept(line)) << line;
  }
  EXPECT_EQ(nlohmann::json::parse(lines[1])["text"], "b");
  // Only the store, its lock and WAL files and the export: no temp file is left behind.
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    EXPECT_THAT(entry.path().filename().string(), ::testing::Not(HasSubstr(".tmp")));
  }
  EXPECT_THAT(store->ExportResultsJsonl(id, dir + "/missing/dir/out.jsonl"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("missing/dir")));
  EXPECT_THAT(store->ExportResultsJsonl("job-000404", out), StatusIs(absl::StatusCode::kNotFound));
}

TEST(BatchStoreTest, ReopenKeepsEverything) {
  const std::string path = DbPath("reopen");
  std::vector<JobInfo> before;
  std::vector<ItemRecord> items_before;
  {
    ASSERT_OK_AND_ASSIGN(auto store, BatchStore::Open(path));
    ASSERT_OK_AND_ASSIGN(std::string a, store->CreateJob(Spec("a", 2), Requests(3)));
    ASSERT_OK_AND_ASSIGN(std::string b, store->CreateJob(Spec("b"), Requests(2)));
    ASSERT_OK_AND_ASSIGN(std::vector<ClaimedItem> c, store->ClaimItems(4));
    ASSERT_THAT(store->CompleteItem(a, 0, 1, "r0"), IsOk());
    ASSERT_THAT(store->FailItem(a, 1, 1, "e1", true), IsOk());
    ASSERT_THAT(store->FailItem(a, 2, 1, "e2", false), IsOk());
    ASSERT_OK_AND_ASSIGN(before, store->ListJobs(10));
    ASSERT_OK_AND_ASSIGN(items_before, store->ListItems(a, 0, 10));
    // b/0 is still running when the store closes.
  }
  ASSERT_OK_AND_ASSIGN(auto store, BatchStore::Open(path));
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

TEST(BatchStoreTest, OneOwnerAtATime) {
  const std::string path = DbPath("one_owner");
  ASSERT_OK_AND_ASSIGN(auto store, BatchStore::Open(path));
  EXPECT_THAT(BatchStore::Open(path),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr(path)));
  store.reset();
  EXPECT_THAT(BatchStore::Open(path), IsOk());
}

TEST(BatchStoreTest, JobsBelongToTheirTenant) {
  ASSERT_OK_AND_ASSIGN(auto store, BatchStore::Open(DbPath("tenants")));
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
  ASSERT_OK_AND_ASSIGN(jobs, store->ListTenantJobs(10, "carol"));
  EXPECT_THAT(jobs, SizeIs(0));
  ASSERT_OK_AND_ASSIGN(jobs, store->ListJobs(10));  // every tenant's
  EXPECT_THAT(jobs, SizeIs(3));
}

TEST(BatchStoreTest, AVersionOneStoreMigratesKeepingItsJobsAnonymous) {
  const std::string path = DbPath("migrate_v1");
  {  // a store as schema version 1 wrote it: no tenant column
    ASSERT_OK_AND_ASSIGN(auto store, BatchStore::Open(path));
    ASSERT_OK_AND_ASSIGN(std::string id, store->CreateJob(Spec("old"), Requests(1)));
  }
  RawSql(path,
         "DROP INDEX jobs_by_tenant; ALTER TABLE jobs DROP COLUMN tenant; "
         "PRAGMA user_version = 1");
  EXPECT_EQ(RawQuery(path, "PRAGMA user_version"), "1");
  ASSERT_OK_AND_ASSIGN(auto store, BatchStore::Open(path));
  EXPECT_EQ(RawQuery(path, "PRAGMA user_version"), "2");
  ASSERT_OK_AND_ASSIGN(JobInfo job, store->GetJob("job-000001"));
  EXPECT_EQ(job.spec.name, "old");
  EXPECT_EQ(job.spec.tenant, "");
}

TEST(BatchStoreTest, FilesThatAreNotBatchStoresGiveClearErrors) {
  const std::string dir = MakeTempDir("not_a_store");
  std::mt19937_64 rng(7);
  std::string garbage(4096, '\0');
  for (char& ch : garbage) ch = static_cast<char>(rng());
  for (const std::string& bytes : {garbage, std::string("hello, I am a text file\n")}) {
    const std::string path = dir + "/garbage.db";
    WriteFile(path, bytes);
    auto store = BatchStore::Open(path);
    EXPECT_THAT(store, StatusIs(absl::StatusCode::kDataLoss, HasSubstr(path)));
    EXPECT_THAT(store, StatusIs(absl::StatusCode::kDataLoss, HasSubstr("not a database")));
    EXPECT_EQ(ReadFile(path), bytes);  // left untouched
  }

  const std::string foreign = dir + "/foreign.db";
  RawSql(foreign, "CREATE TABLE notes (body TEXT)");
  EXPECT_THAT(BatchStore::Open(foreign),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("not a DapQ batch store")));
  EXPECT_EQ(RawQuery(foreign, "PRAGMA journal_mode"), "delete");  // not switched to WAL

  const std::string newer = dir + "/newer.db";
  ASSERT_THAT(BatchStore::Open(newer), IsOk());
  RawSql(newer, "PRAGMA user_version = 99");
  EXPECT_THAT(BatchStore::Open(newer),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("version 99")));

  const std::string missing = dir + "/no/such/dir/batch.db";
  EXPECT_THAT(BatchStore::Open(missing), StatusIs(absl::StatusCode::kNotFound, HasSubstr(missing)));
  EXPECT_THAT(BatchStore::Open(dir), ::testing::Not(IsOk()));  // a directory
  if (geteuid() != 0) {                                        // root writes anywhere
    const std::string locked_dir = dir + "/read_only";
    std::filesystem::create_directory(locked_dir);
    std::filesystem::permissions(
        locked_dir, std::filesystem::perms::owner_read | std::filesystem::perms::owner_exec);
    EXPECT_THAT(BatchStore::Open(locked_dir + "/batch.db"),
                StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr(locked_dir)));
  }
}

// ---- Crash safety: a forked owner is SIGKILLed at a point the parent picks. ----

// One byte over a pipe; -1 on EOF or error.
int ReadByte(int fd) {
  char c = 0;
  for (;;) {
    const ssize_t n = ::read(fd, &c, 1);
    if (n == 1) return static_cast<unsigned char>(c);
    if (n < 0 && errno == EINTR) continue;
    return -1;
  }
}

bool WriteByte(int fd, char c) {
  for (;;) {
    const ssize_t n = ::write(fd, &c, 1);
    if (n == 1) return true;
    if (n < 0 && errno == EINTR) continue;
    return false;
  }
}

struct Child {
  pid_t pid = -1;
  int from_child = -1;  // the child writes 'k' after each committed step
  int to_child = -1;    // the parent writes 'g' to let it go on
};

// Forks `body(report_fd, go_fd)` in a child that never returns; body's result is its exit code.
template <typename Body>
Child ForkChild(Body body) {
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
  ASSERT_EQ(::kill(child.pid, SIGKILL), 0);
  int status = 0;
  ASSERT_EQ(::waitpid(child.pid, &status, 0), child.pid);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "status " << status;
  ::close(child.from_child);
  ::close(child.to_child);
}

TEST(BatchStoreCrashTest, KillAtAChosenStepKeepsCompletedItemsAndRecoversRunningOnes) {
  const std::string path = DbPath("crash_step");
  constexpr int kItems = 10, kClaimed = 6, kCompletedBeforeKill = 3;
  // Step 0: job created and 6 items claimed. Step i: claimed item i-1 completed. After each
  // step the child reports and waits for the parent's go.
  const Child child = ForkChild([&](int report, int go) {
    auto store = BatchStore::Open(path);
    if (!store.ok()) return 2;
    auto id = (*store)->CreateJob(Spec("crash"), Requests(kItems));
    if (!id.ok()) return 3;
    auto claimed = (*store)->ClaimItems(kClaimed);
    if (!claimed.ok() || claimed->size() != kClaimed) return 4;
    for (int step = 0; step <= kClaimed; ++step) {
      if (step > 0) {
        const ClaimedItem& c = (*claimed)[step - 1];
        if (!(*store)->CompleteItem(c.job_id, c.index, c.attempt, "child-" + c.request).ok()) {
          return 5;
        }
      }
      if (!WriteByte(report, 'k') || ReadByte(go) != 'g') return 6;
    }
    return 0;
  });
  ASSERT_GT(child.pid, 0);
  for (int step = 0; step <= kCompletedBeforeKill; ++step) {
    ASSERT_EQ(ReadByte(child.from_child), 'k') << "child failed before step " << step;
    if (step < kCompletedBeforeKill) {
      ASSERT_TRUE(WriteByte(child.to_child, 'g'));
    }
  }
  KillAndReap(child);  // the child is blocked waiting for 'g' after step 3

  ASSERT_OK_AND_ASSIGN(auto store, BatchStore::Open(path));
  EXPECT_EQ(store->recovered_items(), kClaimed - kCompletedBeforeKill);
  const std::string id = "job-000001";
  ASSERT_OK_AND_ASSIGN(JobInfo job, store->GetJob(id));
  EXPECT_EQ(job.succeeded, kCompletedBeforeKill);
  EXPECT_EQ(job.running, 0);
  EXPECT_EQ(job.pending, kItems - kCompletedBeforeKill);
  ASSERT_OK_AND_ASSIGN(std::vector<ItemRecord> items, store->ListItems(id, 0, kItems));
  for (const ItemRecord& item : items) {
    const bool done = item.index < kCompletedBeforeKill;
    EXPECT_EQ(item.state, done ? ItemState::kSucceeded : ItemState::kPending) << item.index;
    EXPECT_EQ(item.attempts, done ? 1 : 0) << item.index;  // the killed attempt is not counted
  }
  // The dead owner's claim on item 3 is void.
  EXPECT_THAT(store->CompleteItem(id, 3, 1, "ghost"),
              StatusIs(absl::StatusCode::kFailedPrecondition));

  // Drain: every item completes exactly once.
  std::map<int, int> completions;
  ASSERT_OK_AND_ASSIGN(std::vector<ClaimedItem> rest, store->ClaimItems(kItems));
  ASSERT_THAT(rest, SizeIs(kItems - kCompletedBeforeKill));
  for (const ClaimedItem& c : rest) {
    EXPECT_EQ(c.attempt, 1);
    ASSERT_THAT(store->CompleteItem(id, c.index, c.attempt, "parent-" + c.request), IsOk());
  }
  for (int i = 0; i < kItems; ++i) {
    EXPECT_THAT(store->CompleteItem(id, i, 1, "again"),
                StatusIs(absl::StatusCode::kFailedPrecondition));
  }
  ASSERT_OK_AND_ASSIGN(job, store->GetJob(id));
  EXPECT_EQ(job.state, JobState::kSucceeded);
  EXPECT_EQ(job.succeeded, kItems);
  ASSERT_OK_AND_ASSIGN(items, store->ListItems(id, 0, kItems));
  for (const ItemRecord& item : items) {
    const std::string who = item.index < kCompletedBeforeKill ? "child-" : "parent-";
    EXPECT_EQ(item.result, who + item.request);
  }
}

TEST(BatchStoreCrashTest, KillWhileCommittingLeavesAConsistentStore) {
  const std::string path = DbPath("crash_busy");
  constexpr int kItems = 300, kKillAfter = 25;
  // The child completes items one by one as fast as it can, reporting each commit, and is
  // killed wherever it happens to be (possibly inside a transaction).
  const Child child = ForkChild([&](int report, int go) {
    auto store = BatchStore::Open(path);
    if (!store.ok()) return 2;
    if (!(*store)->CreateJob(Spec("busy"), Requests(kItems)).ok()) return 3;
    for (;;) {
      auto claimed = (*store)->ClaimItems(1);
      if (!claimed.ok()) return 4;
      if (claimed->empty()) break;
      const ClaimedItem& c = claimed->front();
      if (!(*store)->CompleteItem(c.job_id, c.index, c.attempt, "child-" + c.request).ok()) {
        return 5;
      }
      if (!WriteByte(report, 'k')) return 6;
    }
    ReadByte(go);  // all done: wait to be killed
    return 0;
  });
  ASSERT_GT(child.pid, 0);
  for (int i = 0; i < kKillAfter; ++i) {
    ASSERT_EQ(ReadByte(child.from_child), 'k') << "child failed after " << i << " items";
  }
  KillAndReap(child);

  ASSERT_OK_AND_ASSIGN(auto store, BatchStore::Open(path));
  EXPECT_LE(store->recovered_items(), 1);  // at most the one item it held
  const std::string id = "job-000001";
  ASSERT_OK_AND_ASSIGN(JobInfo job, store->GetJob(id));
  EXPECT_GE(job.succeeded, kKillAfter);
  EXPECT_EQ(job.running, 0);
  EXPECT_EQ(job.succeeded + job.pending, kItems);
  ASSERT_OK_AND_ASSIGN(std::vector<ItemRecord> items, store->ListItems(id, 0, kItems));
  for (const ItemRecord& item : items) {
    // Claimed in index order, one at a time: the succeeded items are a prefix.
    const bool done = item.index < job.succeeded;
    EXPECT_EQ(item.state, done ? ItemState::kSucceeded : ItemState::kPending) << item.index;
    EXPECT_EQ(item.attempts, done ? 1 : 0) << item.index;
    if (done) {
      EXPECT_EQ(item.result, "child-" + item.request);
    }
  }
  for (;;) {
    ASSERT_OK_AND_ASSIGN(std::vector<ClaimedItem> c, store->ClaimItems(64));
    if (c.empty()) break;
    for (const ClaimedItem& item : c) {
      ASSERT_THAT(store->CompleteItem(id, item.index, item.attempt, "parent"), IsOk());
    }
  }
  ASSERT_OK_AND_ASSIGN(job, store->GetJob(id));
  EXPECT_EQ(job.state, JobState::kSucceeded);
  EXPECT_EQ(job.succeeded, kItems);
}

// ---- Concurrency ----

TEST(BatchStoreConcurrencyTest, ThreadsNeverCompleteAnItemTwice) {
  ASSERT_OK_AND_ASSIGN(auto store, BatchStore::Open(DbPath("threads")));
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

void ExpectMatchesModel(BatchStore& store, const std::vector<ModelJob>& model) {
  for (const ModelJob& m : model) {
    ASSERT_OK_AND_ASSIGN(JobInfo job, store.GetJob(m.id));
    EXPECT_EQ(job.state, m.state) << m.id;
    EXPECT_EQ(job.finished(), m.finished) << m.id;
    int counts[5] = {};
    for (const ModelItem& it : m.items) ++counts[static_cast<int>(it.state)];
    EXPECT_EQ(job.pending, counts[0]) << m.id;
    EXPECT_EQ(job.running, counts[1]) << m.id;
    EXPECT_EQ(job.succeeded, counts[2]) << m.id;
    EXPECT_EQ(job.failed, counts[3]) << m.id;
    EXPECT_EQ(job.cancelled, counts[4]) << m.id;
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

void RunRandomWalk(uint32_t seed, int steps) {
  const std::string path = DbPath("model_" + std::to_string(seed));
  std::mt19937 rng(seed);
  auto pick = [&](int n) { return static_cast<int>(rng() % static_cast<uint32_t>(n)); };
  ASSERT_OK_AND_ASSIGN(auto store, BatchStore::Open(path));
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
    } else {  // restart: running items are recovered, uncounted
      store.reset();
      ASSERT_OK_AND_ASSIGN(store, BatchStore::Open(path));
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

TEST(BatchStorePropertyTest, RandomOperationsMatchTheModel) {
  for (uint32_t seed : {1u, 2u, 3u}) {
    RunRandomWalk(seed, 250);
    if (HasFailure()) break;
  }
}

}  // namespace
}  // namespace dapq::coordinator
