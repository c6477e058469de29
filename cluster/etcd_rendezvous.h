// File: cluster/etcd_rendezvous.h
// How the ranks of one tensor-parallel group agree, through etcd and without shared files, on a
// fresh key space for each attempt to form the group (an "incarnation"), in which they then
// exchange their Gloo addresses (worker/comm/etcd_store.h). Every key of an incarnation lives
// under the lease of the rank that wrote it, and the ranks revoke their leases once the group
// formed, so nothing accumulates in etcd: only the counter below stays, one key per group id.
//
// Keys, with P = <prefix>/rendezvous/<group_id>:
//   P/incarnation         decimal counter of incarnations (no lease)
//   P/<inc>/open          rank 0's (under its lease): incarnation <inc> is taking ranks
//   P/<inc>/member/<r>    rank r's slot in <inc> (under r's lease)
//   P/<inc>/store/<key>   the Gloo store of <inc> (under the writer's lease)
//
// Protocol:
//  - Rank 0 starts a new incarnation every time: one transaction, compare-and-put on the counter
//    (its mod_revision), increments it to C and puts P/C/open and P/C/member/0 under its lease.
//    A rank 0 therefore never joins an old incarnation, and two racing rank 0s get distinct ones.
//  - A rank r > 0 polls (backoff 10 ms .. 250 ms, until its deadline) until the counter C has
//    P/C/open, then claims its slot with one transaction: "counter == C and P/C/open exists and
//    P/C/member/r does not" -> put P/C/member/r under its lease. Only the newest incarnation is
//    ever joined, and only while it is open.
//  - Everyone then exchanges addresses in P/C/store/ (EtcdStore). While waiting there, each
//    rank calls CheckCurrent(), which fails with Aborted once the counter moved past C (a newer
//    rank 0 started) or P/C/open vanished (rank 0 died and its lease expired).
//  - Once the full mesh is connected, every rank must pass a barrier over it (so every rank has
//    read every address it needs) and then call Finish(): rank 0 revokes its lease (P/C/open and
//    its keys vanish at once); a rank r > 0 first waits until P/C/open is gone, then revokes its
//    lease. Holding P/C/member/r until open is gone is what keeps a newcomer out of a formed
//    incarnation (see the races below).
//
// Races considered:
//  - Rank r > 0 starts before rank 0: it finds no open incarnation (or only an older one that
//    is not the counter's) and keeps polling until rank 0 opens one, or its deadline passes
//    (DeadlineExceeded). It never writes anything rank 0 could trip over.
//  - A stale P/C/open from a rank 0 that died (its lease not yet expired) while the counter is
//    still C: a rank r > 0 may join C and wait in the store; when the new rank 0 opens C+1,
//    CheckCurrent() turns Aborted and the rank joins again (ConnectGlooGroup retries ranks > 0
//    within the deadline); if no rank 0 comes, P/C/open expires and the wait is Aborted too.
//  - A rank r > 0 restarting alone while the others stay in their formed group: P/C/open is
//    gone (the group formed), so it waits for a new incarnation. Its peers' collectives fail as
//    soon as its old process died (closed sockets), their owners reconnect, rank 0 opens C+1 and
//    everyone meets there. Should it arrive while C is still finishing (open not yet removed),
//    its slot claim fails because the old rank r holds P/C/member/r until open is gone, and
//    both compares are in one transaction, so it cannot slip into the formed C.
//  - Rank 0 restarting alone: it opens C+1; the others fail their next collective, reconnect
//    and join C+1 (the newest open incarnation).
//  - Two processes claiming one rank in one incarnation: the slot transaction lets only one in;
//    the other keeps waiting for a newer incarnation.
//  - An etcd outage during the rendezvous: calls fail with Unavailable; polling rides over it
//    until the deadline. A lease lost meanwhile removes that rank's keys, so the others time out
//    or see the incarnation abandoned (rank 0's lease) and the group is formed again.
//
// Thread-safety: Join is thread-safe; one EtcdRendezvous is used by one thread (CheckCurrent
// from any). It owns its lease (revoked at the latest by the destructor).
#ifndef DAPQ_CLUSTER_ETCD_RENDEZVOUS_H_
#define DAPQ_CLUSTER_ETCD_RENDEZVOUS_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "cluster/etcd_client.h"
#include "cluster/etcd_registration.h"

namespace dapq::cluster {

struct EtcdRendezvousOptions {
  std::string prefix = "/dapq";  // the etcd URL's key prefix (EtcdUrl::prefix)
  std::string group_id;          // the TP group; non-empty, no '/'
  int rank = 0, size = 1;
  int64_t lease_ttl_s = 5;  // leases of the rendezvous keys (kept alive while it runs)
  // InvalidArgument naming the field.
  absl::Status Validate() const;
};

// "<prefix>/rendezvous/<group_id>" (the P above).
std::string RendezvousGroupKey(const EtcdRendezvousOptions& options);

class EtcdRendezvous {
 public:
  // Rank 0 opens a new incarnation; a rank > 0 joins the open one, waiting for it until
  // `deadline` (DeadlineExceeded naming the group and rank). etcd errors before any waiting
  // (granting the lease; rank 0's transaction) are returned as they are; a rank > 0 keeps
  // polling through them while it waits, and names the last one if the deadline passes.
  static absl::StatusOr<std::unique_ptr<EtcdRendezvous>> Join(std::shared_ptr<EtcdClient> client,
                                                              const EtcdRendezvousOptions& options,
                                                              absl::Time deadline);
  ~EtcdRendezvous();  // revokes the lease unless Finish() did

  int64_t incarnation() const { return incarnation_; }
  // Key prefix of this incarnation's Gloo store ("P/<inc>/store/"), and the lease to put its
  // keys under.
  const std::string& store_prefix() const { return store_prefix_; }
  int64_t lease_id() const { return lease_->id(); }

  // OK while this incarnation is the group's newest and still open; Aborted when superseded or
  // abandoned (see above); the etcd error when etcd cannot be asked.
  absl::Status CheckCurrent() const;

  // Call on every rank after the mesh formed and a barrier over it passed: removes this rank's
  // keys (see the protocol). A rank > 0 waits for rank 0's open key to vanish until `deadline`
  // at most. Errors are etcd's; the keys then expire with the lease anyway.
  absl::Status Finish(absl::Time deadline);

 private:
  EtcdRendezvous(std::shared_ptr<EtcdClient> client, EtcdRendezvousOptions options,
                 std::unique_ptr<KeptAliveLease> lease, int64_t incarnation);

  const std::shared_ptr<EtcdClient> client_;
  const EtcdRendezvousOptions options_;
  const std::unique_ptr<KeptAliveLease> lease_;
  const int64_t incarnation_;
  const std::string group_key_;
  const std::string store_prefix_;
  bool finished_ = false;
};

}  // namespace dapq::cluster

#endif  // DAPQ_CLUSTER_ETCD_RENDEZVOUS_H_
