// File: coordinator/admin_service.h
// dapq.v1.Admin: the cluster as the coordinator sees it (groups, health, load, KV usage,
// admission figures, open batch jobs).
// Thread-safety: thread-safe.
#ifndef DAPQ_COORDINATOR_ADMIN_SERVICE_H_
#define DAPQ_COORDINATOR_ADMIN_SERVICE_H_

#include "coordinator/batch_store.h"
#include "coordinator/group_registry.h"
#include "coordinator/request_router.h"
#include "coordinator/tenant_auth.h"
#include "dapq/v1/admin.grpc.pb.h"

namespace dapq::coordinator {

class AdminService final : public dapq::v1::Admin::Service {
 public:
  // `auth` may be null (authentication off); otherwise every call needs a valid token.
  AdminService(GroupRegistry* registry, RequestRouter* router, BatchStore* store,
               const TenantAuth* auth = nullptr)
      : registry_(registry), router_(router), store_(store), auth_(auth) {}
  grpc::Status ClusterStatus(grpc::ServerContext* context,
                             const dapq::v1::ClusterStatusRequest* request,
                             dapq::v1::ClusterStatusResponse* response) override;

 private:
  GroupRegistry* const registry_;
  RequestRouter* const router_;
  BatchStore* const store_;
  const TenantAuth* const auth_;
};

}  // namespace dapq::coordinator

#endif  // DAPQ_COORDINATOR_ADMIN_SERVICE_H_
