// File: worker/service/worker_service.cc
// WorkerGroupService and HeartbeatSender.
#include "worker/service/worker_service.h"

#include <grpcpp/grpcpp.h>

#include "common/grpc_status.h"
#include "common/logging.h"
#include "common/tls.h"

namespace dapq::worker::service {
namespace {
// How often a handler with no event checks whether its caller went away. Events wake it at
// once; the interval only bounds cancellation latency. Short intervals cost: with many requests
// queued, their wake-ups preempt the ranks' lock-step collectives on a small machine.
constexpr std::chrono::milliseconds kPollInterval{100};
}  // namespace

WorkerGroupService::WorkerGroupService(GroupDriver* driver, std::string model_name)
    : driver_(driver), model_name_(std::move(model_name)) {}

void WorkerGroupService::set_address(std::string address) {
  MutexLock lock(&mu_);
  address_ = std::move(address);
}

grpc::Status WorkerGroupService::Generate(grpc::ServerContext* context,
                                          const dapq::v1::GenerateRequest* request,
                                          grpc::ServerWriter<dapq::v1::GenerateResponse>* writer) {
  absl::StatusOr<std::shared_ptr<RequestChannel>> channel = driver_->Submit(*request);
  if (!channel.ok()) return ToGrpcStatus(channel.status());
  RequestChannel& ch = **channel;
  while (true) {
    StreamEvent event;
    if (!ch.Pop(&event, kPollInterval)) {
      if (context->IsCancelled()) {
        ch.Cancel();
        return grpc::Status(grpc::StatusCode::CANCELLED, "cancelled by the caller");
      }
      continue;
    }
    dapq::v1::GenerateResponse response;
    if (event.done) {
      if (!event.status.ok()) return ToGrpcStatus(event.status);
      *response.mutable_summary() = std::move(event.summary);
      writer->Write(response);
      return grpc::Status::OK;
    }
    response.add_token_ids(event.token);
    response.set_text(std::move(event.text));
    if (!writer->Write(response)) {
      ch.Cancel();
      return grpc::Status(grpc::StatusCode::CANCELLED, "the caller went away");
    }
  }
}

grpc::Status WorkerGroupService::Status(grpc::ServerContext*, const dapq::v1::WorkerStatusRequest*,
                                        dapq::v1::GroupStatus* response) {
  *response = CurrentStatus();
  return grpc::Status::OK;
}

dapq::v1::GroupStatus WorkerGroupService::CurrentStatus() const {
  dapq::v1::GroupStatus s = driver_->Status();
  s.set_model(model_name_);
  MutexLock lock(&mu_);
  s.set_address(address_);
  return s;
}

HeartbeatSender::HeartbeatSender(std::vector<std::string> coordinators,
                                 const WorkerGroupService* service,
                                 std::chrono::milliseconds interval)
    : fixed_(std::move(coordinators)), service_(service), interval_(interval) {
  SetCoordinators({});
  thread_ = std::thread([this] { Run(); });
}

void HeartbeatSender::SetCoordinators(const std::vector<std::string>& discovered) {
  std::vector<std::string> wanted = fixed_;
  wanted.insert(wanted.end(), discovered.begin(), discovered.end());
  MutexLock lock(&mu_);
  Stubs next;
  for (const std::string& address : wanted) {
    auto it = stubs_.find(address);
    next[address] = it != stubs_.end() ? it->second
                                       : std::shared_ptr<dapq::v1::Registry::Stub>(
                                             dapq::v1::Registry::NewStub(ClientChannel(address)));
  }
  stubs_ = std::move(next);
}

HeartbeatSender::~HeartbeatSender() {
  {
    MutexLock lock(&mu_);
    stop_ = true;
    cv_.SignalAll();
  }
  if (thread_.joinable()) thread_.join();
}

void HeartbeatSender::Stop() {
  {
    MutexLock lock(&mu_);
    if (stop_) return;
    stop_ = true;
    cv_.SignalAll();
  }
  if (thread_.joinable()) thread_.join();
  SendOnce();
}

void HeartbeatSender::SendOnce() {
  Stubs stubs;
  {
    MutexLock lock(&mu_);
    stubs = stubs_;
  }
  if (stubs.empty()) return;
  dapq::v1::HeartbeatRequest request;
  *request.mutable_status() = service_->CurrentStatus();
  // All at once (gRPC's callback API), each with a short deadline: a coordinator that does
  // not answer delays no other.
  struct Call {
    grpc::ClientContext context;
    dapq::v1::HeartbeatResponse response;
    grpc::Status status;
  };
  std::vector<std::unique_ptr<Call>> calls;
  Mutex done_mu;
  CondVar done_cv;
  size_t done = 0;
  for (const auto& [address, stub] : stubs) {
    calls.push_back(std::make_unique<Call>());
    Call* call = calls.back().get();
    call->context.set_deadline(std::chrono::system_clock::now() + 2 * interval_ +
                               std::chrono::milliseconds(500));
    stub->async()->Heartbeat(&call->context, &request, &call->response,
                             [call, &done_mu, &done_cv, &done](grpc::Status s) {
                               call->status = std::move(s);
                               MutexLock lock(&done_mu);
                               ++done;
                               done_cv.SignalAll();
                             });
  }
  {
    MutexLock lock(&done_mu);
    done_cv.Wait(&done_mu, [&] { return done == calls.size(); });
  }
  size_t i = 0;
  for (const auto& [address, stub] : stubs) {
    const grpc::Status& s = calls[i++]->status;
    if (!s.ok()) {
      DAPQ_LOG(DEBUG) << "heartbeat to " << address << ": " << s.error_message();
    }
  }
}

void HeartbeatSender::Run() {
  while (true) {
    SendOnce();
    MutexLock lock(&mu_);
    if (cv_.WaitFor(&mu_, interval_, [&] { return stop_; })) return;
  }
}

}  // namespace dapq::worker::service
