// File: cluster/etcd_registration.h
// Keys that live only as long as their owner: etcd leases kept alive by a thread of the owner.
//
//  - LeasedKey keeps `key = value` registered for as long as the object lives (a worker's or a
//    coordinator's registration). It grants a lease of ttl_s seconds, puts the key under it and
//    refreshes the lease every ttl_s / 3 from its own thread; each round also checks that the
//    key is still there with this lease and value, and puts it back if not (someone deleted it).
//    When the lease is lost (it expired during an etcd outage, or etcd came back without its
//    data, or someone revoked it) it grants a new lease and puts the key again. While etcd is
//    unreachable it retries with backoff (100 ms doubling up to ttl_s / 3) and healthy() is
//    false. Stop() (and the destructor) revokes the lease, so the key disappears at once on a
//    clean shutdown; an owner that dies without Stop (SIGKILL) stops refreshing, and etcd
//    deletes the key within ttl_s seconds.
//  - KeptAliveLease is the lease alone, refreshed the same way but never replaced: when etcd
//    reports it gone, lost() turns true (the keys put under it are gone too) and the owner
//    decides. The rendezvous of etcd_rendezvous.h holds its short-lived keys under one.
//
// etcd raises TTLs below its minimum (about 2 s with default election settings) to it, and on a
// restart extends every lease by its TTL, so a registration survives an etcd restart as long as
// the owner lives.
//
// Errors: Create/Grant return the etcd call's error (Unavailable, DeadlineExceeded...) and
// InvalidArgument for an empty key, ttl_s < 1 or a null client. Stop/Revoke return the revoke's
// error (the key then expires within the TTL instead).
//
// Thread-safety: every method is thread-safe. Each object owns its keepalive thread and shares
// the client.
#ifndef DAPQ_CLUSTER_ETCD_REGISTRATION_H_
#define DAPQ_CLUSTER_ETCD_REGISTRATION_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "cluster/etcd_client.h"

namespace dapq::cluster {

namespace internal {
class KeepAliveThread;  // etcd_registration.cc
}  // namespace internal

class LeasedKey {
 public:
  // Grants the lease and puts the key (replacing any value a previous owner left) before
  // returning, then keeps it alive.
  static absl::StatusOr<std::unique_ptr<LeasedKey>> Create(std::shared_ptr<EtcdClient> client,
                                                           std::string key, std::string value,
                                                           int64_t ttl_s);
  ~LeasedKey();  // Stop()
  LeasedKey(const LeasedKey&) = delete;
  LeasedKey& operator=(const LeasedKey&) = delete;

  // Replaces the value now (and for every later re-registration). FailedPrecondition after
  // Stop(); the put's error otherwise (the keepalive thread puts the new value back later).
  absl::Status Update(std::string value);
  // Stops the keepalive and revokes the lease: the key is deleted at once. Idempotent (a second
  // call returns OK).
  absl::Status Stop();

  const std::string& key() const { return key_; }
  std::string value() const;
  int64_t lease_id() const;       // changes when the key is re-registered under a new lease
  bool healthy() const;           // the last keepalive round succeeded
  int64_t registrations() const;  // puts under a new lease: 1 after Create
  // Blocks until registrations() >= n or `timeout` passes; returns whether it was reached.
  bool AwaitRegistrations(int64_t n, absl::Duration timeout) const;

  // Test hook: stops the keepalive thread and forgets the lease without revoking it, as a
  // SIGKILLed owner would; etcd deletes the key within the TTL. Stop() then does nothing.
  void AbandonForTesting();

 private:
  LeasedKey(std::shared_ptr<EtcdClient> client, std::string key, std::string value, int64_t ttl_s);
  absl::Status Register() ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);  // new lease + put
  absl::Status KeepAliveRound();                                     // the thread's periodic work

  const std::shared_ptr<EtcdClient> client_;
  const std::string key_;
  const int64_t ttl_s_;
  const absl::Duration call_timeout_;

  // Serialises this object's writes to etcd (keepalive round, Update, Stop).
  absl::Mutex write_mu_ ABSL_ACQUIRED_BEFORE(mu_);
  bool stopped_ ABSL_GUARDED_BY(write_mu_) = false;

  mutable absl::Mutex mu_;
  std::string value_ ABSL_GUARDED_BY(mu_);
  int64_t lease_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t registrations_ ABSL_GUARDED_BY(mu_) = 0;

  std::unique_ptr<internal::KeepAliveThread> thread_;
};

class KeptAliveLease {
 public:
  static absl::StatusOr<std::unique_ptr<KeptAliveLease>> Grant(std::shared_ptr<EtcdClient> client,
                                                               int64_t ttl_s);
  ~KeptAliveLease();  // Revoke()
  KeptAliveLease(const KeptAliveLease&) = delete;
  KeptAliveLease& operator=(const KeptAliveLease&) = delete;

  int64_t id() const { return id_; }
  // etcd reported the lease gone (expired or revoked by someone else): its keys are gone.
  bool lost() const;
  // Blocks until lost() or `timeout` passes; returns lost().
  bool AwaitLost(absl::Duration timeout) const;
  // Stops the keepalive and revokes the lease (deleting its keys). Idempotent; NotFound from
  // etcd (already gone) counts as success.
  absl::Status Revoke();

 private:
  KeptAliveLease(std::shared_ptr<EtcdClient> client, int64_t id, int64_t ttl_s);

  const std::shared_ptr<EtcdClient> client_;
  const int64_t id_;
  const absl::Duration call_timeout_;
  mutable absl::Mutex mu_;
  bool lost_ ABSL_GUARDED_BY(mu_) = false;
  bool revoked_ ABSL_GUARDED_BY(mu_) = false;
  std::unique_ptr<internal::KeepAliveThread> thread_;
};

}  // namespace dapq::cluster

#endif  // DAPQ_CLUSTER_ETCD_REGISTRATION_H_
