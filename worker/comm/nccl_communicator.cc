// File: worker/comm/nccl_communicator.cc
// NCCL collectives on host buffers (copy in, reduce on the device, poll for completion: peer
// failures and timeouts become errors, copy out) and on device buffers in stream order (poll
// only until NCCL has put the collective on the caller's stream). Compiled only when
// DAPQ_HAVE_NCCL.
#include "worker/comm/nccl_communicator.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/cuda_status.h"
#include "common/status_macros.h"
#include "worker/comm/internal/group_state.h"

namespace dapq::worker {
namespace {

constexpr std::chrono::seconds kCollectiveTimeout{120};
// Every rank must join within this time of the first (a dead rank never does).
constexpr std::chrono::seconds kInitTimeout{120};

absl::Status NcclStatus(ncclResult_t result, const char* expr, ncclComm_t comm, int rank,
                        int device) {
  const char* last = ncclGetLastError(comm);
  return absl::InternalError(
      absl::StrCat(expr, ": ", ncclGetErrorString(result), " (rank ", rank, ", device ", device,
                   ")", last != nullptr && *last != '\0' ? ": " : "", last != nullptr ? last : ""));
}

// What rank 0 sends over the bootstrap communicator.
struct BootstrapMessage {
  int32_t ok = 0;  // rank 0 created the id
  ncclUniqueId id{};
};

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(int rank, int size, int device) : rank_(rank), size_(size), device_(device) {}

  ~NcclCommunicator() override {
    cudaSetDevice(device_);
    {
      absl::MutexLock lock(&mu_);
      if (comm_ != nullptr) {
        if (comm_aborted_) {
          // Already aborted: its resources were freed by ncclCommAbort.
        } else if (broken_.ok() && Finalize()) {
          ncclCommDestroy(comm_);
        } else {
          ncclCommAbort(comm_);
        }
        comm_ = nullptr;
      }
    }
    if (buffer_ != nullptr) cudaFree(buffer_);
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }

  // Joins the group. The communicator is non-blocking (ncclConfig_t::blocking = 0): the init
  // returns at once and completes in the background, polled here, so a rank that dies before
  // joining ends the others' init at the deadline (or at Abort()) instead of hanging them.
  absl::Status Init(const ncclUniqueId& id) {
    DAPQ_CUDA_RETURN_IF_ERROR(cudaSetDevice(device_));
    DAPQ_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    {
      absl::MutexLock lock(&mu_);
      ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
      config.blocking = 0;
      const ncclResult_t r = ncclCommInitRankConfig(&comm_, size_, id, rank_, &config);
      if (r != ncclSuccess && r != ncclInProgress) {
        if (comm_ != nullptr) AbortCommLocked();
        return NcclStatus(r, "ncclCommInitRankConfig", nullptr, rank_, device_);
      }
    }
    const absl::Status ready =
        AwaitComm("init", std::chrono::steady_clock::now() + kInitTimeout, /*stream_done=*/nullptr);
    if (!ready.ok()) return Break(ready);
    return absl::OkStatus();
  }

  // Flushes the communicator's outstanding work before ncclCommDestroy: a non-blocking
  // ncclCommFinalize, polled for up to 10 s. False when it fails or does not finish (the caller
  // then aborts the communicator instead).
  bool Finalize() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    ncclResult_t r = ncclCommFinalize(comm_);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (r == ncclInProgress && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::yield();
      ncclResult_t async = ncclSuccess;
      if (ncclCommGetAsyncError(comm_, &async) != ncclSuccess) return false;
      r = async;
    }
    return r == ncclSuccess;
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }

  absl::Status AllReduceSum(float* data, size_t count) override {
    return Run("allreduce", data, count * sizeof(float), [&](void* buf) {
      return ncclAllReduce(buf, buf, count, ncclFloat32, ncclSum, comm_, stream_);
    });
  }

  bool TakesDeviceBuffers() const override { return true; }

  // On the caller's stream, in place: no copy, no wait for the collective to run. The wait is
  // for NCCL to have enqueued it (a non-blocking communicator may still be doing that after
  // ncclAllReduce returned ncclInProgress), bounded by the collective timeout, so an error or
  // Abort() during the enqueue is seen here.
  absl::Status AllReduceSumOnStream(float* device_data, size_t count,
                                    kernels::Stream stream) override {
    const char* op = "allreduce on stream";
    DAPQ_RETURN_IF_ERROR(internal::CheckGroupUsable(aborted_.load(), broken_, Context(op)));
    if (stream.backend != kernels::Backend::kCuda) {
      return absl::InvalidArgumentError(absl::StrCat(Context(op), "needs a CUDA stream, not ",
                                                     kernels::BackendName(stream.backend)));
    }
    if (count == 0) return absl::OkStatus();
    absl::Status s = [&]() -> absl::Status {
      DAPQ_CUDA_RETURN_IF_ERROR(cudaSetDevice(device_));
      absl::MutexLock lock(&mu_);
      if (comm_aborted_) {
        return absl::AbortedError(absl::StrCat(Context(op), "group aborted by a failed rank"));
      }
      const ncclResult_t r = ncclAllReduce(device_data, device_data, count, ncclFloat32, ncclSum,
                                           comm_, static_cast<cudaStream_t>(stream.handle));
      if (r != ncclSuccess && r != ncclInProgress) {
        return NcclStatus(r, Context(op).c_str(), comm_, rank_, device_);
      }
      return absl::OkStatus();
    }();
    if (s.ok()) {
      s = AwaitComm(op, std::chrono::steady_clock::now() + kCollectiveTimeout,
                    /*stream=*/nullptr);
    }
    if (!s.ok()) return absl::IsAborted(s) ? s : Break(s);
    return absl::OkStatus();
  }

  absl::Status AsyncError() override {
    const char* op = "async error check";
    DAPQ_RETURN_IF_ERROR(internal::CheckGroupUsable(aborted_.load(), broken_, Context(op)));
    ncclResult_t async = ncclSuccess;
    const absl::Status s = PollComm(op, &async);
    // A peer failure aborts the NCCL communicator, which ends kernels waiting for that peer.
    if (!s.ok()) return absl::IsAborted(s) ? s : Break(s);
    return absl::OkStatus();
  }

  absl::Status AllReduceSum(int64_t* data, size_t count) override {
    return Run("allreduce", data, count * sizeof(int64_t), [&](void* buf) {
      return ncclAllReduce(buf, buf, count, ncclInt64, ncclSum, comm_, stream_);
    });
  }

  absl::Status Broadcast(void* data, size_t bytes, int root) override {
    if (root < 0 || root >= size_) {
      return absl::InvalidArgumentError(
          absl::StrCat(Context("broadcast"), "root=", root, " outside [0, ", size_, ")"));
    }
    return Run("broadcast", data, bytes, [&](void* buf) {
      return ncclBroadcast(buf, buf, bytes, ncclUint8, root, comm_, stream_);
    });
  }

  absl::Status Barrier() override {
    float token = 0;
    return Run("barrier", &token, sizeof(token), [&](void* buf) {
      return ncclAllReduce(buf, buf, 1, ncclFloat32, ncclSum, comm_, stream_);
    });
  }

  void Abort() override {
    aborted_.store(true);
    absl::MutexLock lock(&mu_);
    AbortCommLocked();
  }

 private:
  std::string Context(const char* op) const {
    return absl::StrCat("nccl ", op, " (rank ", rank_, " of ", size_, ", device ", device_, "): ");
  }

  void AbortCommLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (comm_ != nullptr && !comm_aborted_) {
      ncclCommAbort(comm_);
      comm_aborted_ = true;
    }
  }

  // Marks the group broken with `s` and aborts the NCCL communicator (ending any kernel that
  // waits for a peer).
  absl::Status Break(absl::Status s) {
    broken_ = s;
    absl::MutexLock lock(&mu_);
    AbortCommLocked();
    return s;
  }

  absl::Status EnsureBuffer(size_t bytes) {
    if (bytes <= capacity_) return absl::OkStatus();
    if (buffer_ != nullptr) {
      DAPQ_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
      DAPQ_CUDA_RETURN_IF_ERROR(cudaFree(buffer_));
      buffer_ = nullptr;
      capacity_ = 0;
    }
    DAPQ_CUDA_RETURN_IF_ERROR(cudaMalloc(&buffer_, bytes));
    capacity_ = bytes;
    return absl::OkStatus();
  }

  // Copies `bytes` of `data` to the device, enqueues op(device buffer), waits for it and copies
  // the result back into `data`.
  template <typename Op>
  absl::Status Run(const char* op, void* data, size_t bytes, Op&& enqueue) {
    DAPQ_RETURN_IF_ERROR(internal::CheckGroupUsable(aborted_.load(), broken_, Context(op)));
    if (bytes == 0) return absl::OkStatus();
    absl::Status s = Enqueue(op, data, bytes, enqueue);
    if (!s.ok()) return absl::IsAborted(s) ? s : Break(s);
    s = Wait(op);
    if (!s.ok()) return absl::IsAborted(s) ? s : Break(s);
    s = [&]() -> absl::Status {
      DAPQ_CUDA_RETURN_IF_ERROR(cudaMemcpy(data, buffer_, bytes, cudaMemcpyDeviceToHost));
      return absl::OkStatus();
    }();
    if (!s.ok()) return Break(absl::InternalError(absl::StrCat(Context(op), s.message())));
    return absl::OkStatus();
  }

  template <typename Op>
  absl::Status Enqueue(const char* op, const void* data, size_t bytes, Op&& enqueue) {
    DAPQ_CUDA_RETURN_IF_ERROR(cudaSetDevice(device_));
    DAPQ_RETURN_IF_ERROR(EnsureBuffer(bytes));
    // From pageable memory this returns once `data` is staged: the caller's buffer is free.
    DAPQ_CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(buffer_, data, bytes, cudaMemcpyHostToDevice, stream_));
    absl::MutexLock lock(&mu_);
    if (comm_aborted_) {
      return absl::AbortedError(absl::StrCat(Context(op), "group aborted by a failed rank"));
    }
    // Non-blocking communicator: this returns at once (ncclInProgress while NCCL is still
    // putting the collective on the stream; Wait polls for that), so holding the mutex here
    // cannot keep Abort() from ending a collective that waits for a dead peer.
    const ncclResult_t r = enqueue(buffer_);
    if (r != ncclSuccess && r != ncclInProgress) {
      return NcclStatus(r, Context(op).c_str(), comm_, rank_, device_);
    }
    return absl::OkStatus();
  }

  // Polls rather than blocking in cudaStreamSynchronize, so that an asynchronous NCCL error (a
  // peer died), Abort() or the timeout can end the wait. A non-blocking communicator may still
  // be putting the collective on the stream after its call returned (ncclInProgress): the wait
  // ends only once NCCL reports it enqueued (ncclSuccess) and the stream has run it.
  absl::Status Wait(const char* op) {
    return AwaitComm(op, std::chrono::steady_clock::now() + kCollectiveTimeout, stream_);
  }

  // The communicator's state, under the lock Abort() takes: Aborted after an abort, Unavailable
  // for an asynchronous NCCL error; otherwise *async is ncclSuccess or ncclInProgress (an
  // operation still being put on the stream).
  absl::Status PollComm(const char* op, ncclResult_t* async) {
    absl::MutexLock lock(&mu_);
    if (comm_aborted_) {
      return absl::AbortedError(absl::StrCat(Context(op), "group aborted by a failed rank"));
    }
    const ncclResult_t r = ncclCommGetAsyncError(comm_, async);
    if (r != ncclSuccess) return NcclStatus(r, Context(op).c_str(), comm_, rank_, device_);
    if (*async != ncclSuccess && *async != ncclInProgress) {
      return absl::UnavailableError(absl::StrCat(Context(op), "asynchronous error ",
                                                 ncclGetErrorString(*async), ": ",
                                                 ncclGetLastError(comm_)));
    }
    return absl::OkStatus();
  }

  // Polls until the communicator's last operation has left ncclInProgress and, with `stream`,
  // the stream has finished everything on it. Aborted after Abort(), Unavailable for an
  // asynchronous NCCL error, DeadlineExceeded past `deadline`.
  absl::Status AwaitComm(const char* op, std::chrono::steady_clock::time_point deadline,
                         cudaStream_t stream) {
    while (true) {
      if (aborted_.load()) {
        return absl::AbortedError(absl::StrCat(Context(op), "group aborted by a failed rank"));
      }
      ncclResult_t async = ncclSuccess;
      DAPQ_RETURN_IF_ERROR(PollComm(op, &async));
      if (async == ncclSuccess) {  // the operation is on the stream (or done, for init)
        if (stream == nullptr) return absl::OkStatus();
        const cudaError_t q = cudaStreamQuery(stream);
        if (q == cudaSuccess) return absl::OkStatus();
        if (q != cudaErrorNotReady) {
          return absl::InternalError(
              absl::StrCat(Context(op), "cudaStreamQuery: ", cudaGetErrorString(q)));
        }
      }
      if (std::chrono::steady_clock::now() > deadline) {
        return absl::DeadlineExceededError(
            absl::StrCat(Context(op), "not complete after ",
                         (stream == nullptr ? kInitTimeout : kCollectiveTimeout).count(), " s"));
      }
      std::this_thread::yield();
    }
  }

  const int rank_;
  const int size_;
  const int device_;
  cudaStream_t stream_ = nullptr;
  void* buffer_ = nullptr;  // device scratch, grown on demand
  size_t capacity_ = 0;
  std::atomic<bool> aborted_{false};
  absl::Status broken_;  // the first failure; OK while the group works
  absl::Mutex mu_;       // guards the NCCL communicator against a concurrent Abort()
  ncclComm_t comm_ ABSL_GUARDED_BY(mu_) = nullptr;
  bool comm_aborted_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Communicator>> ConnectNcclGroup(Communicator& bootstrap,
                                                               int device) {
  int devices = 0;
  const cudaError_t err = cudaGetDeviceCount(&devices);
  // Every rank must reach the bootstrap broadcast, even one whose device is unusable, so that
  // rank 0 does not wait for it; the error is reported after.
  absl::Status local;
  if (err != cudaSuccess) {
    local =
        absl::InternalError(absl::StrCat("nccl: cudaGetDeviceCount: ", cudaGetErrorString(err)));
  } else if (device < 0 || device >= devices) {
    local = absl::InvalidArgumentError(
        absl::StrCat("nccl: device=", device, " outside [0, ", devices, ")"));
  }
  BootstrapMessage message;
  if (bootstrap.rank() == 0 && local.ok()) {
    const ncclResult_t r = ncclGetUniqueId(&message.id);
    if (r == ncclSuccess) {
      message.ok = 1;
    } else {
      local = NcclStatus(r, "ncclGetUniqueId", nullptr, 0, device);
    }
  }
  DAPQ_RETURN_IF_ERROR(bootstrap.Broadcast(&message, sizeof(message), /*root=*/0));
  // ncclCommInitRank waits for every rank: agree first that every rank can call it.
  int64_t failed = local.ok() ? 0 : 1;
  DAPQ_RETURN_IF_ERROR(bootstrap.AllReduceSum(&failed, 1));
  DAPQ_RETURN_IF_ERROR(local);
  if (message.ok == 0) {
    return absl::UnavailableError("nccl: rank 0 could not create the NCCL group id");
  }
  if (failed > 0) {
    return absl::UnavailableError(
        absl::StrCat("nccl: ", failed, " rank(s) of the group cannot join (bad device)"));
  }
  auto comm = std::make_unique<NcclCommunicator>(bootstrap.rank(), bootstrap.size(), device);
  DAPQ_RETURN_IF_ERROR(comm->Init(message.id));
  return std::unique_ptr<Communicator>(std::move(comm));
}

}  // namespace dapq::worker
