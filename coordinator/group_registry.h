// File: coordinator/group_registry.h
// The coordinator's view of its worker groups: registered and refreshed by heartbeats (each
// carries the group's load and health), a gRPC stub per group, requests in flight, and the
// session table (session id -> group). Routing: a session's group while it is healthy, else the
// healthy group with the least load relative to its batch capacity (in flight + queued and
// waiting at the worker, over the sequences it batches), then the most free KV-pool blocks, then
// the fewest KV bytes.
// A group is unhealthy when it says so, when it missed heartbeats for `missed_heartbeats`
// intervals, or when a call to it failed with a group failure (until its next heartbeat). A group
// silent for `forget_after_missed` intervals is forgotten (with its sessions): group ids that
// come and go do not accumulate. Heartbeats are validated first (ValidateHeartbeat). With etcd
// (SetMembership), the groups holding a lease there are the only routable ones, and a group
// whose lease expired is forgotten at once.
// Thread-safety: thread-safe.
#ifndef DAPQ_COORDINATOR_GROUP_REGISTRY_H_
#define DAPQ_COORDINATOR_GROUP_REGISTRY_H_

#include <chrono>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <unordered_map>

#include "absl/status/statusor.h"
#include "common/mutex.h"
#include "dapq/v1/admin.pb.h"
#include "dapq/v1/worker.grpc.pb.h"

namespace dapq::coordinator {

struct GroupRegistryOptions {
  std::chrono::milliseconds heartbeat_interval{500};
  int missed_heartbeats = 4;
  int forget_after_missed = 120;
  size_t max_sessions = 100000;  // session table entries (oldest dropped beyond)
  // Several coordinators route the same sessions: a session with no binding here goes to the
  // healthy group that rendezvous hashing of (session id, group id) ranks first, which every
  // coordinator seeing the same groups picks alike (instead of the least loaded group).
  bool deterministic_sessions = false;
};

// A group chosen for one request; Release it when the request ends.
struct GroupLease {
  std::string group_id;
  std::shared_ptr<dapq::v1::WorkerGroup::Stub> stub;
};

// InvalidArgument naming the field for a heartbeat no worker sends: a missing or oversized id or
// address, a tp or context outside [1, 2^20], a negative or absurd load, more rank or tier
// entries than a group has.
absl::Status ValidateHeartbeat(const dapq::v1::GroupStatus& status);

class GroupRegistry {
 public:
  explicit GroupRegistry(const GroupRegistryOptions& options);

  // Registers or refreshes a group from its heartbeat (ValidateHeartbeat's errors, nothing
  // changed), and forgets groups silent for forget_after_missed intervals.
  absl::Status Heartbeat(const dapq::v1::GroupStatus& status);
  int known_groups() const;  // healthy or not
  // Picks a healthy group not in `exclude` (session affinity first) and counts the request in
  // flight there. Unavailable naming the reason when there is none.
  absl::StatusOr<GroupLease> Acquire(const std::string& session_id,
                                     const std::set<std::string>& exclude);
  // Ends a request. `group_failed`: the group did not answer or said it is down — it is marked
  // unhealthy with `detail` until its next heartbeat. `session_id` (non-empty, request
  // succeeded) is bound to the group.
  void Release(const GroupLease& lease, bool group_failed, const std::string& detail,
               const std::string& session_id);

  int healthy_groups() const;
  // The requests the healthy groups run together: the sum of their batch capacities, each at
  // least `per_group` (workers that report none).
  int batch_capacity(int per_group) const;
  // The smallest context limit over healthy groups (0 when none).
  int min_max_seq_len() const;
  std::vector<dapq::v1::GroupStatus> Snapshot() const;
  // The group a session is bound to ("" when none).
  std::string SessionGroup(const std::string& session_id) const;
  // The groups registered in etcd (every change of the watched prefix). From the first call on,
  // a group outside the set is unhealthy ("not registered in etcd") and one that left it is
  // forgotten with its sessions (at once, or when its last request ends); heartbeats alone no
  // longer make a group routable. Not called while etcd is unreachable: the last set stays.
  void SetMembership(const std::set<std::string>& groups);

 private:
  struct Group {
    dapq::v1::GroupStatus status;  // from the last heartbeat
    std::chrono::steady_clock::time_point last_heartbeat;
    std::shared_ptr<dapq::v1::WorkerGroup::Stub> stub;
    std::string channel_address;
    int in_flight = 0;
    bool failed = false;  // a call failed since the last heartbeat
    std::string failure;
  };
  bool Healthy(const std::string& id, const Group& g, std::chrono::steady_clock::time_point now,
               std::string* why) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ForgetSessionsOf(const std::string& group_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const GroupRegistryOptions options_;
  mutable Mutex mu_;
  bool membership_known_ ABSL_GUARDED_BY(mu_) = false;
  std::set<std::string> membership_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, Group> groups_ ABSL_GUARDED_BY(mu_);
  std::unordered_map<std::string, std::string> sessions_ ABSL_GUARDED_BY(mu_);
};

}  // namespace dapq::coordinator

#endif  // DAPQ_COORDINATOR_GROUP_REGISTRY_H_
