// File: worker/comm/gloo_communicator.h
// Communicator over Gloo's TCP transport, for tensor-parallel ranks that are separate processes
// (on one machine over loopback, or across machines). The ranks meet either through a
// gloo::rendezvous::FileStore (`rendezvous_dir`: a directory every rank can see, where each
// publishes its listening addresses under `group_id`) or through etcd (`rendezvous_url`, see
// cluster/etcd_rendezvous.h and worker/comm/etcd_store.h: no shared files, a fresh key space per
// attempt, every key under a lease and removed once the group formed); then every pair of ranks
// connects directly over TCP.
//
// Through etcd, every call of ConnectGlooGroup is a new incarnation of the group: rank 0 opens
// it, the other ranks join the newest open one (waiting for rank 0 if they come first), and the
// same group_id is reused by every attempt. A rank > 0 whose incarnation is superseded while it
// waits (rank 0 restarted) joins the new one within the same timeout. Once connected, the ranks
// pass a barrier and remove their rendezvous keys.
//
// Semantics (see communicator.h for the contract shared with the in-process communicator):
//  - Float AllReduceSum is an allgather followed by a local sum in rank order 0..size-1, so its
//    results are bit-identical to the in-process communicator's (and on every rank). Gloo's own
//    allreduce (ring / halving-doubling) adds in an order that depends on the algorithm and the
//    rank, which would make multi-process results differ from in-process ones in the last bits.
//    The cost is size x count floats received per rank instead of ~2 x count; the activations
//    reduced here are one hidden vector per token, so this is not the bottleneck on CPU.
//  - int64 AllReduceSum is the same allgather and an exact sum.
//  - The collectives are our own point-to-point exchanges over Gloo's unbound buffers, not
//    Gloo's algorithms: every receive is posted before any send and waited for first, and a
//    broadcast's receivers acknowledge to the root. Gloo's TCP transport leaves a send to a peer
//    that died before posting its receive pending until the timeout (seen: a SIGKILLed rank
//    stalled its peer for the full 120 s in gloo::allgather); a receive from a dead peer fails
//    as soon as its socket closes.
//  - Each collective is tagged with its sequence number in the group, so ranks that fell out of
//    step (one made more collectives than another) never pair mismatched collectives: they wait
//    for each other's tags until the timeout instead.
//  - Every collective has the per-collective timeout of the options (DeadlineExceeded). A peer
//    whose process dies closes its sockets, so the pending or next collective fails with
//    Unavailable at once (through a receive, above) instead of waiting for the timeout.
//  - After any failure the group is broken: this rank closes its connections (so that the other
//    ranks fail fast too) and every later collective returns the first error. Build a new group
//    (a new group_id) to continue.
//  - Abort() makes every later collective return Aborted at once. A collective already blocked
//    inside Gloo cannot be interrupted: it returns when its peers arrive or fail, or at the
//    timeout.
//  - Gloo reports errors with C++ exceptions; none escapes: they become absl::Status here.
//  - Writing to a socket whose peer has died raises SIGPIPE, whose default action kills the
//    process. ConnectGlooGroup therefore sets SIGPIPE to SIG_IGN for the whole process when it is
//    still at SIG_DFL (as gRPC and Python do); writes then fail with EPIPE, which Gloo reports.
//
// Thread-safety: one thread at a time per communicator (Abort() from any thread). The returned
// object owns its Gloo context, TCP device and background I/O thread.
#ifndef DAPQ_WORKER_COMM_GLOO_COMMUNICATOR_H_
#define DAPQ_WORKER_COMM_GLOO_COMMUNICATOR_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "worker/comm/communicator.h"

namespace dapq::worker {

struct GlooGroupOptions {
  int rank = 0, size = 1;
  // gloo::rendezvous::FileStore directory shared by the ranks (created if missing). Ignored
  // when rendezvous_url is set.
  std::string rendezvous_dir;
  // "etcd://host:port[,host:port...][/prefix]" (cluster/etcd_url.h; plaintext only, etcds:// is
  // Unimplemented): meet through etcd instead of rendezvous_dir.
  std::string rendezvous_url;
  // With rendezvous_dir: key prefix, so that several groups (and retries) can share a
  // directory; a group_id must be used by one group attempt only: its keys stay in the
  // directory ("File already exists"). With rendezvous_url: the group's name in etcd (required,
  // no '/'), the same for every attempt (each is a new incarnation).
  std::string group_id;
  std::string hostname = "127.0.0.1";           // interface address this rank listens on
  absl::Duration timeout = absl::Seconds(120);  // per collective, and for the rendezvous
  // InvalidArgument naming the field: rank outside [0, size), size < 1, both rendezvous_dir and
  // rendezvous_url empty, a bad rendezvous_url (Unimplemented for etcds://), an empty or
  // slashed group_id with rendezvous_url, empty hostname, timeout <= 0.
  absl::Status Validate() const;
};

// Joins the group as options.rank: blocks until every rank has published its address and every
// pair is connected. Unavailable when a peer (or etcd) cannot be reached, DeadlineExceeded when
// the others do not arrive within the timeout, Aborted when rank 0's etcd incarnation was
// superseded by another rank 0, InvalidArgument for bad options.
absl::StatusOr<std::unique_ptr<Communicator>> ConnectGlooGroup(const GlooGroupOptions& options);

}  // namespace dapq::worker

#endif  // DAPQ_WORKER_COMM_GLOO_COMMUNICATOR_H_
