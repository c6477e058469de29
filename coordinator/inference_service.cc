// File: coordinator/inference_service.cc
// InferenceService and RegistryService.
#include "coordinator/inference_service.h"

#include <grpcpp/grpcpp.h>

#include "api/request_rules.h"
#include "api/tenant_scope.h"
#include "common/grpc_status.h"
#include "common/status_macros.h"

namespace dapq::coordinator {

absl::StatusOr<dapq::v1::GenerateRequest> ScopeToTenant(const dapq::v1::GenerateRequest& request,
                                                        const std::string& tenant) {
  dapq::v1::GenerateRequest scoped = request;
  if (!tenant.empty() && !request.session_id().empty()) {
    // The client's id is checked as sent; its scoped form always has the id syntax.
    DAPQ_RETURN_IF_ERROR(api::ValidateSessionId(request.session_id()));
    scoped.set_session_id(api::ScopedSessionId(tenant, request.session_id()));
  }
  return scoped;
}

grpc::Status RunWithMetrics(RequestRouter* router, CoordinatorMetrics* metrics,
                            const dapq::v1::GenerateRequest& request,
                            std::chrono::system_clock::time_point deadline,
                            const std::function<bool()>& cancelled,
                            const std::function<bool(const dapq::v1::GenerateResponse&)>& sink,
                            RunInfo* info) {
  const auto start = std::chrono::steady_clock::now();
  bool first = true;
  const grpc::Status status = router->Run(
      request, deadline, cancelled,
      [&](const dapq::v1::GenerateResponse& r) {
        if (first && r.token_ids_size() > 0 && metrics != nullptr) {
          first = false;
          metrics->ObserveTtft(
              std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
        }
        return sink(r);
      },
      info);
  if (metrics != nullptr) metrics->OnRequest(status);
  return status;
}

namespace {

grpc::Status RunForClient(RequestRouter* router, CoordinatorMetrics* metrics,
                          const TenantAuth* auth, TenantLimiter* limiter,
                          grpc::ServerContext* context, const dapq::v1::GenerateRequest& request,
                          const std::function<bool(const dapq::v1::GenerateResponse&)>& sink) {
  absl::StatusOr<std::string> tenant = CallTenant(auth, *context);
  if (!tenant.ok()) {
    const grpc::Status denied = ToGrpcStatus(tenant.status());
    if (metrics != nullptr) metrics->OnRequest(denied);
    return denied;
  }
  absl::StatusOr<dapq::v1::GenerateRequest> scoped = ScopeToTenant(request, *tenant);
  if (!scoped.ok()) return ToGrpcStatus(scoped.status());
  TenantLimiter::Slot slot;
  if (limiter != nullptr) {
    if (absl::Status s = limiter->Acquire(*tenant, &slot); !s.ok()) {
      context->AddTrailingMetadata("retry-after-ms", "200");
      const grpc::Status limited = ToGrpcStatus(s);
      if (metrics != nullptr) metrics->OnRequest(limited);
      return limited;
    }
  }
  RunInfo info;
  const grpc::Status status = RunWithMetrics(
      router, metrics, *scoped, context->deadline(), [context] { return context->IsCancelled(); },
      sink, &info);
  if (!info.retry_after_ms.empty()) {
    context->AddTrailingMetadata("retry-after-ms", info.retry_after_ms);
  }
  return status;
}

}  // namespace

void AppendToCompletion(const dapq::v1::GenerateResponse& part, dapq::v1::CompleteResponse* out) {
  out->mutable_token_ids()->MergeFrom(part.token_ids());
  out->mutable_text()->append(part.text());
  if (part.has_summary()) *out->mutable_summary() = part.summary();
}

grpc::Status InferenceService::Generate(grpc::ServerContext* context,
                                        const dapq::v1::GenerateRequest* request,
                                        grpc::ServerWriter<dapq::v1::GenerateResponse>* writer) {
  return RunForClient(router_, metrics_, auth_, limiter_, context, *request,
                      [writer](const dapq::v1::GenerateResponse& r) { return writer->Write(r); });
}

grpc::Status InferenceService::Complete(grpc::ServerContext* context,
                                        const dapq::v1::GenerateRequest* request,
                                        dapq::v1::CompleteResponse* response) {
  return RunForClient(router_, metrics_, auth_, limiter_, context, *request,
                      [response](const dapq::v1::GenerateResponse& r) {
                        AppendToCompletion(r, response);
                        return true;
                      });
}

grpc::Status RegistryService::Heartbeat(grpc::ServerContext*,
                                        const dapq::v1::HeartbeatRequest* request,
                                        dapq::v1::HeartbeatResponse* response) {
  if (absl::Status s = registry_->Heartbeat(request->status()); !s.ok()) {
    return ToGrpcStatus(s);
  }
  response->set_interval_ms(interval_.count());
  return grpc::Status::OK;
}

}  // namespace dapq::coordinator
