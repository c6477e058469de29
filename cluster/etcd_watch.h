// File: cluster/etcd_watch.h
// PrefixWatcher keeps an up-to-date copy of every key under a prefix of etcd (key -> value, full
// keys), for components that route by what is registered there (workers, coordinators).
//
// How: Start() lists the prefix (GetPrefix) and returns only once that first list succeeded.
// A thread of its own then streams etcd's watch (/v3/watch over the JSON gateway) from the
// listed revision + 1 and applies every put and delete (a lease expiring deletes its keys, so
// that shows as deletes too). When the stream ends for any reason (etcd restarted or unreachable,
// the start revision was compacted, an error message, nothing received for `idle_resync`), the
// thread lists the prefix again and watches from the new revision: a fresh list, not a resume, so
// a restarted etcd whose revisions went back (data lost) is followed too. Failed lists and failed
// watch starts are retried with backoff doubling from `min_backoff` to `max_backoff`.
//
// Contract:
//  - on_change receives the full map after every change: once in Start() (on the caller's
//    thread, before Start returns) with the initial list, then on the watcher thread after each
//    batch of events, and after a re-list that found the map different. Calls never overlap.
//    It must not call Stop() (that would join its own thread); it may call Snapshot().
//  - While etcd is unreachable the last known map is kept (callers keep serving with it) and
//    healthy() is false; healthy() turns true again once a list succeeded.
//  - The TCP connection of the stream has keepalive probes (about 5 s to notice a vanished
//    host), and `idle_resync` bounds a silent stream anyway.
//  - Stop() (and the destructor) cancels promptly: it shuts the stream's socket down. A list in
//    progress is not interrupted; it ends within the client's deadline.
//  - Plaintext HTTP only, like EtcdClient.
//
// Thread-safety: every method is thread-safe. The watcher owns its thread; it shares the client.
#ifndef DAPQ_CLUSTER_ETCD_WATCH_H_
#define DAPQ_CLUSTER_ETCD_WATCH_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "cluster/etcd_client.h"

namespace httplib {
class Client;
}  // namespace httplib

namespace dapq::cluster {

struct PrefixWatcherOptions {
  absl::Duration min_backoff = absl::Milliseconds(100);
  absl::Duration max_backoff = absl::Seconds(2);
  // A stream that delivered nothing for this long is replaced (list + watch again).
  absl::Duration idle_resync = absl::Seconds(60);
  // Deadline of each list (zero: the client's default) and of connecting the stream.
  absl::Duration list_timeout = absl::ZeroDuration();
};

class PrefixWatcher {
 public:
  using Map = std::map<std::string, std::string>;
  using Callback = std::function<void(const Map&)>;

  // Lists `prefix` (returning the list's error when it fails: nothing is known yet), calls
  // on_change (may be null) with it and starts watching. InvalidArgument for a null client or
  // bad backoffs.
  static absl::StatusOr<std::unique_ptr<PrefixWatcher>> Start(std::shared_ptr<EtcdClient> client,
                                                              std::string prefix,
                                                              Callback on_change = nullptr,
                                                              PrefixWatcherOptions options = {});

  ~PrefixWatcher();
  PrefixWatcher(const PrefixWatcher&) = delete;
  PrefixWatcher& operator=(const PrefixWatcher&) = delete;

  // Stops watching (idempotent; concurrent callers all return once it stopped). The map stays
  // readable. Never call from on_change.
  void Stop();

  const std::string& prefix() const { return prefix_; }
  Map Snapshot() const;
  // The etcd revision the map reflects.
  int64_t revision() const;
  bool healthy() const;
  // How many times the map was listed again after Start (each stream end counts once).
  int64_t resyncs() const;

  // Blocks until pred(map, healthy) holds (checked at once and after every change of either)
  // or `timeout` passes; returns whether it held. pred runs with the watcher's lock held: it
  // must not call the watcher.
  bool Await(const std::function<bool(const Map&, bool healthy)>& pred,
             absl::Duration timeout) const;

 private:
  PrefixWatcher(std::shared_ptr<EtcdClient> client, std::string prefix, Callback on_change,
                PrefixWatcherOptions options);

  void Run();
  // Lists the prefix and replaces the map (calling on_change when it changed). Returns the
  // list's revision.
  absl::StatusOr<int64_t> Relist();
  // Streams one watch from `start_revision` until it ends. Sets *created when etcd confirmed the
  // watch (then the stream ended after working, so no backoff is needed).
  absl::Status WatchOnce(int64_t start_revision, bool* created);
  // Applies one message of the stream. Returns false to end the stream (cancelled, error).
  bool HandleMessage(std::string_view line, bool* created, absl::Status* stream_status);
  void SetHealthy(bool healthy);
  void Notify();
  bool WaitBackoff(absl::Duration d);  // false when stopping

  const std::shared_ptr<EtcdClient> client_;
  const std::string prefix_;
  const Callback on_change_;
  const PrefixWatcherOptions options_;

  mutable absl::Mutex mu_;
  Map map_ ABSL_GUARDED_BY(mu_);
  int64_t revision_ ABSL_GUARDED_BY(mu_) = 0;
  bool healthy_ ABSL_GUARDED_BY(mu_) = true;
  int64_t resyncs_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool thread_done_ ABSL_GUARDED_BY(mu_) = false;
  std::atomic<bool> stop_flag_{false};  // stopping_, readable without the lock

  // The client of the stream in progress, so that Stop() can shut its socket down.
  absl::Mutex stream_mu_;
  httplib::Client* stream_client_ ABSL_GUARDED_BY(stream_mu_) = nullptr;

  size_t endpoint_ = 0;  // watcher thread only: the endpoint the stream uses
  std::once_flag stop_once_;
  std::thread thread_;
};

}  // namespace dapq::cluster

#endif  // DAPQ_CLUSTER_ETCD_WATCH_H_
