// File: coordinator/batch_store_test.cc
// What only the SQLite BatchStore has, on real SQLite files: one owner per file (the lock), a
// version 1 store migrated, files that are not batch stores (garbage, foreign, newer, missing,
// unwritable), and recovery on Open after a real SIGKILL of a forked owner. The contract the
// SQLite and PostgreSQL stores share is in batch_store_contract_test.cc.
#include "coordinator/batch_store.h"

#include <signal.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/util/status_matchers.h"
#include "tests/util/test_paths.h"

namespace dapq::coordinator {
namespace {
using ::dapq::testing::IsOk;
using ::dapq::testing::MakeTempDir;
using ::dapq::testing::StatusIs;
using ::testing::HasSubstr;
using ::testing::SizeIs;

std::string DbPath(const std::string& test) { return MakeTempDir(test) + "/batch.db"; }

std::vector<std::string> Requests(int n, const std::string& prefix = "req-") {
  std::vector<std::string> out;
  for (int i = 0; i < n; ++i) out.push_back(prefix + std::to_string(i));
  return out;
}

JobSpec Spec(const std::string& name, int max_attempts = 3) {
  return JobSpec{name, "opts:" + name, "", max_attempts, ""};
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

TEST(BatchStoreTest, OneOwnerAtATime) {
  const std::string path = DbPath("one_owner");
  ASSERT_OK_AND_ASSIGN(auto store, BatchStore::Open(path));
  EXPECT_THAT(BatchStore::Open(path),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr(path)));
  store.reset();
  EXPECT_THAT(BatchStore::Open(path), IsOk());
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

}  // namespace
}  // namespace dapq::coordinator
