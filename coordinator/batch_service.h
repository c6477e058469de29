// File: coordinator/batch_service.h
// dapq.v1.Batch on the coordinator: validates and stores submitted jobs (inline items or a JSONL
// file under the coordinator's batch directory, batch_paths.h; merged over the job's defaults),
// reports progress,
// cancels, and streams finished items' results in index order.
// Thread-safety: gRPC calls it from many threads; the store and runner are thread-safe.
#ifndef DAPQ_COORDINATOR_BATCH_SERVICE_H_
#define DAPQ_COORDINATOR_BATCH_SERVICE_H_

#include "coordinator/batch_paths.h"
#include "coordinator/batch_runner.h"
#include "coordinator/batch_store.h"
#include "coordinator/tenant_auth.h"
#include "dapq/v1/batch.grpc.pb.h"

namespace dapq::coordinator {

class BatchService final : public dapq::v1::Batch::Service {
 public:
  // `paths`: which server-side files clients may name (none by default). `auth` (may be null:
  // authentication off) names the tenant of every call; a tenant sees only its own jobs.
  BatchService(BatchStore* store, BatchRunner* runner, GroupRegistry* registry,
               BatchPaths paths = *BatchPaths::Create(""), const TenantAuth* auth = nullptr)
      : store_(store),
        runner_(runner),
        registry_(registry),
        paths_(std::move(paths)),
        auth_(auth) {}

  grpc::Status SubmitBatch(grpc::ServerContext* context,
                           const dapq::v1::SubmitBatchRequest* request,
                           dapq::v1::SubmitBatchResponse* response) override;
  grpc::Status GetBatch(grpc::ServerContext* context, const dapq::v1::GetBatchRequest* request,
                        dapq::v1::BatchJob* response) override;
  grpc::Status ListBatches(grpc::ServerContext* context,
                           const dapq::v1::ListBatchesRequest* request,
                           dapq::v1::ListBatchesResponse* response) override;
  grpc::Status CancelBatch(grpc::ServerContext* context,
                           const dapq::v1::CancelBatchRequest* request,
                           dapq::v1::BatchJob* response) override;
  grpc::Status StreamBatchResults(grpc::ServerContext* context,
                                  const dapq::v1::StreamBatchResultsRequest* request,
                                  grpc::ServerWriter<dapq::v1::BatchItemResult>* writer) override;

 private:
  BatchStore* const store_;
  BatchRunner* const runner_;
  GroupRegistry* const registry_;
  // The job when `tenant` submitted it; NOT_FOUND otherwise.
  absl::StatusOr<JobInfo> OwnJob(const std::string& job_id, const std::string& tenant) const;

  const BatchPaths paths_;
  const TenantAuth* const auth_;
};

// The items of a submission, merged over its defaults and validated (errors name items[i] or
// the JSONL line); a jsonl_path must pass `paths` (none by default).
absl::StatusOr<std::vector<dapq::v1::GenerateRequest>> BatchItems(
    const dapq::v1::SubmitBatchRequest& request, int max_seq_len,
    const BatchPaths& paths = *BatchPaths::Create(""));

dapq::v1::BatchJob ToBatchJob(const JobInfo& info);

}  // namespace dapq::coordinator

#endif  // DAPQ_COORDINATOR_BATCH_SERVICE_H_
