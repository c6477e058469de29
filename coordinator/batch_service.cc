// File: coordinator/batch_service.cc
// BatchService; submitted items are parsed and checked by api/batch_items.h.
#include "coordinator/batch_service.h"

#include <grpcpp/grpcpp.h>

#include <fstream>

#include "absl/strings/str_cat.h"
#include "api/batch_items.h"
#include "api/tenant_scope.h"
#include "common/grpc_status.h"
#include "common/status_macros.h"

namespace dapq::coordinator {
namespace {

absl::StatusOr<std::vector<dapq::v1::GenerateRequest>> ReadJsonl(const BatchPaths& paths,
                                                                 const std::string& path) {
  if (path.empty() || path[0] != '/') {
    return absl::InvalidArgumentError(
        absl::StrCat("jsonl_path: '", path, "' must be an absolute path on the coordinator"));
  }
  DAPQ_ASSIGN_OR_RETURN(const std::string resolved, paths.Input(path, "jsonl_path"));
  std::ifstream in(resolved);
  if (!in) return absl::NotFoundError(absl::StrCat("jsonl_path: cannot open '", path, "'"));
  return api::ReadBatchItems(in, "jsonl_path");
}

grpc::Status FromAbsl(const absl::Status& s) { return ToGrpcStatus(s); }

}  // namespace

dapq::v1::BatchJob ToBatchJob(const JobInfo& info) {
  dapq::v1::BatchJob j;
  j.set_job_id(info.id);
  j.set_name(info.spec.name);
  j.set_state(std::string(JobStateName(info.state)));
  j.set_total(info.total);
  j.set_pending(info.pending);
  j.set_running(info.running);
  j.set_succeeded(info.succeeded);
  j.set_failed(info.failed);
  j.set_cancelled(info.cancelled);
  j.set_created_unix_ms(info.created_unix_ms);
  j.set_finished_unix_ms(info.finished_unix_ms);
  j.set_output_path(info.spec.output_path);
  return j;
}

absl::StatusOr<std::vector<dapq::v1::GenerateRequest>> BatchItems(
    const dapq::v1::SubmitBatchRequest& request, int max_seq_len, const BatchPaths& paths) {
  const bool inline_items = request.items_size() > 0;
  if (inline_items == !request.jsonl_path().empty()) {
    return absl::InvalidArgumentError("items / jsonl_path: set exactly one of the two");
  }
  std::vector<dapq::v1::GenerateRequest> items;
  if (inline_items) {
    items.assign(request.items().begin(), request.items().end());
  } else {
    absl::StatusOr<std::vector<dapq::v1::GenerateRequest>> read =
        ReadJsonl(paths, request.jsonl_path());
    if (!read.ok()) return read.status();
    if (read->empty()) return absl::InvalidArgumentError("jsonl_path: the file holds no items");
    items = std::move(*read);
  }
  DAPQ_RETURN_IF_ERROR(api::ApplyBatchDefaults(
      request.defaults(), max_seq_len,
      [inline_items](size_t i) {
        return inline_items ? absl::StrCat("items[", i, "].")
                            : absl::StrCat("jsonl_path item ", i + 1, ": ");
      },
      items));
  return items;
}

absl::StatusOr<JobInfo> BatchService::OwnJob(const std::string& job_id,
                                             const std::string& tenant) const {
  absl::StatusOr<JobInfo> job = store_->GetJob(job_id);
  // Another tenant's job is answered like a job that does not exist: nothing leaks.
  if (job.ok() && job->spec.tenant != tenant) {
    return absl::NotFoundError(absl::StrCat("job ", job_id, " not found"));
  }
  return job;
}

grpc::Status BatchService::SubmitBatch(grpc::ServerContext* context,
                                       const dapq::v1::SubmitBatchRequest* request,
                                       dapq::v1::SubmitBatchResponse* response) {
  absl::StatusOr<std::string> tenant = CallTenant(auth_, *context);
  if (!tenant.ok()) return FromAbsl(tenant.status());
  if (request->max_attempts() < 0 || request->max_attempts() > 10) {
    return grpc::Status(
        grpc::StatusCode::INVALID_ARGUMENT,
        absl::StrCat("max_attempts=", request->max_attempts(), " must be in [0, 10] (0 = 3)"));
  }
  if (!request->output_path().empty() && request->output_path()[0] != '/') {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "output_path: must be an absolute path on the coordinator");
  }
  std::string output_path;
  if (!request->output_path().empty()) {
    absl::StatusOr<std::string> out = paths_.Output(request->output_path(), "output_path");
    if (!out.ok()) return FromAbsl(out.status());
    output_path = *std::move(out);
  }
  absl::StatusOr<std::vector<dapq::v1::GenerateRequest>> items =
      BatchItems(*request, registry_->min_max_seq_len(), paths_);
  if (!items.ok()) return FromAbsl(items.status());
  for (dapq::v1::GenerateRequest& item : *items) {  // sessions are the tenant's own
    item.set_session_id(api::ScopedSessionId(*tenant, item.session_id()));
  }
  JobSpec spec;
  spec.tenant = *tenant;
  spec.name = request->name();
  spec.output_path = output_path;
  spec.max_attempts = request->max_attempts() == 0 ? 3 : request->max_attempts();
  std::vector<std::string> serialized;
  serialized.reserve(items->size());
  for (const auto& item : *items) serialized.push_back(item.SerializeAsString());
  absl::StatusOr<std::string> id = store_->CreateJob(spec, serialized);
  if (!id.ok()) return FromAbsl(id.status());
  response->set_job_id(*id);
  response->set_items(static_cast<int>(serialized.size()));
  runner_->Wake();
  return grpc::Status::OK;
}

grpc::Status BatchService::GetBatch(grpc::ServerContext* context,
                                    const dapq::v1::GetBatchRequest* request,
                                    dapq::v1::BatchJob* response) {
  absl::StatusOr<std::string> tenant = CallTenant(auth_, *context);
  if (!tenant.ok()) return FromAbsl(tenant.status());
  absl::StatusOr<JobInfo> job = OwnJob(request->job_id(), *tenant);
  if (!job.ok()) return FromAbsl(job.status());
  runner_->EnsureResultsWritten(*job);  // "finished" implies the results file is there
  *response = ToBatchJob(*job);
  return grpc::Status::OK;
}

grpc::Status BatchService::ListBatches(grpc::ServerContext* context,
                                       const dapq::v1::ListBatchesRequest* request,
                                       dapq::v1::ListBatchesResponse* response) {
  absl::StatusOr<std::string> tenant = CallTenant(auth_, *context);
  if (!tenant.ok()) return FromAbsl(tenant.status());
  if (request->limit() < 0) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "limit must be >= 0");
  }
  absl::StatusOr<std::vector<JobInfo>> jobs =
      store_->ListTenantJobs(request->limit() == 0 ? 100 : request->limit(), *tenant);
  if (!jobs.ok()) return FromAbsl(jobs.status());
  for (const JobInfo& j : *jobs) *response->add_jobs() = ToBatchJob(j);
  return grpc::Status::OK;
}

grpc::Status BatchService::CancelBatch(grpc::ServerContext* context,
                                       const dapq::v1::CancelBatchRequest* request,
                                       dapq::v1::BatchJob* response) {
  absl::StatusOr<std::string> tenant = CallTenant(auth_, *context);
  if (!tenant.ok()) return FromAbsl(tenant.status());
  if (absl::StatusOr<JobInfo> own = OwnJob(request->job_id(), *tenant); !own.ok()) {
    return FromAbsl(own.status());
  }
  if (absl::Status s = store_->CancelJob(request->job_id()); !s.ok()) return FromAbsl(s);
  runner_->Wake();
  absl::StatusOr<JobInfo> job = store_->GetJob(request->job_id());
  if (!job.ok()) return FromAbsl(job.status());
  *response = ToBatchJob(*job);
  return grpc::Status::OK;
}

grpc::Status BatchService::StreamBatchResults(
    grpc::ServerContext* context, const dapq::v1::StreamBatchResultsRequest* request,
    grpc::ServerWriter<dapq::v1::BatchItemResult>* writer) {
  absl::StatusOr<std::string> tenant = CallTenant(auth_, *context);
  if (!tenant.ok()) return FromAbsl(tenant.status());
  int next = 0;
  while (true) {
    absl::StatusOr<JobInfo> job = OwnJob(request->job_id(), *tenant);
    if (!job.ok()) return FromAbsl(job.status());
    absl::StatusOr<std::vector<ItemRecord>> items = store_->ListItems(request->job_id(), next, 256);
    if (!items.ok()) return FromAbsl(items.status());
    bool blocked = false;  // stopped at an item still pending or running
    for (const ItemRecord& item : *items) {
      if (item.state == ItemState::kPending || item.state == ItemState::kRunning) {
        blocked = true;
        break;
      }
      dapq::v1::BatchItemResult r;
      r.set_index(item.index);
      r.set_state(std::string(ItemStateName(item.state)));
      r.set_result_json(item.result);
      r.set_error(item.error);
      r.set_attempts(item.attempts);
      if (!writer->Write(r)) return grpc::Status(grpc::StatusCode::CANCELLED, "client went away");
      next = item.index + 1;
    }
    if (next >= job->total) {
      // Every item is final, so the job is finished: its results file exists before we say so.
      if (absl::StatusOr<JobInfo> done = store_->GetJob(request->job_id()); done.ok()) {
        runner_->EnsureResultsWritten(*done);
      }
      return grpc::Status::OK;
    }
    if (!blocked && !items->empty()) continue;  // the next page
    if (!request->follow()) return grpc::Status::OK;
    if (context->IsCancelled()) return grpc::Status(grpc::StatusCode::CANCELLED, "cancelled");
    if (job->finished()) continue;  // cancelled items are final too: read on
    runner_->WaitForProgress(std::chrono::milliseconds(200));
  }
}

}  // namespace dapq::coordinator
