// File: coordinator/inference_service.h
// dapq.v1.Inference on the coordinator (streaming Generate and unary Complete through the
// RequestRouter) and dapq.v1.Registry (worker groups' heartbeats into the GroupRegistry).
// Thread-safety: gRPC calls these from many threads; the router and registry are thread-safe.
#ifndef DAPQ_COORDINATOR_INFERENCE_SERVICE_H_
#define DAPQ_COORDINATOR_INFERENCE_SERVICE_H_

#include "coordinator/coordinator_metrics.h"
#include "coordinator/request_router.h"
#include "coordinator/tenant_auth.h"
#include "coordinator/tenant_limiter.h"
#include "dapq/v1/inference.grpc.pb.h"
#include "dapq/v1/worker.grpc.pb.h"

namespace dapq::coordinator {

class InferenceService final : public dapq::v1::Inference::Service {
 public:
  // `metrics` may be null; so may `auth` (authentication off: every caller is tenant "").
  // `limiter` (may be null) bounds each tenant's requests in flight.
  InferenceService(RequestRouter* router, CoordinatorMetrics* metrics,
                   const TenantAuth* auth = nullptr, TenantLimiter* limiter = nullptr)
      : router_(router), metrics_(metrics), auth_(auth), limiter_(limiter) {}
  grpc::Status Generate(grpc::ServerContext* context, const dapq::v1::GenerateRequest* request,
                        grpc::ServerWriter<dapq::v1::GenerateResponse>* writer) override;
  grpc::Status Complete(grpc::ServerContext* context, const dapq::v1::GenerateRequest* request,
                        dapq::v1::CompleteResponse* response) override;

 private:
  RequestRouter* const router_;
  CoordinatorMetrics* const metrics_;
  const TenantAuth* const auth_;
  TenantLimiter* const limiter_;
};

class RegistryService final : public dapq::v1::Registry::Service {
 public:
  RegistryService(GroupRegistry* registry, std::chrono::milliseconds interval)
      : registry_(registry), interval_(interval) {}
  grpc::Status Heartbeat(grpc::ServerContext* context, const dapq::v1::HeartbeatRequest* request,
                         dapq::v1::HeartbeatResponse* response) override;

 private:
  GroupRegistry* const registry_;
  const std::chrono::milliseconds interval_;
};

// `request` as the worker groups see it: its session id scoped to `tenant`
// (api/tenant_scope.h). InvalidArgument for a malformed client session id.
absl::StatusOr<dapq::v1::GenerateRequest> ScopeToTenant(const dapq::v1::GenerateRequest& request,
                                                        const std::string& tenant);

// Runs `request` through `router` for a client of either API (gRPC or HTTP), recording the
// coordinator's request and TTFT metrics (`metrics` may be null).
grpc::Status RunWithMetrics(RequestRouter* router, CoordinatorMetrics* metrics,
                            const dapq::v1::GenerateRequest& request,
                            std::chrono::system_clock::time_point deadline,
                            const std::function<bool()>& cancelled,
                            const std::function<bool(const dapq::v1::GenerateResponse&)>& sink,
                            RunInfo* info);

// Appends one streamed message to a completion being collected.
void AppendToCompletion(const dapq::v1::GenerateResponse& part, dapq::v1::CompleteResponse* out);

}  // namespace dapq::coordinator

#endif  // DAPQ_COORDINATOR_INFERENCE_SERVICE_H_
