// File: worker/service/borrowed_communicator.h
// A Communicator that forwards to one owned elsewhere, so the engine (which takes ownership of
// its communicator) and the group driver (which broadcasts commands between engine calls, on the
// same thread) share one connection.
// Thread-safety: as the target's.
#ifndef DAPQ_WORKER_SERVICE_BORROWED_COMMUNICATOR_H_
#define DAPQ_WORKER_SERVICE_BORROWED_COMMUNICATOR_H_

#include "worker/comm/communicator.h"

namespace dapq::worker::service {

class BorrowedCommunicator final : public Communicator {
 public:
  explicit BorrowedCommunicator(Communicator* target) : t_(target) {}
  int rank() const override { return t_->rank(); }
  int size() const override { return t_->size(); }
  absl::Status AllReduceSum(float* data, size_t count) override {
    return t_->AllReduceSum(data, count);
  }
  absl::Status AllReduceSum(int64_t* data, size_t count) override {
    return t_->AllReduceSum(data, count);
  }
  absl::Status Broadcast(void* data, size_t bytes, int root) override {
    return t_->Broadcast(data, bytes, root);
  }
  absl::Status Barrier() override { return t_->Barrier(); }
  void Abort() override { t_->Abort(); }

 private:
  Communicator* const t_;
};

}  // namespace dapq::worker::service

#endif  // DAPQ_WORKER_SERVICE_BORROWED_COMMUNICATOR_H_
