// File: worker/comm/nccl_communicator.h
// Communicator over NCCL, for tensor-parallel ranks that are separate processes, one GPU each.
// The group is bootstrapped over another Communicator of the same ranks (Gloo): rank 0 creates
// the ncclUniqueId and broadcasts it.
//
// Semantics (see communicator.h for the contract):
//  - The Communicator collectives take host pointers: each copies the buffer to a device
//    buffer, runs ncclAllReduce / ncclBroadcast on the communicator's stream and copies the
//    result back. int64 sums use ncclInt64 and are exact.
//  - AllReduceSumOnStream (TakesDeviceBuffers) sums device memory in place on the caller's
//    stream (a device rank's compute stream): no copy, and the call returns once NCCL has put
//    the collective on the stream, without waiting for it to run.
//  - Float sums: NCCL's reduction order depends on its algorithm (ring, tree, NVLS) and is not
//    rank order 0..size-1. Results are identical on every rank, but bit-identical to the
//    in-process / Gloo communicators only for a group of 2 (a + b == b + a in IEEE arithmetic);
//    with 3 or more ranks they may differ in the last bits.
//  - The NCCL communicator is non-blocking (ncclConfig_t::blocking = 0): its init and every
//    collective return at once. Init is polled until every rank joined, for at most 120 s (a
//    rank that died before joining: DeadlineExceeded, not a hang). A collective is complete
//    once NCCL reports it enqueued (ncclCommGetAsyncError leaves ncclInProgress) and the stream
//    ran it (cudaStreamQuery), so a peer failure shows up as an error; a collective that does
//    not complete within 120 s returns DeadlineExceeded.
//    Either aborts the NCCL communicator: the group is then broken and every later collective
//    fails.
//  - Abort() makes every later collective return Aborted and aborts the NCCL communicator, which
//    also ends a collective that is waiting for its peers.
//  - NCCL will not run two ranks on one GPU ("Duplicate GPU detected"): multi-rank groups need
//    one device per rank.
// Builds without NCCL (DAPQ_HAVE_NCCL == 0) compile a version that returns Unimplemented.
// Thread-safety: one thread at a time per communicator (Abort() from any thread). The returned
// object owns its NCCL communicator, stream and device buffer.
#ifndef DAPQ_WORKER_COMM_NCCL_COMMUNICATOR_H_
#define DAPQ_WORKER_COMM_NCCL_COMMUNICATOR_H_

#include <memory>

#include "absl/status/statusor.h"
#include "worker/comm/communicator.h"

namespace dapq::worker {

// Joins an NCCL group with the ranks and size of `bootstrap` (every rank calls it, on its own
// CUDA `device`); `bootstrap` is used only during the call. InvalidArgument for a bad device,
// Internal for CUDA/NCCL failures, Unimplemented without NCCL.
absl::StatusOr<std::unique_ptr<Communicator>> ConnectNcclGroup(Communicator& bootstrap, int device);

}  // namespace dapq::worker

#endif  // DAPQ_WORKER_COMM_NCCL_COMMUNICATOR_H_
