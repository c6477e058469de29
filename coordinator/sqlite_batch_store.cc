// File: coordinator/sqlite_batch_store.cc
// The SQLite batch store (see sqlite_batch_store.h).
#include "coordinator/sqlite_batch_store.h"

#include <algorithm>
#include <chrono>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "coordinator/internal/batch_schema.h"
#include "coordinator/internal/posix_files.h"
#include "coordinator/internal/sqlite_db.h"

namespace dapq::coordinator {
namespace {

using internal::SqliteDb;
using internal::Statement;
using internal::Transaction;

// Debian's Abseil has its own string_view type, which StrCat needs.
absl::string_view Sv(std::string_view s) { return absl::string_view(s.data(), s.size()); }

int64_t NowUnixMs() {
  const auto now = std::chrono::system_clock::now().time_since_epoch();
  // Never 0: 0 means "still open".
  return std::max<int64_t>(1, std::chrono::duration_cast<std::chrono::milliseconds>(now).count());
}

template <typename State>
absl::StatusOr<State> ToState(int64_t v, absl::string_view what, const std::string& path) {
  if (v < 0 || v > 4) {
    return absl::DataLossError(absl::StrCat(path, ": invalid ", what, " state ", v));
  }
  return static_cast<State>(v);
}

// Sets the job's final state and finished time once no item is pending or running.
absl::Status FinishJobIfDone(SqliteDb* db, int64_t seq) {
  DAPQ_ASSIGN_OR_RETURN(Statement q, db->Prepare(R"sql(
SELECT state, finished_unix_ms,
       EXISTS (SELECT 1 FROM items WHERE job_seq = ?1 AND state IN (0, 1)),
       EXISTS (SELECT 1 FROM items WHERE job_seq = ?1 AND state = 3)
FROM jobs WHERE seq = ?1)sql"));
  q.BindInt(1, seq);
  DAPQ_ASSIGN_OR_RETURN(bool row, q.Step());
  if (!row) return absl::InternalError(absl::StrCat("job ", FormatJobId(seq), " vanished"));
  const auto state = static_cast<JobState>(q.ColumnInt(0));
  if (q.ColumnInt(1) != 0 || q.ColumnInt(2) != 0) return absl::OkStatus();
  const JobState final_state = state == JobState::kCancelled ? JobState::kCancelled
                               : q.ColumnInt(3) != 0         ? JobState::kFailed
                                                             : JobState::kSucceeded;
  DAPQ_ASSIGN_OR_RETURN(
      Statement u, db->Prepare("UPDATE jobs SET state = ?, finished_unix_ms = ? WHERE seq = ?"));
  u.BindInt(1, static_cast<int>(final_state)).BindInt(2, NowUnixMs()).BindInt(3, seq);
  return u.Run();
}

// Running items (of a process that died) -> pending, or cancelled for cancelled jobs; their
// attempt is uncounted. Returns how many.
absl::StatusOr<int> RecoverRunningItems(SqliteDb* db) {
  DAPQ_ASSIGN_OR_RETURN(Transaction tx, Transaction::Begin(db));
  DAPQ_RETURN_IF_ERROR(db->Exec(R"sql(
UPDATE items SET
  state = CASE WHEN (SELECT state FROM jobs WHERE seq = items.job_seq) = 4 THEN 4 ELSE 0 END,
  attempts = attempts - 1
WHERE state = 1)sql"));
  const int recovered = static_cast<int>(db->Changes());
  // Jobs whose last running items were just cancelled are finished now.
  DAPQ_ASSIGN_OR_RETURN(Statement open_jobs,
                        db->Prepare("SELECT seq FROM jobs WHERE finished_unix_ms = 0"));
  std::vector<int64_t> seqs;
  for (;;) {
    DAPQ_ASSIGN_OR_RETURN(bool row, open_jobs.Step());
    if (!row) break;
    seqs.push_back(open_jobs.ColumnInt(0));
  }
  for (int64_t seq : seqs) DAPQ_RETURN_IF_ERROR(FinishJobIfDone(db, seq));
  DAPQ_RETURN_IF_ERROR(tx.Commit());
  return recovered;
}

}  // namespace

SqliteBatchStore::SqliteBatchStore(std::string path, std::unique_ptr<internal::LockFile> lock,
                                   std::unique_ptr<internal::SqliteDb> db, int recovered)
    : path_(std::move(path)),
      recovered_items_(recovered),
      lock_(std::move(lock)),
      db_(std::move(db)) {}

SqliteBatchStore::~SqliteBatchStore() = default;

absl::StatusOr<std::unique_ptr<BatchStore>> SqliteBatchStore::Open(const std::string& path) {
  if (path.empty()) return absl::InvalidArgumentError("batch store: empty path");
  DAPQ_ASSIGN_OR_RETURN(internal::LockFile lock, internal::LockFile::Acquire(path + ".lock"));
  DAPQ_ASSIGN_OR_RETURN(std::unique_ptr<SqliteDb> db, SqliteDb::Open(path));
  DAPQ_RETURN_IF_ERROR(internal::ConfigureConnection(db.get()));
  DAPQ_RETURN_IF_ERROR(internal::EnsureSchema(db.get()));
  DAPQ_ASSIGN_OR_RETURN(int recovered, RecoverRunningItems(db.get()));
  return std::unique_ptr<BatchStore>(new SqliteBatchStore(
      path, std::make_unique<internal::LockFile>(std::move(lock)), std::move(db), recovered));
}

absl::StatusOr<std::string> SqliteBatchStore::CreateJob(
    const JobSpec& spec, const std::vector<std::string>& item_requests) {
  if (item_requests.empty()) return absl::InvalidArgumentError("CreateJob: a job needs items");
  if (item_requests.size() > static_cast<size_t>(std::numeric_limits<int>::max())) {
    return absl::InvalidArgumentError(
        absl::StrCat("CreateJob: too many items (", item_requests.size(), ")"));
  }
  if (spec.max_attempts < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("CreateJob: max_attempts must be >= 1, got ", spec.max_attempts));
  }
  MutexLock lock(&mu_);
  SqliteDb* db = db_.get();
  DAPQ_ASSIGN_OR_RETURN(Transaction tx, Transaction::Begin(db));
  DAPQ_ASSIGN_OR_RETURN(Statement job, db->Prepare(R"sql(
INSERT INTO jobs (name, options, output_path, max_attempts, state, created_unix_ms, total, tenant)
VALUES (?, ?, ?, ?, 0, ?, ?, ?))sql"));
  job.BindText(1, spec.name)
      .BindBlob(2, spec.options)
      .BindText(3, spec.output_path)
      .BindInt(4, spec.max_attempts)
      .BindInt(5, NowUnixMs())
      .BindInt(6, static_cast<int64_t>(item_requests.size()))
      .BindText(7, spec.tenant);
  DAPQ_RETURN_IF_ERROR(job.Run());
  const int64_t seq = db->LastInsertRowId();
  DAPQ_ASSIGN_OR_RETURN(
      Statement item,
      db->Prepare("INSERT INTO items (job_seq, idx, state, request) VALUES (?, ?, 0, ?)"));
  for (size_t i = 0; i < item_requests.size(); ++i) {
    item.Reset();
    item.BindInt(1, seq).BindInt(2, static_cast<int64_t>(i)).BindBlob(3, item_requests[i]);
    DAPQ_RETURN_IF_ERROR(item.Run());
  }
  DAPQ_RETURN_IF_ERROR(tx.Commit());
  return FormatJobId(seq);
}

absl::StatusOr<JobInfo> SqliteBatchStore::GetJobLocked(int64_t seq) {
  SqliteDb* db = db_.get();
  DAPQ_ASSIGN_OR_RETURN(Statement q, db->Prepare(R"sql(
SELECT name, options, output_path, max_attempts, state, created_unix_ms, finished_unix_ms, total,
       tenant
FROM jobs WHERE seq = ?)sql"));
  q.BindInt(1, seq);
  DAPQ_ASSIGN_OR_RETURN(bool row, q.Step());
  if (!row) return JobNotFoundError(FormatJobId(seq));
  JobInfo info;
  info.id = FormatJobId(seq);
  info.spec.name = q.ColumnBytes(0);
  info.spec.options = q.ColumnBytes(1);
  info.spec.output_path = q.ColumnBytes(2);
  info.spec.max_attempts = static_cast<int>(q.ColumnInt(3));
  DAPQ_ASSIGN_OR_RETURN(info.state, ToState<JobState>(q.ColumnInt(4), "job", path_));
  info.created_unix_ms = q.ColumnInt(5);
  info.finished_unix_ms = q.ColumnInt(6);
  info.total = static_cast<int>(q.ColumnInt(7));
  info.spec.tenant = q.ColumnBytes(8);

  // The IN list makes this a covering range scan of items_by_state per state.
  DAPQ_ASSIGN_OR_RETURN(
      Statement counts,
      db->Prepare("SELECT state, COUNT(*) FROM items WHERE state IN (0, 1, 2, 3, 4) AND "
                  "job_seq = ? GROUP BY state"));
  counts.BindInt(1, seq);
  for (;;) {
    DAPQ_ASSIGN_OR_RETURN(bool more, counts.Step());
    if (!more) break;
    DAPQ_ASSIGN_OR_RETURN(ItemState state, ToState<ItemState>(counts.ColumnInt(0), "item", path_));
    const int n = static_cast<int>(counts.ColumnInt(1));
    switch (state) {
      case ItemState::kPending:
        info.pending = n;
        break;
      case ItemState::kRunning:
        info.running = n;
        break;
      case ItemState::kSucceeded:
        info.succeeded = n;
        break;
      case ItemState::kFailed:
        info.failed = n;
        break;
      case ItemState::kCancelled:
        info.cancelled = n;
        break;
    }
  }
  return info;
}

absl::StatusOr<JobInfo> SqliteBatchStore::GetJob(std::string_view id) {
  DAPQ_ASSIGN_OR_RETURN(int64_t seq, ParseJobId(id));
  MutexLock lock(&mu_);
  return GetJobLocked(seq);
}

absl::StatusOr<std::vector<JobInfo>> SqliteBatchStore::ListJobsWhere(int limit,
                                                                     const std::string* tenant) {
  MutexLock lock(&mu_);
  DAPQ_ASSIGN_OR_RETURN(
      Statement q,
      db_->Prepare(tenant == nullptr
                       ? "SELECT seq FROM jobs ORDER BY seq DESC LIMIT ?"
                       : "SELECT seq FROM jobs WHERE tenant = ? ORDER BY seq DESC LIMIT ?"));
  if (tenant != nullptr) {
    q.BindText(1, *tenant).BindInt(2, limit);
  } else {
    q.BindInt(1, limit);
  }
  std::vector<JobInfo> jobs;
  for (;;) {
    DAPQ_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) break;
    DAPQ_ASSIGN_OR_RETURN(JobInfo info, GetJobLocked(q.ColumnInt(0)));
    jobs.push_back(std::move(info));
  }
  return jobs;
}

absl::Status SqliteBatchStore::CancelJob(std::string_view id) {
  DAPQ_ASSIGN_OR_RETURN(int64_t seq, ParseJobId(id));
  MutexLock lock(&mu_);
  SqliteDb* db = db_.get();
  DAPQ_ASSIGN_OR_RETURN(Transaction tx, Transaction::Begin(db));
  DAPQ_ASSIGN_OR_RETURN(Statement q,
                        db->Prepare("SELECT state, finished_unix_ms FROM jobs WHERE seq = ?"));
  q.BindInt(1, seq);
  DAPQ_ASSIGN_OR_RETURN(bool row, q.Step());
  if (!row) return JobNotFoundError(id);
  if (q.ColumnInt(1) != 0) {
    DAPQ_ASSIGN_OR_RETURN(JobState state, ToState<JobState>(q.ColumnInt(0), "job", path_));
    return absl::FailedPreconditionError(
        absl::StrCat("job ", Sv(id), " already finished (", Sv(JobStateName(state)), ")"));
  }
  DAPQ_ASSIGN_OR_RETURN(Statement items,
                        db->Prepare("UPDATE items SET state = 4 WHERE job_seq = ? AND state = 0"));
  items.BindInt(1, seq);
  DAPQ_RETURN_IF_ERROR(items.Run());
  DAPQ_ASSIGN_OR_RETURN(Statement job, db->Prepare("UPDATE jobs SET state = 4 WHERE seq = ?"));
  job.BindInt(1, seq);
  DAPQ_RETURN_IF_ERROR(job.Run());
  DAPQ_RETURN_IF_ERROR(FinishJobIfDone(db, seq));
  return tx.Commit();
}

absl::StatusOr<std::vector<ClaimedItem>> SqliteBatchStore::ClaimItems(int n) {
  if (n < 0) return absl::InvalidArgumentError(absl::StrCat("ClaimItems: n ", n));
  std::vector<ClaimedItem> claimed;
  if (n == 0) return claimed;
  MutexLock lock(&mu_);
  SqliteDb* db = db_.get();
  DAPQ_ASSIGN_OR_RETURN(Transaction tx, Transaction::Begin(db));
  DAPQ_ASSIGN_OR_RETURN(Statement q, db->Prepare(R"sql(
SELECT i.job_seq, i.idx, i.attempts, i.request, j.options
FROM items i JOIN jobs j ON j.seq = i.job_seq
WHERE i.state = 0 ORDER BY i.job_seq, i.idx LIMIT ?)sql"));
  q.BindInt(1, n);
  std::vector<int64_t> seqs;  // per claimed item
  for (;;) {
    DAPQ_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) break;
    seqs.push_back(q.ColumnInt(0));
    ClaimedItem& c = claimed.emplace_back();
    c.job_id = FormatJobId(seqs.back());
    c.index = static_cast<int>(q.ColumnInt(1));
    c.attempt = static_cast<int>(q.ColumnInt(2)) + 1;
    c.request = q.ColumnBytes(3);
    c.options = q.ColumnBytes(4);
  }
  DAPQ_ASSIGN_OR_RETURN(
      Statement item,
      db->Prepare("UPDATE items SET state = 1, attempts = ? WHERE job_seq = ? AND idx = ?"));
  DAPQ_ASSIGN_OR_RETURN(Statement job,
                        db->Prepare("UPDATE jobs SET state = 1 WHERE seq = ? AND state = 0"));
  for (size_t i = 0; i < claimed.size(); ++i) {
    item.Reset();
    item.BindInt(1, claimed[i].attempt).BindInt(2, seqs[i]).BindInt(3, claimed[i].index);
    DAPQ_RETURN_IF_ERROR(item.Run());
    if (i == 0 || seqs[i] != seqs[i - 1]) {  // rows come grouped by job
      job.Reset();
      job.BindInt(1, seqs[i]);
      DAPQ_RETURN_IF_ERROR(job.Run());
    }
  }
  DAPQ_RETURN_IF_ERROR(tx.Commit());
  return claimed;
}

absl::Status SqliteBatchStore::FinishAttempt(std::string_view job_id, int index, int attempt,
                                             Outcome outcome, std::string_view payload,
                                             bool retryable) {
  DAPQ_ASSIGN_OR_RETURN(int64_t seq, ParseJobId(job_id));
  MutexLock lock(&mu_);
  SqliteDb* db = db_.get();
  DAPQ_ASSIGN_OR_RETURN(Transaction tx, Transaction::Begin(db));
  DAPQ_ASSIGN_OR_RETURN(Statement q, db->Prepare(R"sql(
SELECT j.state, j.max_attempts, i.state, i.attempts
FROM jobs j LEFT JOIN items i ON i.job_seq = j.seq AND i.idx = ?2
WHERE j.seq = ?1)sql"));
  q.BindInt(1, seq).BindInt(2, index);
  DAPQ_ASSIGN_OR_RETURN(bool row, q.Step());
  if (!row) return JobNotFoundError(job_id);
  if (q.ColumnIsNull(2)) {  // the job has no such item
    return absl::NotFoundError(absl::StrCat("job ", Sv(job_id), " has no item ", index));
  }
  const bool job_cancelled = q.ColumnInt(0) == static_cast<int>(JobState::kCancelled);
  const int64_t max_attempts = q.ColumnInt(1);
  DAPQ_ASSIGN_OR_RETURN(ItemState state, ToState<ItemState>(q.ColumnInt(2), "item", path_));
  const int64_t attempts = q.ColumnInt(3);
  if (state != ItemState::kRunning || attempts != attempt) {
    return absl::FailedPreconditionError(
        absl::StrCat("item ", Sv(job_id), "/", index, " is ", Sv(ItemStateName(state)),
                     " (attempts ", attempts, "): attempt ", attempt, " is not the running one"));
  }
  const AttemptEnd end = EndOfAttempt(outcome, retryable, attempts, max_attempts, job_cancelled);
  const ItemState next = end.next;
  const int64_t next_attempts = end.attempts;
  // ?5 (result) and ?6 (error) stay NULL, keeping the stored value, unless bound.
  DAPQ_ASSIGN_OR_RETURN(Statement u, db->Prepare(R"sql(
UPDATE items SET state = ?1, attempts = ?2, result = coalesce(?5, result),
                 error = coalesce(?6, error)
WHERE job_seq = ?3 AND idx = ?4)sql"));
  u.BindInt(1, static_cast<int>(next)).BindInt(2, next_attempts).BindInt(3, seq).BindInt(4, index);
  if (outcome == Outcome::kComplete) u.BindBlob(5, Sv(payload));
  if (outcome == Outcome::kFail) u.BindText(6, Sv(payload));
  DAPQ_RETURN_IF_ERROR(u.Run());
  DAPQ_RETURN_IF_ERROR(FinishJobIfDone(db, seq));
  return tx.Commit();
}

absl::StatusOr<std::vector<ItemRecord>> SqliteBatchStore::ListItems(std::string_view job_id,
                                                                    int from_index, int limit) {
  if (from_index < 0 || limit < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("ListItems: from_index ", from_index, ", limit ", limit));
  }
  DAPQ_ASSIGN_OR_RETURN(int64_t seq, ParseJobId(job_id));
  MutexLock lock(&mu_);
  SqliteDb* db = db_.get();
  DAPQ_ASSIGN_OR_RETURN(Statement exists, db->Prepare("SELECT 1 FROM jobs WHERE seq = ?"));
  exists.BindInt(1, seq);
  DAPQ_ASSIGN_OR_RETURN(bool found, exists.Step());
  if (!found) return JobNotFoundError(job_id);
  DAPQ_ASSIGN_OR_RETURN(Statement q, db->Prepare(R"sql(
SELECT idx, state, attempts, request, result, error FROM items
WHERE job_seq = ? AND idx >= ? ORDER BY idx LIMIT ?)sql"));
  q.BindInt(1, seq).BindInt(2, from_index).BindInt(3, limit);
  std::vector<ItemRecord> items;
  for (;;) {
    DAPQ_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) break;
    ItemRecord& r = items.emplace_back();
    r.job_id = std::string(job_id);
    r.index = static_cast<int>(q.ColumnInt(0));
    DAPQ_ASSIGN_OR_RETURN(r.state, ToState<ItemState>(q.ColumnInt(1), "item", path_));
    r.attempts = static_cast<int>(q.ColumnInt(2));
    r.request = q.ColumnBytes(3);
    r.result = q.ColumnBytes(4);
    r.error = q.ColumnBytes(5);
  }
  return items;
}

}  // namespace dapq::coordinator
