// File: coordinator/sqlite_batch_store.h
// SqliteBatchStore: the batch store in one SQLite file (WAL, synchronous=FULL, foreign keys,
// busy_timeout; PRAGMA user_version is the schema version, PRAGMA application_id marks the file
// as ours), for one coordinator. The contract is BatchStore's (batch_store.h).
//
// One process owns a store at a time: Open takes an flock on `<path>.lock` (FailedPrecondition
// while another holder lives). Open puts items left running by a dead owner back to pending
// without counting their attempt.
//
// Errors beyond BatchStore's: DataLoss for a file that is not an SQLite database; SQLite
// failures name the file, the SQL step and sqlite3_errmsg.
// Thread-safety: thread-safe (one connection behind a mutex).
#ifndef DAPQ_COORDINATOR_SQLITE_BATCH_STORE_H_
#define DAPQ_COORDINATOR_SQLITE_BATCH_STORE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/mutex.h"
#include "coordinator/batch_store.h"

namespace dapq::coordinator {

namespace internal {
class SqliteDb;
class LockFile;
}  // namespace internal

class SqliteBatchStore final : public BatchStore {
 public:
  // Creates the file and schema if missing, migrates an older schema, and recovers items left
  // running (see recovered_items()). Errors name `path`.
  static absl::StatusOr<std::unique_ptr<BatchStore>> Open(const std::string& path);
  ~SqliteBatchStore() override;
  SqliteBatchStore(const SqliteBatchStore&) = delete;
  SqliteBatchStore& operator=(const SqliteBatchStore&) = delete;

  int recovered_items() const override { return recovered_items_; }
  const std::string& path() const override { return path_; }

  absl::StatusOr<std::string> CreateJob(const JobSpec& spec,
                                        const std::vector<std::string>& item_requests) override;
  absl::StatusOr<JobInfo> GetJob(std::string_view id) override;
  absl::Status CancelJob(std::string_view id) override;
  absl::StatusOr<std::vector<ClaimedItem>> ClaimItems(int n) override;
  absl::StatusOr<std::vector<ItemRecord>> ListItems(std::string_view job_id, int from_index,
                                                    int limit) override;

 private:
  SqliteBatchStore(std::string path, std::unique_ptr<internal::LockFile> lock,
                   std::unique_ptr<internal::SqliteDb> db, int recovered);

  absl::StatusOr<JobInfo> GetJobLocked(int64_t seq) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status FinishAttempt(std::string_view job_id, int index, int attempt, Outcome outcome,
                             std::string_view payload, bool retryable) override;
  absl::StatusOr<std::vector<JobInfo>> ListJobsWhere(int limit, const std::string* tenant) override;

  const std::string path_;
  const int recovered_items_;
  Mutex mu_;
  std::unique_ptr<internal::LockFile> lock_;  // released after db_ is closed
  std::unique_ptr<internal::SqliteDb> db_ ABSL_GUARDED_BY(mu_);
};

}  // namespace dapq::coordinator

#endif  // DAPQ_COORDINATOR_SQLITE_BATCH_STORE_H_
