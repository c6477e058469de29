// File: worker/comm/in_process_communicator.cc
// Rendezvous-based collectives among threads: each rank publishes a pointer, waits at a
// generation barrier, reads every rank's buffer in rank order, waits again, then writes its own.
#include "worker/comm/in_process_communicator.h"

#include <cstring>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/status_macros.h"

namespace dapq::worker {
namespace {

class Rendezvous {
 public:
  explicit Rendezvous(int size) : size_(size), slots_(size, nullptr) {}

  int size() const { return size_; }

  // Blocks until all ranks arrive (or the group is aborted).
  absl::Status Wait() ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    if (aborted_) return AbortedStatus();
    const long generation = generation_;
    if (++arrived_ == size_) {
      arrived_ = 0;
      ++generation_;
      return absl::OkStatus();
    }
    auto released = [this, generation]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return generation_ != generation || aborted_;
    };
    mu_.Await(absl::Condition(&released));
    if (generation_ == generation) return AbortedStatus();
    return absl::OkStatus();
  }

  void Abort() ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    aborted_ = true;
  }

  // Slot r is written only by rank r between barriers, read by all after the barrier.
  void Publish(int rank, void* ptr) { slots_[rank] = ptr; }
  void* Slot(int rank) const { return slots_[rank]; }

 private:
  static absl::Status AbortedStatus() {
    return absl::AbortedError("in-process communicator: group aborted by a failed rank");
  }

  const int size_;
  std::vector<void*> slots_;
  absl::Mutex mu_;
  int arrived_ ABSL_GUARDED_BY(mu_) = 0;
  long generation_ ABSL_GUARDED_BY(mu_) = 0;
  bool aborted_ ABSL_GUARDED_BY(mu_) = false;
};

class InProcessCommunicator final : public Communicator {
 public:
  InProcessCommunicator(std::shared_ptr<Rendezvous> rv, int rank)
      : rv_(std::move(rv)), rank_(rank) {}

  int rank() const override { return rank_; }
  int size() const override { return rv_->size(); }

  absl::Status AllReduceSum(float* data, size_t count) override { return Reduce(data, count); }
  absl::Status AllReduceSum(int64_t* data, size_t count) override { return Reduce(data, count); }

  absl::Status Broadcast(void* data, size_t bytes, int root) override {
    if (root < 0 || root >= size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("broadcast: root=", root, " outside [0, ", size(), ")"));
    }
    if (size() == 1) return absl::OkStatus();
    rv_->Publish(rank_, data);
    DAPQ_RETURN_IF_ERROR(rv_->Wait());
    if (rank_ != root) std::memcpy(data, rv_->Slot(root), bytes);
    return rv_->Wait();
  }

  absl::Status Barrier() override { return size() == 1 ? absl::OkStatus() : rv_->Wait(); }
  void Abort() override { rv_->Abort(); }

 private:
  template <typename T>
  absl::Status Reduce(T* data, size_t count) {
    if (size() == 1) return absl::OkStatus();
    rv_->Publish(rank_, data);
    DAPQ_RETURN_IF_ERROR(rv_->Wait());
    scratch_.resize(count * sizeof(T));
    T* sum = reinterpret_cast<T*>(scratch_.data());
    const T* first = static_cast<const T*>(rv_->Slot(0));
    std::memcpy(sum, first, count * sizeof(T));
    for (int r = 1; r < size(); ++r) {
      const T* other = static_cast<const T*>(rv_->Slot(r));
      for (size_t i = 0; i < count; ++i) sum[i] += other[i];
    }
    DAPQ_RETURN_IF_ERROR(rv_->Wait());  // everyone has read every slot
    std::memcpy(data, sum, count * sizeof(T));
    return absl::OkStatus();
  }

  std::shared_ptr<Rendezvous> rv_;
  const int rank_;
  std::vector<unsigned char> scratch_;
};

}  // namespace

absl::StatusOr<std::vector<std::unique_ptr<Communicator>>> CreateInProcessGroup(int size) {
  if (size < 1)
    return absl::InvalidArgumentError(absl::StrCat("communicator: size=", size, " must be >= 1"));
  auto rv = std::make_shared<Rendezvous>(size);
  std::vector<std::unique_ptr<Communicator>> comms;
  for (int r = 0; r < size; ++r) comms.push_back(std::make_unique<InProcessCommunicator>(rv, r));
  return comms;
}

}  // namespace dapq::worker
