// File: coordinator/request_router.cc
// RequestRouter: admission, routing, streaming, cancellation watcher and retries.
#include "coordinator/request_router.h"

#include <grpcpp/grpcpp.h>

#include <thread>

#include "absl/strings/str_cat.h"
#include "api/request_rules.h"
#include "common/grpc_status.h"
#include "common/mutex.h"

namespace dapq::coordinator {
namespace {

// Cancels a group call when the caller's `cancelled` turns true (polled every 100 ms on a thread
// of its own, since the handler is blocked reading the group's stream; shorter intervals steal
// CPU from the workers on small machines).
class CancelWatcher {
 public:
  CancelWatcher(grpc::ClientContext* context, const std::function<bool()>& cancelled)
      : context_(context), cancelled_(cancelled) {
    if (cancelled_) thread_ = std::thread([this] { Run(); });
  }
  ~CancelWatcher() {
    {
      MutexLock lock(&mu_);
      done_ = true;
      cv_.SignalAll();
    }
    if (thread_.joinable()) thread_.join();
  }

 private:
  void Run() {
    MutexLock lock(&mu_);
    while (!cv_.WaitFor(&mu_, std::chrono::milliseconds(100), [&] { return done_; })) {
      if (cancelled_()) {
        context_->TryCancel();
        return;
      }
    }
  }
  grpc::ClientContext* const context_;
  const std::function<bool()>& cancelled_;
  Mutex mu_;
  CondVar cv_;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace

bool IsGroupFailure(const grpc::Status& status) {
  // Transport failures only (gRPC reports a lost connection as UNAVAILABLE, a reset stream as
  // UNKNOWN): an INTERNAL answer is about that request, which fails alone.
  return status.error_code() == grpc::StatusCode::UNAVAILABLE ||
         status.error_code() == grpc::StatusCode::UNKNOWN;
}

RequestRouter::RequestRouter(GroupRegistry* registry, const RequestRouterOptions& options)
    : registry_(registry), options_(options) {}

grpc::Status RequestRouter::Run(
    const dapq::v1::GenerateRequest& request, std::chrono::system_clock::time_point deadline,
    const std::function<bool()>& cancelled,
    const std::function<bool(const dapq::v1::GenerateResponse&)>& on_response, RunInfo* info) {
  RunInfo local;
  if (info == nullptr) info = &local;
  if (absl::Status s = api::ValidateGenerateRequest(request, registry_->min_max_seq_len());
      !s.ok()) {
    return ToGrpcStatus(s);
  }
  if (in_flight_.fetch_add(1) >= options_.max_in_flight) {
    in_flight_.fetch_sub(1);
    rejected_.fetch_add(1);
    info->retry_after_ms = std::to_string(options_.retry_after_ms);
    return grpc::Status(
        grpc::StatusCode::RESOURCE_EXHAUSTED,
        absl::StrCat("coordinator queue full (", options_.max_in_flight,
                     " requests in flight); retry after ", options_.retry_after_ms, " ms"));
  }
  info->admitted = true;
  if (options_.max_request_time.count() > 0) {
    deadline = std::min(deadline, std::chrono::system_clock::now() + options_.max_request_time);
  }
  struct Admission {
    std::atomic<int>* n;
    ~Admission() { n->fetch_sub(1); }
  } admission{&in_flight_};

  std::set<std::string> tried;
  grpc::Status last;
  while (true) {
    absl::StatusOr<GroupLease> lease = registry_->Acquire(request.session_id(), tried);
    if (!lease.ok()) {
      if (!tried.empty()) {
        return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                            absl::StrCat(last.error_message(), "; ", lease.status().message()));
      }
      return ToGrpcStatus(lease.status());
    }
    tried.insert(lease->group_id);
    info->group_id = lease->group_id;
    grpc::ClientContext context;
    if (deadline != std::chrono::system_clock::time_point::max()) context.set_deadline(deadline);
    bool streamed = false;
    bool client_gone = false;
    grpc::Status status;
    {
      CancelWatcher watcher(&context, cancelled);
      std::unique_ptr<grpc::ClientReader<dapq::v1::GenerateResponse>> reader =
          lease->stub->Generate(&context, request);
      dapq::v1::GenerateResponse response;
      while (reader->Read(&response)) {
        streamed = streamed || response.token_ids_size() > 0;
        if (!client_gone && !on_response(response)) {
          client_gone = true;
          context.TryCancel();
        }
      }
      status = reader->Finish();
    }
    const bool group_failed = IsGroupFailure(status);
    registry_->Release(*lease, group_failed,
                       absl::StrCat("group ", lease->group_id, ": ", status.error_message()),
                       status.ok() ? request.session_id() : "");
    if (!group_failed || streamed || client_gone || (cancelled && cancelled())) return status;
    last = grpc::Status(status.error_code(),
                        absl::StrCat("group ", lease->group_id, ": ", status.error_message()));
  }
}

}  // namespace dapq::coordinator
