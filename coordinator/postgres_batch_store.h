// File: coordinator/postgres_batch_store.h
// PostgresBatchStore: the BatchStore of several coordinators sharing one PostgreSQL database
// (issue #17), through libpq. Same contract as the SQLite store (batch_store.h: item lifecycle,
// job states, attempt fencing, error codes; ExportResultsJsonl is the base class's), with these
// differences:
//
// Several owners. Each store is one coordinator, an "owner" with an id (hostname-pid-random)
// registered in dapq_owners. A heartbeat thread, on its own connection, refreshes the owner's
// last_seen every heartbeat_interval (at most owner_ttl / 4) with the server's clock (now()),
// so coordinators' clocks never matter. Claimed items record their owner. ClaimItems (and Open)
// first put back items running under owners whose last_seen is older than owner_ttl (or that
// are gone): pending without counting the attempt, cancelled for cancelled jobs; they add to
// recovered_items(). Items of live owners are never touched. Destroying a store unregisters its
// owner, so its running items are reclaimed by the next claim anywhere; a coordinator that dies
// leaves them until owner_ttl has passed.
//
// Claims: SELECT ... FOR UPDATE SKIP LOCKED in one transaction, oldest job first then index, so
// any number of coordinators claim disjoint items. CompleteItem / FailItem / ReleaseItem are
// fenced by (state running, attempts == attempt, owner is this store): only one completion of
// an item can ever commit, and a coordinator whose items were reclaimed (it was taken for dead)
// gets FailedPrecondition for them. Job ids come from a BIGSERIAL: monotonic, never reused.
//
// Concurrency between coordinators (READ COMMITTED plus row locks): a transaction that can
// finish a job, requeue an item or cancel locks the job row (FOR UPDATE) and decides only after
// holding it, so the last of several concurrent completions always sees the others and
// finishes the job exactly once, and no item is requeued into a cancelled job. Locks are taken
// items first, then job rows in ascending order; a cancel updates pending items before and
// again after locking the job. A deadlock or serialization failure re-runs the transaction.
//
// Lost connections and server restarts: a call that finds the connection broken reconnects
// (backing off 100 ms .. 1 s) for up to reconnect_timeout and re-runs its transaction. When
// the answer to the COMMIT itself was lost, a random marker the transaction wrote
// (dapq_commits) tells, after reconnecting, whether it committed. (Transaction ids cannot:
// after a crash the server may give the lost transaction's id to a new one, and
// pg_xact_status would then report someone else's commit.) First the old session must be gone:
// one that still runs (the network failed, not the server) is terminated, which settles its
// transaction. Committed means the call succeeded and returns what it computed (e.g. the
// claimed items), never a second claim or completion; rolled back means it runs again. If
// even that cannot be learned in time the call fails Unavailable and the store takes a new
// owner id, so anything a lost claim left running under the old id is reclaimed after
// owner_ttl (claims made under the old id can still be completed until then).
//
// Errors: as batch_store.h; InvalidArgument for a malformed URL or options; Unavailable when
// the server cannot be reached within reconnect_timeout (naming host:port/db, never the
// password); FailedPrecondition for a schema newer than this build. path() is the URL with its
// password replaced by "***".
// Thread-safety: thread-safe; calls are serialised on one connection behind a mutex (use one
// store per process and several processes to scale out).
#ifndef DAPQ_COORDINATOR_POSTGRES_BATCH_STORE_H_
#define DAPQ_COORDINATOR_POSTGRES_BATCH_STORE_H_

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/mutex.h"
#include "coordinator/batch_store.h"

namespace dapq::coordinator {

namespace internal {
class PgConnection;
class PgUrl;
}  // namespace internal

struct PostgresBatchStoreOptions {
  // A coordinator not heard from for this long is taken for dead: its running items go back.
  std::chrono::milliseconds owner_ttl{10'000};
  // How often the heartbeat refreshes last_seen; at most owner_ttl / 4 is used.
  std::chrono::milliseconds heartbeat_interval{1'000};
  // How long one call keeps reconnecting to an unreachable server before Unavailable.
  std::chrono::milliseconds reconnect_timeout{30'000};
};

class PostgresBatchStore final : public BatchStore {
 public:
  // Connects (retrying up to reconnect_timeout), creates or migrates the schema, registers the
  // owner, reclaims items of dead owners and starts the heartbeat.
  static absl::StatusOr<std::unique_ptr<PostgresBatchStore>> Open(
      const std::string& url, const PostgresBatchStoreOptions& options = {});
  ~PostgresBatchStore() override;
  PostgresBatchStore(const PostgresBatchStore&) = delete;
  PostgresBatchStore& operator=(const PostgresBatchStore&) = delete;

  // Items this store put back from dead owners, since Open (Open's included).
  int recovered_items() const override { return recovered_items_.load(); }
  const std::string& path() const override { return redacted_url_; }
  // This store's current owner id (it changes only after a commit of unknown outcome).
  std::string owner_id() const;

  absl::StatusOr<std::string> CreateJob(const JobSpec& spec,
                                        const std::vector<std::string>& item_requests) override;
  absl::StatusOr<JobInfo> GetJob(std::string_view id) override;
  absl::Status CancelJob(std::string_view id) override;
  absl::StatusOr<std::vector<ClaimedItem>> ClaimItems(int n) override;
  absl::StatusOr<std::vector<ItemRecord>> ListItems(std::string_view job_id, int from_index,
                                                    int limit) override;

 private:
  // kRead: statements run on their own (no transaction) and are simply re-run after a lost
  // connection. kWrite: BEGIN .. COMMIT, with a lost COMMIT resolved by its commit marker.
  enum class TxMode { kRead, kWrite };
  using Body = absl::FunctionRef<absl::Status(internal::PgConnection*)>;

  PostgresBatchStore(std::unique_ptr<internal::PgUrl> url, const PostgresBatchStoreOptions& options,
                     std::string owner_id);

  // Runs `body` (which must reset whatever it outputs: it may run more than once) with the
  // reconnect and retry policy above. `what` names the call in errors.
  absl::Status Transact(std::string_view what, TxMode mode, Body body) ABSL_LOCKS_EXCLUDED(mu_);
  // Connects if there is no usable connection, retrying until `deadline`.
  absl::Status EnsureConnectedLocked(std::chrono::steady_clock::time_point deadline)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Whether the transaction that wrote commit marker `token` in the server session
  // (`backend_pid`, `backend_start`) committed: once that session is gone (ended here if it
  // still runs), the marker exists exactly when it did. Asks (reconnecting) until `deadline`.
  absl::StatusOr<bool> CommittedLocked(const std::string& token, int backend_pid,
                                       const std::string& backend_start,
                                       std::chrono::steady_clock::time_point deadline)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Puts back items running under dead owners (inside the caller's transaction).
  absl::StatusOr<int> ReclaimLostItems(internal::PgConnection* conn);
  absl::Status FinishAttempt(std::string_view job_id, int index, int attempt, Outcome outcome,
                             std::string_view payload, bool retryable) override;
  absl::StatusOr<std::vector<JobInfo>> ListJobsWhere(int limit, const std::string* tenant) override;
  // Owner ids this store has used (the current one last), for the claim fence.
  std::vector<std::string> OwnerIds() const;
  void HeartbeatLoop();

  const std::unique_ptr<internal::PgUrl> url_;
  const std::string redacted_url_;
  const PostgresBatchStoreOptions options_;
  const std::chrono::milliseconds heartbeat_period_;
  std::atomic<int> recovered_items_{0};

  mutable Mutex ids_mu_;
  std::vector<std::string> owner_ids_ ABSL_GUARDED_BY(ids_mu_);
  // Whether the current owner id has its dapq_owners row (Open's, or a claim's after a change).
  bool owner_registered_ ABSL_GUARDED_BY(ids_mu_) = false;

  Mutex mu_;
  std::unique_ptr<internal::PgConnection> conn_ ABSL_GUARDED_BY(mu_);
  bool opened_ ABSL_GUARDED_BY(mu_) = false;  // Open finished: the destructor unregisters
  // The commit marker of this store's last acknowledged commit; the next write drops it.
  std::string last_token_ ABSL_GUARDED_BY(mu_);

  Mutex heartbeat_mu_;
  CondVar heartbeat_cv_;
  bool stop_ ABSL_GUARDED_BY(heartbeat_mu_) = false;
  std::thread heartbeat_;
};

// The BatchStore of a postgres:// or postgresql:// URL (BatchStore::Open dispatches here).
absl::StatusOr<std::unique_ptr<BatchStore>> OpenPostgresBatchStore(
    const std::string& url, const PostgresBatchStoreOptions& options = {});

}  // namespace dapq::coordinator

#endif  // DAPQ_COORDINATOR_POSTGRES_BATCH_STORE_H_
