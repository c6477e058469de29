// File: coordinator/batch_runner.h
// Runs the items of batch jobs from the BatchStore on the worker groups: as many items at once
// as the healthy groups batch together (their reported batch capacity, at least
// `items_per_group` each; at most `threads`), each through the RequestRouter like any request. An
// item's result is committed with its attempt number, so an item never completes twice; a group
// failure retries it (bounded by the job's max_attempts), a bad request fails it at once, and an
// item that could not start (no healthy group, queues full) goes back to pending without counting
// an attempt. A store that is unavailable when an attempt ends is asked again until it answers.
// A job's results are written to its output_path when it finishes. Thread-safety:
// thread-safe; owns its threads (joined by the destructor).
#ifndef DAPQ_COORDINATOR_BATCH_RUNNER_H_
#define DAPQ_COORDINATOR_BATCH_RUNNER_H_

#include <atomic>
#include <chrono>
#include <functional>
#include <thread>
#include <vector>

#include "common/mutex.h"
#include "coordinator/batch_store.h"
#include "coordinator/group_registry.h"
#include "coordinator/request_router.h"

namespace dapq::coordinator {

struct BatchRunnerOptions {
  int items_per_group = 2;
  int threads = 64;  // most items running at once
  std::chrono::milliseconds poll{200};
};

class BatchRunner {
 public:
  BatchRunner(BatchStore* store, RequestRouter* router, GroupRegistry* registry,
              const BatchRunnerOptions& options);
  ~BatchRunner();

  // Starts the threads; first writes the output files of jobs that finished before a crash.
  void Start();
  // A job was submitted or cancelled: look for items now.
  void Wake();
  // Waits until an item finishes or `timeout` passes.
  void WaitForProgress(std::chrono::milliseconds timeout);
  // Writes a finished job's results file if it is not there yet (the runner writes it right
  // after the last item; a client told "finished" may ask first). Idempotent: the file is
  // replaced atomically with the same content.
  void EnsureResultsWritten(const JobInfo& job);
  // Item attempts that failed since start (metrics).
  const std::atomic<int64_t>& item_failures() const { return item_failures_; }
  // Batch store calls that failed since start (each try counts; metrics): claiming items, and
  // committing an attempt's end (complete, fail, release).
  const std::atomic<int64_t>& claim_errors() const { return claim_errors_; }
  const std::atomic<int64_t>& commit_errors() const { return commit_errors_; }

 private:
  void Loop();
  void RunItem(const ClaimedItem& item);
  void ExportIfFinished(const std::string& job_id);
  // Runs a call that ends an item's attempt, again every second while the store is unavailable
  // (until it answers or the runner stops).
  absl::Status Commit(const char* what, const std::function<absl::Status()>& call);

  BatchStore* const store_;
  RequestRouter* const router_;
  GroupRegistry* const registry_;
  const BatchRunnerOptions options_;
  std::atomic<bool> stop_{false};
  std::atomic<int64_t> item_failures_{0};
  std::atomic<int64_t> claim_errors_{0};
  std::atomic<int64_t> commit_errors_{0};
  Mutex mu_;
  CondVar cv_;
  int running_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t wakes_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t progress_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<std::thread> threads_;
};

// The JSON line of a succeeded item: {"index", "text", "token_ids", "summary"}.
std::string ItemResultJson(int index, const dapq::v1::CompleteResponse& response);

}  // namespace dapq::coordinator

#endif  // DAPQ_COORDINATOR_BATCH_RUNNER_H_
