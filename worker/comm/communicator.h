// File: worker/comm/communicator.h
// Collective operations among the tensor-parallel ranks of one worker group. Implementations:
// in-process (ranks as threads, this folder), Gloo over TCP and NCCL (multi-process, with the
// service). Every rank of a group must call the same collectives in the same order.
// Results are bit-identical on every rank: reductions sum in a fixed rank order.
// Thread-safety: one Communicator object per rank, used by one thread at a time.
#ifndef DAPQ_WORKER_COMM_COMMUNICATOR_H_
#define DAPQ_WORKER_COMM_COMMUNICATOR_H_

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "kernels/types.h"

namespace dapq::worker {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;

  // In place: data[i] = sum over ranks of data[i] (rank order 0..size-1, so identical everywhere).
  virtual absl::Status AllReduceSum(float* data, size_t count) = 0;
  // Exact integer sum (fixed-point importance scores for consistent eviction).
  virtual absl::Status AllReduceSum(int64_t* data, size_t count) = 0;
  // Whether AllReduceSumOnStream works: the collective reads device memory itself (NCCL). The
  // others take host buffers; a device rank copies through the host for them.
  virtual bool TakesDeviceBuffers() const { return false; }
  // Stream-ordered sum of `count` floats of device memory: the collective runs on `stream`
  // after the work enqueued there before the call, work enqueued after it sees the sum, and the
  // host waits only until the collective is on the stream, not for it to run. A failure of a
  // peer shows up in a later call (or as an error when the stream is synchronised).
  // Unimplemented unless TakesDeviceBuffers().
  virtual absl::Status AllReduceSumOnStream(float* device_data, size_t count,
                                            kernels::Stream stream) {
    (void)device_data;
    (void)count;
    (void)stream;
    return absl::UnimplementedError("this communicator takes host buffers only");
  }
  // An error of the group that happened off the calling thread (a stream-ordered collective
  // whose peer died): OK while the group works. Never blocks; what waits for a stream that runs
  // stream-ordered collectives polls it (see worker/model_runner.cc's pass end).
  virtual absl::Status AsyncError() { return absl::OkStatus(); }
  // Copies `bytes` bytes from `root`'s buffer into every other rank's buffer.
  virtual absl::Status Broadcast(void* data, size_t bytes, int root) = 0;
  virtual absl::Status Barrier() = 0;
  // Makes every pending and future collective of the group fail with Aborted (a rank hit an
  // error and will not reach the next collective). Safe to call from any thread.
  virtual void Abort() = 0;
};

}  // namespace dapq::worker

#endif  // DAPQ_WORKER_COMM_COMMUNICATOR_H_
