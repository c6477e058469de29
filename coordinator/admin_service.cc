// File: coordinator/admin_service.cc
// AdminService.
#include "coordinator/admin_service.h"

#include <grpcpp/grpcpp.h>

#include "common/grpc_status.h"

namespace dapq::coordinator {

grpc::Status AdminService::ClusterStatus(grpc::ServerContext* context,
                                         const dapq::v1::ClusterStatusRequest*,
                                         dapq::v1::ClusterStatusResponse* response) {
  if (absl::StatusOr<std::string> tenant = CallTenant(auth_, *context); !tenant.ok()) {
    return ToGrpcStatus(tenant.status());
  }
  bool ready = false;
  for (dapq::v1::GroupStatus& g : registry_->Snapshot()) {
    ready = ready || g.healthy();
    *response->add_groups() = std::move(g);
  }
  response->set_ready(ready);
  response->set_queue_depth(router_->in_flight());
  response->set_queue_capacity(router_->capacity());
  response->set_rejected_total(router_->rejected_total());
  if (absl::StatusOr<std::vector<JobInfo>> jobs = store_->ListJobs(1000); jobs.ok()) {
    int open = 0;
    for (const JobInfo& j : *jobs) open += j.finished() ? 0 : 1;
    response->set_batch_jobs_open(open);
  }
  return grpc::Status::OK;
}

}  // namespace dapq::coordinator
