// File: worker/comm/etcd_store.h
// A gloo::rendezvous::Store over etcd (cluster::EtcdClient), so that Gloo ranks exchange their
// addresses through etcd instead of a shared directory. ConnectGlooGroup uses it with the key
// prefix and lease of one rendezvous incarnation (cluster/etcd_rendezvous.h).
//
// Semantics (as Gloo's FileStore and RedisStore):
//  - set(key, data) creates `prefix + key` under the lease; a key that already holds other data
//    is an error ("already set": two writers for one rank). Setting the same data again is a
//    no-op, so a set retried after an ambiguous failure succeeds.
//  - get(key) blocks until the key exists or the store's timeout passes.
//  - wait(keys[, timeout]) blocks until every key exists or the timeout passes (the store's
//    timeout when none is given).
//  - While waiting it polls etcd (5 ms doubling to 100 ms) and, each time, the `check`
//    callback; a non-OK check ends the wait with that status (e.g. Aborted: the rendezvous
//    incarnation was superseded). etcd errors while polling are retried until the timeout and
//    named in the timeout's message.
//  - Failures are thrown as gloo::IoException (Gloo's Store interface has no status); the
//    message of a timeout contains "timeout" (so CurrentExceptionToStatus maps it to
//    DeadlineExceeded). error() returns the status behind the first exception, with its real
//    code (Aborted, DeadlineExceeded, FailedPrecondition, Unavailable...).
//
// Thread-safety: one thread at a time (Gloo calls a store from the connecting thread only);
// error() from any thread. Shares the client.
#ifndef DAPQ_WORKER_COMM_ETCD_STORE_H_
#define DAPQ_WORKER_COMM_ETCD_STORE_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "cluster/etcd_client.h"
#include "gloo/rendezvous/store.h"

namespace dapq::worker {

struct EtcdStoreOptions {
  std::string prefix;                          // prepended to every key (e.g. "<...>/<inc>/store/")
  int64_t lease = 0;                           // keys are put under it (0: no lease)
  absl::Duration timeout = absl::Seconds(30);  // get() and wait(keys)
  std::function<absl::Status()> check;         // optional, see above
};

class EtcdStore final : public gloo::rendezvous::Store {
 public:
  EtcdStore(std::shared_ptr<cluster::EtcdClient> client, EtcdStoreOptions options);

  void set(const std::string& key, const std::vector<char>& data) override;
  std::vector<char> get(const std::string& key) override;
  void wait(const std::vector<std::string>& keys) override;
  void wait(const std::vector<std::string>& keys,
            const std::chrono::milliseconds& timeout) override;

  // OK until a call failed; then the status behind the first exception thrown.
  absl::Status error() const;

 private:
  // Values of every key in `keys` (full keys) once all exist, polling until `timeout`.
  absl::StatusOr<std::map<std::string, std::string>> WaitFor(const std::vector<std::string>& keys,
                                                             absl::Duration timeout);
  [[noreturn]] void Fail(const absl::Status& status);

  const std::shared_ptr<cluster::EtcdClient> client_;
  const EtcdStoreOptions options_;
  mutable absl::Mutex mu_;
  absl::Status error_ ABSL_GUARDED_BY(mu_);
};

}  // namespace dapq::worker

#endif  // DAPQ_WORKER_COMM_ETCD_STORE_H_
