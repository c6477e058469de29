// File: coordinator/request_router.h
// Runs one generation request on the worker groups: admission (a bounded number in flight;
// RESOURCE_EXHAUSTED with a retry hint beyond), routing through the GroupRegistry, streaming the
// group's responses to a callback, deadline and cancellation propagated to the group, and one
// retry per other healthy group when a group fails before it streamed any token.
// Thread-safety: thread-safe; Run is called concurrently by the gRPC handlers and the batch
// runner.
#ifndef DAPQ_COORDINATOR_REQUEST_ROUTER_H_
#define DAPQ_COORDINATOR_REQUEST_ROUTER_H_

#include <atomic>
#include <chrono>
#include <functional>

#include "coordinator/group_registry.h"
#include "dapq/v1/inference.pb.h"
#include "grpcpp/support/status.h"

namespace dapq::coordinator {

struct RequestRouterOptions {
  int max_in_flight = 64;  // requests admitted at once (streams + batch items)
  int retry_after_ms = 200;
  // Every request ends by then at the latest, whatever the client asked (0 = no cap).
  std::chrono::seconds max_request_time{600};
};

// Outcome details a caller may want besides the status.
struct RunInfo {
  bool admitted = false;
  std::string retry_after_ms;  // set with RESOURCE_EXHAUSTED
  std::string group_id;        // the group that answered last
};

class RequestRouter {
 public:
  RequestRouter(GroupRegistry* registry, const RequestRouterOptions& options);

  // Validates, admits and runs `request`. `deadline` (max() = none) bounds the whole call;
  // `cancelled` is polled while waiting for the group; `on_response` gets each streamed
  // message and returns false when the client is gone (the group call is cancelled).
  grpc::Status Run(const dapq::v1::GenerateRequest& request,
                   std::chrono::system_clock::time_point deadline,
                   const std::function<bool()>& cancelled,
                   const std::function<bool(const dapq::v1::GenerateResponse&)>& on_response,
                   RunInfo* info = nullptr);

  int in_flight() const { return in_flight_.load(); }
  int capacity() const { return options_.max_in_flight; }
  int64_t rejected_total() const { return rejected_.load(); }

 private:
  GroupRegistry* const registry_;
  const RequestRouterOptions options_;
  std::atomic<int> in_flight_{0};
  std::atomic<int64_t> rejected_{0};
};

// True for group-level failures (the group or its transport is gone) as opposed to answers about
// the request itself.
bool IsGroupFailure(const grpc::Status& status);

}  // namespace dapq::coordinator

#endif  // DAPQ_COORDINATOR_REQUEST_ROUTER_H_
