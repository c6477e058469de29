// File: coordinator/postgres_batch_store.cc
// PostgresBatchStore: every call is one transaction (or one read statement) on a libpq
// connection under mu_, re-run after a lost connection; a heartbeat thread keeps the owner
// alive on a second connection.
#include "coordinator/postgres_batch_store.h"

#include <unistd.h>

#include <algorithm>
#include <limits>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "coordinator/internal/pg_batch_schema.h"
#include "coordinator/internal/pg_connection.h"

namespace dapq::coordinator {
namespace {

using internal::PgConnection;
using internal::PgParam;
using internal::PgResult;
using internal::PgUrl;
using Clock = std::chrono::steady_clock;

constexpr int kMaxConflictRetries = 20;  // deadlocks / serialization failures per call
constexpr std::chrono::milliseconds kMinBackoff(100), kMaxBackoff(1000);
// CreateJob inserts items in statements of at most this many items and bytes.
constexpr size_t kInsertChunkItems = 5000;
constexpr size_t kInsertChunkBytes = 8 << 20;

// Debian's Abseil has its own string_view type, which StrCat needs.
absl::string_view Sv(std::string_view s) { return absl::string_view(s.data(), s.size()); }

template <typename State>
absl::StatusOr<State> ToState(int64_t v, absl::string_view what, const PgUrl& url) {
  if (v < 0 || v > 4) {
    return absl::DataLossError(
        absl::StrCat("postgres ", url.where(), ": invalid ", what, " state ", v));
  }
  return static_cast<State>(v);
}

std::string MakeOwnerId() {
  char host[256] = {};
  if (::gethostname(host, sizeof(host) - 1) != 0 || host[0] == '\0') {
    std::snprintf(host, sizeof(host), "unknown-host");
  }
  std::random_device rd;  // an identity, not a test input: unpredictable on purpose
  return absl::StrFormat("%s-%d-%08x", host, ::getpid(), rd());
}

// 128 random bits, hex: a commit marker no other transaction writes.
std::string MakeToken() {
  std::random_device rd;
  return absl::StrFormat("%08x%08x%08x%08x", rd(), rd(), rd(), rd());
}

std::chrono::milliseconds Backoff(int retry) {
  auto d = kMinBackoff * (1 << std::min(retry, 4));
  return std::min<std::chrono::milliseconds>(d, kMaxBackoff);
}

// Registers an owner, or refreshes its heartbeat, by the server's clock.
constexpr char kRegisterOwner[] = R"sql(
INSERT INTO dapq_owners (id) VALUES ($1)
ON CONFLICT (id) DO UPDATE SET last_seen = now())sql";

// The job columns and per-state item counts of GetJob / ListJobs, one statement (one snapshot).
constexpr char kJobSelect[] = R"sql(
SELECT j.seq, j.name, j.options, j.output_path, j.max_attempts, j.state, j.created_unix_ms,
       j.finished_unix_ms, j.total, j.tenant, c.pending, c.running, c.succeeded, c.failed,
       c.cancelled
FROM dapq_jobs j CROSS JOIN LATERAL (
  SELECT count(*) FILTER (WHERE state = 0) AS pending,
         count(*) FILTER (WHERE state = 1) AS running,
         count(*) FILTER (WHERE state = 2) AS succeeded,
         count(*) FILTER (WHERE state = 3) AS failed,
         count(*) FILTER (WHERE state = 4) AS cancelled
  FROM dapq_items WHERE job_seq = j.seq) c
)sql";

absl::StatusOr<JobInfo> JobFromRow(const PgResult& r, int row, const PgUrl& url) {
  JobInfo info;
  DAPQ_ASSIGN_OR_RETURN(int64_t seq, r.Int(row, 0));
  info.id = FormatJobId(seq);
  info.spec.name = r.Bytes(row, 1);
  info.spec.options = r.Bytes(row, 2);
  info.spec.output_path = r.Bytes(row, 3);
  DAPQ_ASSIGN_OR_RETURN(int64_t max_attempts, r.Int(row, 4));
  info.spec.max_attempts = static_cast<int>(max_attempts);
  DAPQ_ASSIGN_OR_RETURN(int64_t state, r.Int(row, 5));
  DAPQ_ASSIGN_OR_RETURN(info.state, ToState<JobState>(state, "job", url));
  DAPQ_ASSIGN_OR_RETURN(info.created_unix_ms, r.Int(row, 6));
  DAPQ_ASSIGN_OR_RETURN(info.finished_unix_ms, r.Int(row, 7));
  DAPQ_ASSIGN_OR_RETURN(int64_t total, r.Int(row, 8));
  info.total = static_cast<int>(total);
  info.spec.tenant = r.Bytes(row, 9);
  int* counts[] = {&info.pending, &info.running, &info.succeeded, &info.failed, &info.cancelled};
  for (int i = 0; i < 5; ++i) {
    DAPQ_ASSIGN_OR_RETURN(int64_t n, r.Int(row, 10 + i));
    *counts[i] = static_cast<int>(n);
  }
  return info;
}

// Sets the job's final state and finished time once no item is pending or running.
// REQUIRES: the job row is locked (FOR UPDATE) by this transaction, so this statement's fresh
// snapshot (READ COMMITTED) sees every other transaction's item changes that committed before
// the lock was granted.
absl::Status FinishJobIfDone(PgConnection* conn, int64_t seq) {
  DAPQ_ASSIGN_OR_RETURN(PgResult q, conn->Query("finish job: check items", R"sql(
SELECT state, finished_unix_ms,
       EXISTS (SELECT 1 FROM dapq_items WHERE job_seq = $1 AND state IN (0, 1))::int,
       EXISTS (SELECT 1 FROM dapq_items WHERE job_seq = $1 AND state = 3)::int
FROM dapq_jobs WHERE seq = $1)sql",
                                                {PgParam::Int(seq)}));
  if (q.rows() == 0)
    return absl::InternalError(absl::StrCat("job ", FormatJobId(seq), " vanished"));
  DAPQ_ASSIGN_OR_RETURN(int64_t state, q.Int(0, 0));
  DAPQ_ASSIGN_OR_RETURN(int64_t finished, q.Int(0, 1));
  DAPQ_ASSIGN_OR_RETURN(int64_t open_items, q.Int(0, 2));
  DAPQ_ASSIGN_OR_RETURN(int64_t failed_items, q.Int(0, 3));
  if (finished != 0 || open_items != 0) return absl::OkStatus();
  const JobState final_state = state == static_cast<int>(JobState::kCancelled)
                                   ? JobState::kCancelled
                               : failed_items != 0 ? JobState::kFailed
                                                   : JobState::kSucceeded;
  // The server's clock, never 0 (0 means "still open").
  return conn->Exec("finish job", R"sql(
UPDATE dapq_jobs
SET state = $2,
    finished_unix_ms = GREATEST(1, (extract(epoch FROM clock_timestamp()) * 1000)::bigint)
WHERE seq = $1)sql",
                    {PgParam::Int(seq), PgParam::Int(static_cast<int>(final_state))});
}

}  // namespace

PostgresBatchStore::PostgresBatchStore(std::unique_ptr<PgUrl> url,
                                       const PostgresBatchStoreOptions& options,
                                       std::string owner_id)
    : url_(std::move(url)),
      redacted_url_(url_->redacted()),
      options_(options),
      heartbeat_period_(std::max<std::chrono::milliseconds>(
          std::chrono::milliseconds(10),
          std::min(options.heartbeat_interval, options.owner_ttl / 4))),
      owner_ids_{std::move(owner_id)} {}

absl::StatusOr<std::unique_ptr<PostgresBatchStore>> PostgresBatchStore::Open(
    const std::string& url, const PostgresBatchStoreOptions& options) {
  DAPQ_ASSIGN_OR_RETURN(PgUrl parsed, PgUrl::Parse(url));
  if (options.owner_ttl.count() <= 0 || options.heartbeat_interval.count() <= 0 ||
      options.reconnect_timeout.count() < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "postgres batch store options: owner_ttl ", options.owner_ttl.count(),
        " ms and heartbeat_interval ", options.heartbeat_interval.count(),
        " ms must be > 0, reconnect_timeout ", options.reconnect_timeout.count(), " ms >= 0"));
  }
  std::unique_ptr<PostgresBatchStore> store(
      new PostgresBatchStore(std::make_unique<PgUrl>(std::move(parsed)), options, MakeOwnerId()));
  DAPQ_RETURN_IF_ERROR(store->Transact(
      "open: schema", TxMode::kWrite,
      [](PgConnection* conn) -> absl::Status { return internal::EnsurePgBatchSchema(conn); }));
  int recovered = 0;
  DAPQ_RETURN_IF_ERROR(store->Transact(
      "open: register coordinator", TxMode::kWrite, [&](PgConnection* conn) -> absl::Status {
        DAPQ_RETURN_IF_ERROR(
            conn->Exec("register coordinator", kRegisterOwner, {PgParam::Text(store->owner_id())}));
        // Markers left by coordinators that died: nobody asks about commits this old.
        DAPQ_RETURN_IF_ERROR(
            conn->Exec("drop old commit markers",
                       "DELETE FROM dapq_commits WHERE created < now() - interval '1 day'"));
        DAPQ_ASSIGN_OR_RETURN(recovered, store->ReclaimLostItems(conn));
        return absl::OkStatus();
      }));
  store->recovered_items_ += recovered;
  {
    MutexLock lock(&store->mu_);
    store->opened_ = true;
  }
  {
    MutexLock lock(&store->ids_mu_);
    store->owner_registered_ = true;
  }
  PostgresBatchStore* raw = store.get();
  store->heartbeat_ = std::thread([raw] { raw->HeartbeatLoop(); });
  return store;
}

absl::StatusOr<std::unique_ptr<BatchStore>> OpenPostgresBatchStore(
    const std::string& url, const PostgresBatchStoreOptions& options) {
  DAPQ_ASSIGN_OR_RETURN(std::unique_ptr<PostgresBatchStore> store,
                        PostgresBatchStore::Open(url, options));
  return std::unique_ptr<BatchStore>(std::move(store));
}

PostgresBatchStore::~PostgresBatchStore() {
  {
    MutexLock lock(&heartbeat_mu_);
    stop_ = true;
  }
  heartbeat_cv_.SignalAll();
  if (heartbeat_.joinable()) heartbeat_.join();
  // Unregister: nothing more comes from this store, so its running items can be reclaimed now
  // instead of after owner_ttl. One try; if it fails, the TTL does the same later.
  MutexLock lock(&mu_);
  if (opened_ && conn_ != nullptr && !conn_->broken()) {
    if (!last_token_.empty()) {
      conn_
          ->Exec("drop commit marker", "DELETE FROM dapq_commits WHERE token = $1",
                 {PgParam::Text(last_token_)})
          .IgnoreError();
    }
    for (const std::string& id : OwnerIds()) {
      conn_
          ->Exec("unregister coordinator", "DELETE FROM dapq_owners WHERE id = $1",
                 {PgParam::Text(id)})
          .IgnoreError();
    }
  }
}

std::string PostgresBatchStore::owner_id() const {
  MutexLock lock(&ids_mu_);
  return owner_ids_.back();
}

std::vector<std::string> PostgresBatchStore::OwnerIds() const {
  MutexLock lock(&ids_mu_);
  return owner_ids_;
}

void PostgresBatchStore::HeartbeatLoop() {
  std::unique_ptr<PgConnection> conn;
  for (;;) {
    {
      MutexLock lock(&heartbeat_mu_);
      if (heartbeat_cv_.WaitFor(&heartbeat_mu_, heartbeat_period_, [&] { return stop_; })) break;
    }
    if (conn == nullptr || conn->broken()) {
      conn.reset();
      absl::StatusOr<std::unique_ptr<PgConnection>> c =
          PgConnection::Connect(*url_, heartbeat_period_);
      if (!c.ok()) continue;  // the next tick tries again
      conn = *std::move(c);
      // A heartbeat lost in a server crash costs nothing: skip the WAL flush wait.
      conn->ExecScript("heartbeat: settings", "SET synchronous_commit = off").IgnoreError();
    }
    conn->Exec("heartbeat", kRegisterOwner, {PgParam::Text(owner_id())}).IgnoreError();
  }
}

absl::Status PostgresBatchStore::EnsureConnectedLocked(Clock::time_point deadline) {
  if (conn_ != nullptr && !conn_->broken()) return absl::OkStatus();
  conn_.reset();
  for (int retry = 0;; ++retry) {
    const auto remaining =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    absl::StatusOr<std::unique_ptr<PgConnection>> c =
        PgConnection::Connect(*url_, std::max(remaining, std::chrono::milliseconds(0)));
    if (c.ok()) {
      conn_ = *std::move(c);
      return absl::OkStatus();
    }
    if (c.status().code() != absl::StatusCode::kUnavailable) return c.status();
    if (Clock::now() + Backoff(retry) >= deadline) {
      return absl::UnavailableError(absl::StrCat(c.status().message(), " (gave up after ",
                                                 options_.reconnect_timeout.count(), " ms)"));
    }
    std::this_thread::sleep_for(Backoff(retry));  // a retry loop's backoff
  }
}

absl::StatusOr<bool> PostgresBatchStore::CommittedLocked(const std::string& token, int backend_pid,
                                                         const std::string& backend_start,
                                                         Clock::time_point deadline) {
  absl::Status last;
  for (int retry = 0;; ++retry) {
    absl::Status connected = EnsureConnectedLocked(deadline);
    if (!connected.ok()) return connected;
    // First the old session must be gone: while it lives (the network failed, not the server)
    // its transaction may still commit. Ending it settles that: a COMMIT it already received
    // completes, anything else rolls back. pid and start time name it even across restarts.
    absl::StatusOr<PgResult> alive =
        conn_->Query("commit outcome: end the lost session", R"sql(
SELECT pg_terminate_backend(pid) FROM pg_stat_activity
WHERE pid = $1 AND backend_start::text = $2)sql",
                     {PgParam::Int(backend_pid), PgParam::Text(backend_start)});
    if (alive.ok() && alive->rows() == 0) {
      // Gone, so its transaction is over and visible to this new statement's snapshot.
      absl::StatusOr<PgResult> marker =
          conn_->Query("commit outcome: look for the marker",
                       "SELECT 1 FROM dapq_commits WHERE token = $1", {PgParam::Text(token)});
      if (marker.ok()) return marker->rows() > 0;
      last = marker.status();
    } else if (alive.ok()) {
      last = absl::UnavailableError(
          absl::StrCat("postgres ", url_->where(), ": the session of the lost COMMIT still runs"));
    } else {
      // Not allowed to end it, or the connection failed again: wait for it to end itself.
      last = alive.status();
    }
    if (Clock::now() + Backoff(retry) >= deadline) return last;
    std::this_thread::sleep_for(Backoff(retry));
  }
}

absl::Status PostgresBatchStore::Transact(std::string_view what, TxMode mode, Body body) {
  MutexLock lock(&mu_);
  const Clock::time_point deadline = Clock::now() + options_.reconnect_timeout;
  int conflicts = 0;
  for (int retry = 0;; ++retry) {
    DAPQ_RETURN_IF_ERROR(EnsureConnectedLocked(deadline));
    PgConnection* conn = conn_.get();
    absl::Status s = mode == TxMode::kWrite ? conn->ExecScript("begin", "BEGIN") : absl::OkStatus();
    if (s.ok()) s = body(conn);
    // A transaction that changed anything also writes a fresh marker, and drops the marker of
    // this store's previous acknowledged commit (no longer needed).
    std::string token;
    if (s.ok() && mode == TxMode::kWrite) {
      token = MakeToken();
      absl::StatusOr<PgResult> marked = conn->Query("commit marker", R"sql(
INSERT INTO dapq_commits (token)
SELECT $1 WHERE pg_current_xact_id_if_assigned() IS NOT NULL
RETURNING 1)sql",
                                                    {PgParam::Text(token)});
      if (!marked.ok()) {
        s = marked.status();
      } else if (marked->rows() == 0) {
        token.clear();  // read only: nothing to learn about its commit
      } else if (!last_token_.empty()) {
        s = conn->Exec("commit marker: drop the previous one",
                       "DELETE FROM dapq_commits WHERE token = $1", {PgParam::Text(last_token_)});
      }
    }
    if (s.ok()) {
      if (mode == TxMode::kRead) return absl::OkStatus();
      const int backend_pid = conn->backend_pid();
      const std::string backend_start = conn->backend_start();
      s = conn->ExecScript("commit", "COMMIT");
      if (s.ok()) {
        if (!token.empty()) last_token_ = token;
        return absl::OkStatus();
      }
      if (conn->broken() && !token.empty()) {
        // The COMMIT was sent but its answer lost: it may or may not have happened.
        absl::StatusOr<bool> committed =
            CommittedLocked(token, backend_pid, backend_start, deadline);
        if (committed.ok() && *committed) {
          last_token_ = token;
          return absl::OkStatus();
        }
        if (!committed.ok()) {
          // Whatever it did stays unknown. A new owner id lets claims it may have made under
          // the old one be reclaimed after owner_ttl (the old id stops heart-beating).
          MutexLock ids_lock(&ids_mu_);
          owner_ids_.push_back(MakeOwnerId());
          owner_registered_ = false;  // the next claim registers it
          return absl::UnavailableError(absl::StrCat(
              Sv(what), ": outcome of the commit unknown: ", committed.status().message()));
        }
        continue;  // it rolled back: run it again
      }
    } else if (mode == TxMode::kWrite && !conn->broken()) {
      conn->ExecScript("rollback", "ROLLBACK").IgnoreError();
    }
    if (s.code() == absl::StatusCode::kAborted && ++conflicts <= kMaxConflictRetries) continue;
    if (s.code() != absl::StatusCode::kUnavailable || !conn->broken()) return s;
    // The connection went away before COMMIT: the server rolled the transaction back.
    conn_.reset();
    if (Clock::now() + Backoff(retry) >= deadline) return s;
    std::this_thread::sleep_for(Backoff(retry));
  }
}

absl::StatusOr<int> PostgresBatchStore::ReclaimLostItems(PgConnection* conn) {
  // Not our current id (alive by definition); ids we gave up on are reclaimable.
  const std::string me = owner_id();
  DAPQ_ASSIGN_OR_RETURN(PgResult lost,
                        conn->Query("reclaim: find items of lost coordinators",
                                    R"sql(
SELECT i.job_seq, i.idx FROM dapq_items i
WHERE i.state = 1 AND i.owner IS DISTINCT FROM $1
  AND NOT EXISTS (SELECT 1 FROM dapq_owners o
                  WHERE o.id = i.owner AND o.last_seen > now() - $2 * interval '1 millisecond')
ORDER BY i.job_seq, i.idx
FOR UPDATE OF i SKIP LOCKED)sql",
                                    {PgParam::Text(me), PgParam::Int(options_.owner_ttl.count())}));
  if (lost.rows() == 0) return 0;
  std::vector<int64_t> seqs, idxs;
  std::set<int64_t> jobs;
  for (int row = 0; row < lost.rows(); ++row) {
    DAPQ_ASSIGN_OR_RETURN(int64_t seq, lost.Int(row, 0));
    DAPQ_ASSIGN_OR_RETURN(int64_t idx, lost.Int(row, 1));
    seqs.push_back(seq);
    idxs.push_back(idx);
    jobs.insert(seq);
  }
  const std::vector<int64_t> job_list(jobs.begin(), jobs.end());
  // Job rows before deciding pending vs cancelled (a concurrent cancel holds them).
  DAPQ_RETURN_IF_ERROR(conn->Exec(
      "reclaim: lock jobs", "SELECT seq FROM dapq_jobs WHERE seq = ANY($1) ORDER BY seq FOR UPDATE",
      {PgParam::IntArray(job_list)}));
  DAPQ_RETURN_IF_ERROR(conn->Exec("reclaim: put items back", R"sql(
UPDATE dapq_items i
SET state = CASE WHEN j.state = 4 THEN 4 ELSE 0 END, attempts = i.attempts - 1, owner = NULL
FROM dapq_jobs j, unnest($1::int8[], $2::int8[]) AS r(seq, idx)
WHERE i.job_seq = r.seq AND i.idx = r.idx AND j.seq = i.job_seq AND i.state = 1)sql",
                                  {PgParam::IntArray(seqs), PgParam::IntArray(idxs)}));
  // Items of cancelled jobs became cancelled: such a job may be finished now.
  for (int64_t seq : job_list) DAPQ_RETURN_IF_ERROR(FinishJobIfDone(conn, seq));
  // Forget coordinators that are gone (whatever of theirs is still running counts as lost).
  DAPQ_RETURN_IF_ERROR(conn->Exec("reclaim: forget lost coordinators", R"sql(
DELETE FROM dapq_owners WHERE last_seen <= now() - $1 * interval '1 millisecond' AND id <> $2)sql",
                                  {PgParam::Int(options_.owner_ttl.count()), PgParam::Text(me)}));
  return lost.rows();
}

absl::StatusOr<std::string> PostgresBatchStore::CreateJob(
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
  int64_t seq = 0;
  DAPQ_RETURN_IF_ERROR(
      Transact("CreateJob", TxMode::kWrite, [&](PgConnection* conn) -> absl::Status {
        DAPQ_ASSIGN_OR_RETURN(
            PgResult job, conn->Query("create job", R"sql(
INSERT INTO dapq_jobs (name, options, output_path, tenant, max_attempts, state, created_unix_ms,
                       total)
VALUES ($1, $2, $3, $4, $5, 0,
        GREATEST(1, (extract(epoch FROM clock_timestamp()) * 1000)::bigint), $6)
RETURNING seq)sql",
                                      {PgParam::Bytes(spec.name), PgParam::Bytes(spec.options),
                                       PgParam::Bytes(spec.output_path),
                                       PgParam::Bytes(spec.tenant), PgParam::Int(spec.max_attempts),
                                       PgParam::Int(static_cast<int64_t>(item_requests.size()))}));
        DAPQ_ASSIGN_OR_RETURN(seq, job.Int(0, 0));
        for (size_t begin = 0; begin < item_requests.size();) {
          size_t end = begin, bytes = 0;
          while (end < item_requests.size() && end - begin < kInsertChunkItems &&
                 (end == begin || bytes + item_requests[end].size() <= kInsertChunkBytes)) {
            bytes += item_requests[end++].size();
          }
          DAPQ_RETURN_IF_ERROR(
              conn->Exec("create job: insert items", R"sql(
INSERT INTO dapq_items (job_seq, idx, state, request)
SELECT $1, $2 + t.ord - 1, 0, t.request
FROM unnest($3::bytea[]) WITH ORDINALITY AS t(request, ord))sql",
                         {PgParam::Int(seq), PgParam::Int(static_cast<int64_t>(begin)),
                          PgParam::BytesArray(item_requests, begin, end)}));
          begin = end;
        }
        return absl::OkStatus();
      }));
  return FormatJobId(seq);
}

absl::StatusOr<JobInfo> PostgresBatchStore::GetJob(std::string_view id) {
  DAPQ_ASSIGN_OR_RETURN(int64_t seq, ParseJobId(id));
  const std::string sql = absl::StrCat(kJobSelect, "WHERE j.seq = $1");
  std::optional<JobInfo> info;
  DAPQ_RETURN_IF_ERROR(Transact("GetJob", TxMode::kRead, [&](PgConnection* conn) -> absl::Status {
    info.reset();
    DAPQ_ASSIGN_OR_RETURN(PgResult r, conn->Query("get job", sql.c_str(), {PgParam::Int(seq)}));
    if (r.rows() == 0) return absl::OkStatus();
    DAPQ_ASSIGN_OR_RETURN(info, JobFromRow(r, 0, *url_));
    return absl::OkStatus();
  }));
  if (!info.has_value()) return JobNotFoundError(id);
  return *std::move(info);
}

absl::StatusOr<std::vector<JobInfo>> PostgresBatchStore::ListJobsWhere(int limit,
                                                                       const std::string* tenant) {
  const std::string sql = absl::StrCat(kJobSelect, tenant == nullptr ? "" : "WHERE j.tenant = $2 ",
                                       "ORDER BY j.seq DESC LIMIT $1");
  std::vector<JobInfo> jobs;
  DAPQ_RETURN_IF_ERROR(Transact("ListJobs", TxMode::kRead, [&](PgConnection* conn) -> absl::Status {
    jobs.clear();
    absl::StatusOr<PgResult> r =
        tenant == nullptr
            ? conn->Query("list jobs", sql.c_str(), {PgParam::Int(limit)})
            : conn->Query("list jobs", sql.c_str(), {PgParam::Int(limit), PgParam::Bytes(*tenant)});
    if (!r.ok()) return r.status();
    for (int row = 0; row < r->rows(); ++row) {
      DAPQ_ASSIGN_OR_RETURN(JobInfo info, JobFromRow(*r, row, *url_));
      jobs.push_back(std::move(info));
    }
    return absl::OkStatus();
  }));
  return jobs;
}

absl::Status PostgresBatchStore::CancelJob(std::string_view id) {
  DAPQ_ASSIGN_OR_RETURN(int64_t seq, ParseJobId(id));
  auto finished_error = [&](const PgResult& job) -> absl::Status {
    DAPQ_ASSIGN_OR_RETURN(int64_t finished, job.Int(0, 1));
    if (finished == 0) return absl::OkStatus();
    DAPQ_ASSIGN_OR_RETURN(int64_t state, job.Int(0, 0));
    DAPQ_ASSIGN_OR_RETURN(JobState s, ToState<JobState>(state, "job", *url_));
    return absl::FailedPreconditionError(
        absl::StrCat("job ", Sv(id), " already finished (", Sv(JobStateName(s)), ")"));
  };
  return Transact("CancelJob", TxMode::kWrite, [&](PgConnection* conn) -> absl::Status {
    DAPQ_ASSIGN_OR_RETURN(
        PgResult job, conn->Query("cancel: read job",
                                  "SELECT state, finished_unix_ms FROM dapq_jobs WHERE seq = $1",
                                  {PgParam::Int(seq)}));
    if (job.rows() == 0) return JobNotFoundError(id);
    DAPQ_RETURN_IF_ERROR(finished_error(job));
    // Pending items first, without the job lock: a claim holding some of them waits for no lock
    // of ours, commits, and its items stay running.
    constexpr char kCancelPending[] =
        "UPDATE dapq_items SET state = 4 WHERE job_seq = $1 AND state = 0";
    DAPQ_RETURN_IF_ERROR(conn->Exec("cancel: pending items", kCancelPending, {PgParam::Int(seq)}));
    DAPQ_ASSIGN_OR_RETURN(
        job, conn->Query("cancel: lock job",
                         "SELECT state, finished_unix_ms FROM dapq_jobs WHERE seq = $1 FOR UPDATE",
                         {PgParam::Int(seq)}));
    DAPQ_RETURN_IF_ERROR(finished_error(job));
    // Items that a failure or release put back before we held the job lock.
    DAPQ_RETURN_IF_ERROR(conn->Exec("cancel: pending items", kCancelPending, {PgParam::Int(seq)}));
    DAPQ_RETURN_IF_ERROR(conn->Exec("cancel: job", "UPDATE dapq_jobs SET state = 4 WHERE seq = $1",
                                    {PgParam::Int(seq)}));
    return FinishJobIfDone(conn, seq);
  });
}

absl::StatusOr<std::vector<ClaimedItem>> PostgresBatchStore::ClaimItems(int n) {
  if (n < 0) return absl::InvalidArgumentError(absl::StrCat("ClaimItems: n ", n));
  std::vector<ClaimedItem> claimed;
  if (n == 0) return claimed;
  int recovered = 0;
  bool registered = false;
  std::string owner;
  {
    MutexLock lock(&ids_mu_);
    registered = owner_registered_;
    owner = owner_ids_.back();
  }
  DAPQ_RETURN_IF_ERROR(
      Transact("ClaimItems", TxMode::kWrite, [&](PgConnection* conn) -> absl::Status {
        claimed.clear();
        if (!registered) {
          // A new owner id claims nothing before its row exists: other coordinators would take
          // items of an owner they cannot find for lost.
          DAPQ_RETURN_IF_ERROR(
              conn->Exec("claim: register coordinator", kRegisterOwner, {PgParam::Text(owner)}));
        }
        DAPQ_ASSIGN_OR_RETURN(recovered, ReclaimLostItems(conn));
        DAPQ_ASSIGN_OR_RETURN(PgResult q, conn->Query("claim: pick pending items", R"sql(
SELECT i.job_seq, i.idx, i.attempts, i.request, j.options
FROM dapq_items i JOIN dapq_jobs j ON j.seq = i.job_seq
WHERE i.state = 0 ORDER BY i.job_seq, i.idx LIMIT $1
FOR UPDATE OF i SKIP LOCKED)sql",
                                                      {PgParam::Int(n)}));
        if (q.rows() == 0) return absl::OkStatus();
        std::vector<int64_t> seqs, idxs;
        for (int row = 0; row < q.rows(); ++row) {
          DAPQ_ASSIGN_OR_RETURN(int64_t seq, q.Int(row, 0));
          DAPQ_ASSIGN_OR_RETURN(int64_t idx, q.Int(row, 1));
          DAPQ_ASSIGN_OR_RETURN(int64_t attempts, q.Int(row, 2));
          seqs.push_back(seq);
          idxs.push_back(idx);
          ClaimedItem& c = claimed.emplace_back();
          c.job_id = FormatJobId(seq);
          c.index = static_cast<int>(idx);
          c.attempt = static_cast<int>(attempts) + 1;
          c.request = q.Bytes(row, 3);
          c.options = q.Bytes(row, 4);
        }
        DAPQ_RETURN_IF_ERROR(
            conn->Exec("claim: mark running", R"sql(
UPDATE dapq_items i SET state = 1, attempts = i.attempts + 1, owner = $3
FROM unnest($1::int8[], $2::int8[]) AS r(seq, idx)
WHERE i.job_seq = r.seq AND i.idx = r.idx)sql",
                       {PgParam::IntArray(seqs), PgParam::IntArray(idxs), PgParam::Text(owner)}));
        // Queued jobs start running; rows come sorted by job, so job locks go in ascending order.
        for (size_t i = 0; i < seqs.size(); ++i) {
          if (i > 0 && seqs[i] == seqs[i - 1]) continue;
          DAPQ_RETURN_IF_ERROR(conn->Exec(
              "claim: start job", "UPDATE dapq_jobs SET state = 1 WHERE seq = $1 AND state = 0",
              {PgParam::Int(seqs[i])}));
        }
        return absl::OkStatus();
      }));
  recovered_items_ += recovered;
  if (!registered) {
    MutexLock lock(&ids_mu_);
    if (owner_ids_.back() == owner) owner_registered_ = true;
  }
  return claimed;
}

absl::Status PostgresBatchStore::FinishAttempt(std::string_view job_id, int index, int attempt,
                                               Outcome outcome, std::string_view payload,
                                               bool retryable) {
  DAPQ_ASSIGN_OR_RETURN(int64_t seq, ParseJobId(job_id));
  return Transact("FinishAttempt", TxMode::kWrite, [&](PgConnection* conn) -> absl::Status {
    // The item, then its job (the lock order of every transaction here).
    DAPQ_ASSIGN_OR_RETURN(PgResult item, conn->Query("finish attempt: lock item", R"sql(
SELECT state, attempts, owner FROM dapq_items WHERE job_seq = $1 AND idx = $2 FOR UPDATE)sql",
                                                     {PgParam::Int(seq), PgParam::Int(index)}));
    DAPQ_ASSIGN_OR_RETURN(
        PgResult job,
        conn->Query("finish attempt: lock job",
                    "SELECT state, max_attempts FROM dapq_jobs WHERE seq = $1 FOR UPDATE",
                    {PgParam::Int(seq)}));
    if (job.rows() == 0) return JobNotFoundError(job_id);
    if (item.rows() == 0) {
      return absl::NotFoundError(absl::StrCat("job ", Sv(job_id), " has no item ", index));
    }
    DAPQ_ASSIGN_OR_RETURN(int64_t job_state, job.Int(0, 0));
    DAPQ_ASSIGN_OR_RETURN(int64_t max_attempts, job.Int(0, 1));
    DAPQ_ASSIGN_OR_RETURN(int64_t raw_state, item.Int(0, 0));
    DAPQ_ASSIGN_OR_RETURN(ItemState state, ToState<ItemState>(raw_state, "item", *url_));
    DAPQ_ASSIGN_OR_RETURN(int64_t attempts, item.Int(0, 1));
    const std::string owner = item.IsNull(0, 2) ? "" : item.Bytes(0, 2);
    if (state != ItemState::kRunning || attempts != attempt) {
      return absl::FailedPreconditionError(
          absl::StrCat("item ", Sv(job_id), "/", index, " is ", Sv(ItemStateName(state)),
                       " (attempts ", attempts, "): attempt ", attempt, " is not the running one"));
    }
    const std::vector<std::string> mine = OwnerIds();
    if (std::find(mine.begin(), mine.end(), owner) == mine.end()) {
      return absl::FailedPreconditionError(
          absl::StrCat("item ", Sv(job_id), "/", index, " is running (attempts ", attempts,
                       ") under coordinator ", owner, ": attempt ", attempt,
                       " of this coordinator was reclaimed after its heartbeat lapsed"));
    }
    const AttemptEnd end =
        EndOfAttempt(outcome, retryable, attempts, max_attempts,
                     /*job_cancelled=*/job_state == static_cast<int>(JobState::kCancelled));
    const ItemState next = end.next;
    const int64_t next_attempts = end.attempts;
    // $5 (result) and $6 (error) stay NULL, keeping the stored value, unless given.
    DAPQ_RETURN_IF_ERROR(
        conn->Exec("finish attempt: update item", R"sql(
UPDATE dapq_items SET state = $3, attempts = $4, owner = NULL, result = coalesce($5, result),
                      error = coalesce($6, error)
WHERE job_seq = $1 AND idx = $2)sql",
                   {PgParam::Int(seq), PgParam::Int(index), PgParam::Int(static_cast<int>(next)),
                    PgParam::Int(next_attempts),
                    outcome == Outcome::kComplete ? PgParam::Bytes(payload) : PgParam::NullBytes(),
                    outcome == Outcome::kFail ? PgParam::Bytes(payload) : PgParam::NullBytes()}));
    return FinishJobIfDone(conn, seq);
  });
}

absl::StatusOr<std::vector<ItemRecord>> PostgresBatchStore::ListItems(std::string_view job_id,
                                                                      int from_index, int limit) {
  if (from_index < 0 || limit < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("ListItems: from_index ", from_index, ", limit ", limit));
  }
  DAPQ_ASSIGN_OR_RETURN(int64_t seq, ParseJobId(job_id));
  std::vector<ItemRecord> items;
  bool found = false;
  DAPQ_RETURN_IF_ERROR(
      Transact("ListItems", TxMode::kRead, [&](PgConnection* conn) -> absl::Status {
        items.clear();
        DAPQ_ASSIGN_OR_RETURN(PgResult exists, conn->Query("list items: job",
                                                           "SELECT 1 FROM dapq_jobs WHERE seq = $1",
                                                           {PgParam::Int(seq)}));
        found = exists.rows() > 0;
        if (!found) return absl::OkStatus();
        DAPQ_ASSIGN_OR_RETURN(PgResult q, conn->Query("list items", R"sql(
SELECT idx, state, attempts, request, result, error FROM dapq_items
WHERE job_seq = $1 AND idx >= $2 ORDER BY idx LIMIT $3)sql",
                                                      {PgParam::Int(seq), PgParam::Int(from_index),
                                                       PgParam::Int(limit)}));
        for (int row = 0; row < q.rows(); ++row) {
          ItemRecord& r = items.emplace_back();
          r.job_id = std::string(job_id);
          DAPQ_ASSIGN_OR_RETURN(int64_t idx, q.Int(row, 0));
          r.index = static_cast<int>(idx);
          DAPQ_ASSIGN_OR_RETURN(int64_t state, q.Int(row, 1));
          DAPQ_ASSIGN_OR_RETURN(r.state, ToState<ItemState>(state, "item", *url_));
          DAPQ_ASSIGN_OR_RETURN(int64_t attempts, q.Int(row, 2));
          r.attempts = static_cast<int>(attempts);
          r.request = q.Bytes(row, 3);
          r.result = q.Bytes(row, 4);
          r.error = q.Bytes(row, 5);
        }
        return absl::OkStatus();
      }));
  if (!found) return JobNotFoundError(job_id);
  return items;
}

}  // namespace dapq::coordinator
