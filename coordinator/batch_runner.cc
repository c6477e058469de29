// File: coordinator/batch_runner.cc
// BatchRunner: claim, run, commit.
#include "coordinator/batch_runner.h"

#include <google/protobuf/util/json_util.h>
#include <unistd.h>

#include <algorithm>

#include "common/logging.h"
#include "coordinator/inference_service.h"
#include "nlohmann/json.hpp"

namespace dapq::coordinator {

std::string ItemResultJson(int index, const dapq::v1::CompleteResponse& response) {
  std::string summary;
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(response.summary(), &summary, options);
  nlohmann::json j;
  j["index"] = index;
  j["text"] = response.text();
  j["token_ids"] = std::vector<int>(response.token_ids().begin(), response.token_ids().end());
  j["summary"] = nlohmann::json::parse(summary, nullptr, /*allow_exceptions=*/false);
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

BatchRunner::BatchRunner(BatchStore* store, RequestRouter* router, GroupRegistry* registry,
                         const BatchRunnerOptions& options)
    : store_(store), router_(router), registry_(registry), options_(options) {}

BatchRunner::~BatchRunner() {
  stop_.store(true);
  Wake();
  for (auto& t : threads_) t.join();
}

void BatchRunner::Start() {
  if (absl::StatusOr<std::vector<JobInfo>> jobs = store_->ListJobs(1000); jobs.ok()) {
    for (const JobInfo& job : *jobs) {
      if (job.finished() && !job.spec.output_path.empty() &&
          access(job.spec.output_path.c_str(), F_OK) != 0) {
        ExportIfFinished(job.id);
      }
    }
  }
  for (int i = 0; i < options_.threads; ++i) threads_.emplace_back([this] { Loop(); });
}

void BatchRunner::Wake() {
  MutexLock lock(&mu_);
  ++wakes_;
  cv_.SignalAll();
}

void BatchRunner::WaitForProgress(std::chrono::milliseconds timeout) {
  MutexLock lock(&mu_);
  const uint64_t seen = progress_;
  cv_.WaitFor(&mu_, timeout, [&] { return progress_ != seen || stop_.load(); });
}

void BatchRunner::Loop() {
  uint64_t seen_wakes = 0;
  while (!stop_.load()) {
    {
      MutexLock lock(&mu_);
      // Each group as much as it batches (at least items_per_group), within the threads.
      const int limit =
          std::min(options_.threads, registry_->batch_capacity(options_.items_per_group));
      if (running_ >= limit) {
        cv_.WaitFor(&mu_, options_.poll, [&] { return stop_.load() || wakes_ != seen_wakes; });
        seen_wakes = wakes_;
        continue;
      }
      ++running_;
      seen_wakes = wakes_;
    }
    absl::StatusOr<std::vector<ClaimedItem>> items = store_->ClaimItems(1);
    if (!items.ok()) {
      claim_errors_.fetch_add(1);
      DAPQ_LOG(ERROR) << "batch: claiming items: " << items.status();
    }
    const bool idle = !items.ok() || items->empty();
    if (!idle) RunItem(items->front());
    MutexLock lock(&mu_);
    --running_;
    if (!idle) {
      ++progress_;
      cv_.SignalAll();
    } else {
      cv_.WaitFor(&mu_, options_.poll, [&] { return stop_.load() || wakes_ != seen_wakes; });
      seen_wakes = wakes_;
    }
  }
}

absl::Status BatchRunner::Commit(const char* what, const std::function<absl::Status()>& call) {
  // A store that is unreachable (a PostgreSQL restart) is asked again until it answers: the
  // item stays running under this coordinator meanwhile, so giving up would strand it.
  for (int tries = 1;; ++tries) {
    absl::Status s = call();
    if (s.ok() || !absl::IsUnavailable(s) || stop_.load()) {
      if (!s.ok()) commit_errors_.fetch_add(1);
      return s;
    }
    commit_errors_.fetch_add(1);
    DAPQ_LOG(WARNING) << "batch store: " << what << " (try " << tries << "): " << s;
    MutexLock lock(&mu_);
    cv_.WaitFor(&mu_, std::chrono::seconds(1), [&] { return stop_.load(); });
  }
}

void BatchRunner::RunItem(const ClaimedItem& item) {
  dapq::v1::GenerateRequest request;
  absl::Status done;
  if (!request.ParseFromString(item.request)) {
    done = Commit("failing an item", [&] {
      return store_->FailItem(item.job_id, item.index, item.attempt, "unparsable stored request",
                              /*retryable=*/false);
    });
  } else {
    dapq::v1::CompleteResponse response;
    RunInfo info;
    const grpc::Status status = router_->Run(
        request, std::chrono::system_clock::time_point::max(), [this] { return stop_.load(); },
        [&response](const dapq::v1::GenerateResponse& r) {
          AppendToCompletion(r, &response);
          return true;
        },
        &info);
    if (status.ok()) {
      const std::string result = ItemResultJson(item.index, response);
      done = Commit("completing an item", [&] {
        return store_->CompleteItem(item.job_id, item.index, item.attempt, result);
      });
    } else if (stop_.load() || !info.admitted ||
               (status.error_code() == grpc::StatusCode::UNAVAILABLE && info.group_id.empty())) {
      // Never started (shutting down, queues full, no healthy group): not an attempt.
      done = Commit("releasing an item",
                    [&] { return store_->ReleaseItem(item.job_id, item.index, item.attempt); });
    } else {
      const bool retryable = IsGroupFailure(status) ||
                             status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED ||
                             status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED;
      item_failures_.fetch_add(1);
      done = Commit("failing an item", [&] {
        return store_->FailItem(item.job_id, item.index, item.attempt, status.error_message(),
                                retryable);
      });
      DAPQ_LOG(WARNING) << "batch " << item.job_id << " item " << item.index << " attempt "
                        << item.attempt << ": " << status.error_message();
    }
  }
  if (!done.ok()) {
    DAPQ_LOG(ERROR) << "batch " << item.job_id << " item " << item.index << ": " << done;
  }
  ExportIfFinished(item.job_id);
}

void BatchRunner::EnsureResultsWritten(const JobInfo& job) {
  if (job.finished() && !job.spec.output_path.empty() &&
      access(job.spec.output_path.c_str(), F_OK) != 0) {
    ExportIfFinished(job.id);
  }
}

void BatchRunner::ExportIfFinished(const std::string& job_id) {
  absl::StatusOr<JobInfo> job = store_->GetJob(job_id);
  if (!job.ok() || !job->finished() || job->spec.output_path.empty()) return;
  if (absl::Status s = store_->ExportResultsJsonl(job_id, job->spec.output_path); !s.ok()) {
    DAPQ_LOG(ERROR) << "batch " << job_id << ": writing results: " << s;
  }
}

}  // namespace dapq::coordinator
