// File: coordinator/batch_store.h
// BatchStore: the coordinator's durable store of batch jobs and their items. Two
// implementations: one SQLite file owned by one coordinator (sqlite_batch_store.h, the default),
// and a PostgreSQL database that any number of coordinators share (postgres_batch_store.h).
// Open picks one by its argument. Every change is one transaction, so a crash at any point
// leaves the state before or after a call, never between.
//
// Items carry an opaque request (the coordinator stores a serialized protobuf) and an opaque
// result (JSON text); the store never interprets them. Item lifecycle:
//   pending --ClaimItems--> running (attempts+1)
//   running --CompleteItem--> succeeded
//   running --FailItem--> pending (retryable and attempts < max_attempts) | failed
//   running --ReleaseItem--> pending (attempts-1: the attempt is not counted)
//   pending --CancelJob--> cancelled
// Once a job is cancelled, items that would go back to pending become cancelled instead.
// A job is kQueued until its first claim, then kRunning (kCancelled at once when cancelled), and
// finishes (finished_unix_ms set) when no item is pending or running: kSucceeded, or kFailed if
// any item failed, or kCancelled.
//
// Claims are fenced by (state running, attempts == attempt): CompleteItem, FailItem and
// ReleaseItem of any other attempt get FailedPrecondition, so an item never completes twice.
// ReleaseItem and crash recovery uncount the attempt, so the next claim reuses its number; the
// caller drops a claim once it has released it.
//
// Items left running by a dead owner go back to pending without counting their attempt: the
// SQLite store has one owner (an flock on `<path>.lock`) and does it in Open; the PostgreSQL
// store does it for owners whose liveness record expired.
//
// Errors: NotFound (unknown job or item, naming it), InvalidArgument (bad input),
// FailedPrecondition (wrong state; a file of another application or a newer schema; the store
// is open elsewhere), DataLoss (not a batch store, or corrupt), Unavailable (database busy,
// unreachable, I/O error), errno codes (NotFound, PermissionDenied) for a missing or
// unwritable directory. Messages name the file or server; database failures also the SQL step
// and the database's message.
// Thread-safety: implementations are thread-safe.
#ifndef DAPQ_COORDINATOR_BATCH_STORE_H_
#define DAPQ_COORDINATOR_BATCH_STORE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace dapq::coordinator {

// Persisted as integers: never renumber.
enum class JobState { kQueued = 0, kRunning = 1, kSucceeded = 2, kFailed = 3, kCancelled = 4 };
enum class ItemState { kPending = 0, kRunning = 1, kSucceeded = 2, kFailed = 3, kCancelled = 4 };
// "queued", "running", "succeeded", "failed", "cancelled".
std::string_view JobStateName(JobState state);
// "pending", "running", "succeeded", "failed", "cancelled".
std::string_view ItemStateName(ItemState state);

struct JobSpec {
  std::string name;
  std::string options;      // opaque, e.g. serialized request defaults
  std::string output_path;  // "" = none
  int max_attempts = 3;
  std::string tenant;  // who submitted it ("" = anonymous, authentication off)
};

struct JobInfo {
  std::string id;  // "job-000001"
  JobSpec spec;
  JobState state = JobState::kQueued;
  int64_t created_unix_ms = 0;
  int64_t finished_unix_ms = 0;  // 0 while open
  int total = 0;
  int pending = 0, running = 0, succeeded = 0, failed = 0, cancelled = 0;

  bool finished() const { return finished_unix_ms != 0; }
};

struct ItemRecord {
  std::string job_id;
  int index = 0;
  ItemState state = ItemState::kPending;
  int attempts = 0;  // counted attempts, including a running one
  std::string request;
  std::string result;  // set when succeeded
  std::string error;   // last failure
};

struct ClaimedItem {
  std::string job_id;
  int index = 0;
  int attempt = 0;  // 1-based; pass back to CompleteItem / FailItem / ReleaseItem
  std::string request;
  std::string options;  // the job's JobSpec::options
};

class BatchStore {
 public:
  // A `postgres://` or `postgresql://` URL opens OpenPostgresBatchStore(url); anything else is
  // the path of an SQLite file (SqliteBatchStore::Open).
  static absl::StatusOr<std::unique_ptr<BatchStore>> Open(const std::string& path_or_url);
  virtual ~BatchStore() = default;

  // Items found running under a dead owner and put back to pending (or cancelled, for
  // cancelled jobs): by Open (SQLite) or since Open (PostgreSQL).
  virtual int recovered_items() const = 0;
  // The file, or the URL without its password.
  virtual const std::string& path() const = 0;

  // Ids are "job-000001", "job-000002", ...: monotonic, never reused, also across restarts.
  // InvalidArgument for 0 items or max_attempts < 1.
  virtual absl::StatusOr<std::string> CreateJob(const JobSpec& spec,
                                                const std::vector<std::string>& item_requests) = 0;
  virtual absl::StatusOr<JobInfo> GetJob(std::string_view id) = 0;
  // Newest first; at most `limit` (>= 0) jobs.
  absl::StatusOr<std::vector<JobInfo>> ListJobs(int limit);
  // The newest `limit` jobs of one tenant.
  absl::StatusOr<std::vector<JobInfo>> ListTenantJobs(int limit, std::string_view tenant);
  // Pending items -> cancelled and the job -> kCancelled; running items may still complete
  // (their result is kept) or fail. OK again while running items drain; FailedPrecondition
  // once the job has finished.
  virtual absl::Status CancelJob(std::string_view id) = 0;

  // Claims up to `n` (>= 0) pending items, oldest job first, then by index: each becomes running
  // with attempts+1, its job kQueued -> kRunning; all in one transaction.
  virtual absl::StatusOr<std::vector<ClaimedItem>> ClaimItems(int n) = 0;
  // Stores `result` (opaque) and marks the item succeeded. FailedPrecondition unless the item
  // is running with this attempt. Finishes the job when nothing is pending or running.
  absl::Status CompleteItem(std::string_view job_id, int index, int attempt,
                            std::string_view result) {
    return FinishAttempt(job_id, index, attempt, Outcome::kComplete, result, false);
  }
  // Records `error`; the item goes back to pending when `retryable` and attempts <
  // max_attempts, else it is failed. Same attempt check; may finish the job.
  absl::Status FailItem(std::string_view job_id, int index, int attempt, std::string_view error,
                        bool retryable) {
    return FinishAttempt(job_id, index, attempt, Outcome::kFail, error, retryable);
  }
  // Puts a running item back to pending without counting the attempt (its worker group went
  // away before it started). Same attempt check.
  absl::Status ReleaseItem(std::string_view job_id, int index, int attempt) {
    return FinishAttempt(job_id, index, attempt, Outcome::kRelease, "", false);
  }

  // Items with index >= from_index, in index order, at most `limit` (>= 0).
  virtual absl::StatusOr<std::vector<ItemRecord>> ListItems(std::string_view job_id, int from_index,
                                                            int limit) = 0;

  // Writes a finished job's items to `path` as JSONL, one line per item in index order: the
  // result string for succeeded items (raw CR/LF turned into spaces, which JSON treats as
  // whitespace), else {"index":i,"state":"failed"|"cancelled","error":"..."}. Atomic: temp
  // file, fsync, rename, directory fsync. FailedPrecondition while the job is open. Written
  // once here over GetJob and ListItems.
  absl::Status ExportResultsJsonl(std::string_view job_id, const std::string& path);

 protected:
  // How an attempt ends: CompleteItem, FailItem or ReleaseItem.
  enum class Outcome { kComplete, kFail, kRelease };
  // The common part of the three: the attempt check, then the outcome (`payload` is the result
  // or the error), in one transaction.
  virtual absl::Status FinishAttempt(std::string_view job_id, int index, int attempt,
                                     Outcome outcome, std::string_view payload, bool retryable) = 0;
  // Where a running item goes when its attempt ends, and its attempts then (a release does not
  // count the attempt; a retry or release of a cancelled job's item cancels it). The same rule
  // for every store.
  struct AttemptEnd {
    ItemState next = ItemState::kSucceeded;
    int64_t attempts = 0;
  };
  static AttemptEnd EndOfAttempt(Outcome outcome, bool retryable, int64_t attempts,
                                 int64_t max_attempts, bool job_cancelled);
  // ListJobs (tenant null) and ListTenantJobs: newest first, at most `limit` (>= 0, checked).
  virtual absl::StatusOr<std::vector<JobInfo>> ListJobsWhere(int limit,
                                                             const std::string* tenant) = 0;
};

// "job-000042" for 42, and back (NotFound for anything that is not an id we issue).
std::string FormatJobId(int64_t seq);
absl::StatusOr<int64_t> ParseJobId(std::string_view id);
// NotFound "job <id> not found".
absl::Status JobNotFoundError(std::string_view id);
// Whether Open takes `path_or_url` for a PostgreSQL URL.
bool IsPostgresUrl(std::string_view path_or_url);

}  // namespace dapq::coordinator

#endif  // DAPQ_COORDINATOR_BATCH_STORE_H_
