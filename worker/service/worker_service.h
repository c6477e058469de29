// File: worker/service/worker_service.h
// Rank 0's gRPC face: the dapq.v1.WorkerGroup service (Generate streams the GroupDriver's events
// to the caller; cancellation and deadlines reach the driver) and the heartbeat sender that
// registers the group with the coordinators' Registry and reports its load.
// Thread-safety: gRPC calls the service from many threads; the driver is thread-safe.
#ifndef DAPQ_WORKER_SERVICE_WORKER_SERVICE_H_
#define DAPQ_WORKER_SERVICE_WORKER_SERVICE_H_

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common/mutex.h"
#include "dapq/v1/worker.grpc.pb.h"
#include "worker/service/group_driver.h"

namespace dapq::worker::service {

class WorkerGroupService final : public dapq::v1::WorkerGroup::Service {
 public:
  // `model_name` is reported in Status, with the address once set_address() told it.
  WorkerGroupService(GroupDriver* driver, std::string model_name);
  void set_address(std::string address);

  grpc::Status Generate(grpc::ServerContext* context, const dapq::v1::GenerateRequest* request,
                        grpc::ServerWriter<dapq::v1::GenerateResponse>* writer) override;
  grpc::Status Status(grpc::ServerContext* context, const dapq::v1::WorkerStatusRequest* request,
                      dapq::v1::GroupStatus* response) override;

  dapq::v1::GroupStatus CurrentStatus() const;

 private:
  GroupDriver* const driver_;
  const std::string model_name_;
  mutable Mutex mu_;
  std::string address_ ABSL_GUARDED_BY(mu_);
};

// Sends Registry.Heartbeat(status) every `interval` to every coordinator it knows until stopped
// (errors are logged; a coordinator may start after the worker). The set of coordinators is
// fixed (--coordinator) or follows etcd (SetCoordinators, called by the discovery watch); the
// fixed ones are always kept.
class HeartbeatSender {
 public:
  HeartbeatSender(std::vector<std::string> coordinators, const WorkerGroupService* service,
                  std::chrono::milliseconds interval);
  ~HeartbeatSender();  // stops and joins
  // Replaces the discovered coordinators (the fixed ones stay).
  void SetCoordinators(const std::vector<std::string>& discovered);
  // Sends one last heartbeat (e.g. healthy=false) to each and stops.
  void Stop();

 private:
  using Stubs = std::map<std::string, std::shared_ptr<dapq::v1::Registry::Stub>>;
  void Run();
  void SendOnce();

  const std::vector<std::string> fixed_;
  const WorkerGroupService* const service_;
  const std::chrono::milliseconds interval_;
  Mutex mu_;
  CondVar cv_;
  Stubs stubs_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace dapq::worker::service

#endif  // DAPQ_WORKER_SERVICE_WORKER_SERVICE_H_
