// File: coordinator/group_registry.cc
// GroupRegistry: heartbeats, health, least-loaded routing with session affinity.
#include "coordinator/group_registry.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/tls.h"

namespace dapq::coordinator {
namespace {

// The smallest free share of any rank's KV pool (the "cache" tier), 1 when uncapped.
double FreePoolShare(const dapq::v1::GroupStatus& status) {
  double free = 1.0;
  for (const auto& rank : status.ranks()) {
    for (const auto& tier : rank.tiers()) {
      if (tier.tier() != "cache" || tier.capacity_bytes() <= 0) continue;
      free = std::min(free, 1.0 - static_cast<double>(tier.used_bytes()) /
                                      static_cast<double>(tier.capacity_bytes()));
    }
  }
  return free;
}

// Rendezvous (highest random weight) hashing: FNV-1a 64 of "session\0group", then a
// SplitMix64 finalizer. The same in every process (no per-process seed, unlike absl::Hash).
uint64_t RendezvousWeight(const std::string& session_id, const std::string& group_id) {
  uint64_t h = 0xcbf29ce484222325ull;
  const auto mix = [&h](const std::string& text) {
    for (unsigned char c : text) h = (h ^ c) * 0x100000001b3ull;
  };
  mix(session_id);
  h = (h ^ 0u) * 0x100000001b3ull;
  mix(group_id);
  h ^= h >> 30;
  h *= 0xbf58476d1ce4e5b9ull;
  h ^= h >> 27;
  h *= 0x94d049bb133111ebull;
  return h ^ (h >> 31);
}

}  // namespace

GroupRegistry::GroupRegistry(const GroupRegistryOptions& options) : options_(options) {}

absl::Status ValidateHeartbeat(const dapq::v1::GroupStatus& s) {
  const auto bad = [](absl::string_view field, const auto& value, absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat("status.", field, "=", value, ": ", why));
  };
  if (s.group_id().empty() || s.group_id().size() > 128) {
    return bad("group_id", absl::StrCat("'", s.group_id().substr(0, 128), "'"),
               "must hold 1 to 128 characters");
  }
  if (s.address().empty() || s.address().size() > 256) {
    return bad("address", absl::StrCat("'", s.address().substr(0, 256), "'"),
               "must hold 1 to 256 characters");
  }
  constexpr int64_t kMaxCount = int64_t{1} << 20;
  if (s.tp() < 1 || s.tp() > kMaxCount) return bad("tp", s.tp(), "outside [1, 2^20]");
  if (s.max_seq_len() < 0 || s.max_seq_len() > kMaxCount * 64) {
    return bad("max_seq_len", s.max_seq_len(), "outside [0, 2^26]");
  }
  const std::pair<const char*, int64_t> counts[] = {
      {"queue_depth", s.queue_depth()},       {"active", s.active()},
      {"in_flight", s.in_flight()},           {"sessions", s.sessions()},
      {"batch_capacity", s.batch_capacity()}, {"waiting", s.waiting()}};
  for (const auto& [field, value] : counts) {
    if (value < 0 || value > kMaxCount) return bad(field, value, "outside [0, 2^20]");
  }
  if (s.kv_bytes_used() < 0) return bad("kv_bytes_used", s.kv_bytes_used(), "negative");
  if (s.requests_served() < 0) return bad("requests_served", s.requests_served(), "negative");
  if (s.ranks_size() > s.tp()) return bad("ranks", s.ranks_size(), "more entries than tp");
  for (const auto& rank : s.ranks()) {
    if (rank.tiers_size() > 16) return bad("ranks.tiers", rank.tiers_size(), "more than 16");
    for (const auto& tier : rank.tiers()) {
      if (tier.used_bytes() < 0 || tier.capacity_bytes() < 0 || tier.blocks() < 0) {
        return bad("ranks.tiers", tier.tier(), "negative usage");
      }
    }
  }
  return absl::OkStatus();
}

int GroupRegistry::known_groups() const {
  MutexLock lock(&mu_);
  return static_cast<int>(groups_.size());
}

absl::Status GroupRegistry::Heartbeat(const dapq::v1::GroupStatus& status) {
  if (absl::Status s = ValidateHeartbeat(status); !s.ok()) return s;
  MutexLock lock(&mu_);
  const auto now = std::chrono::steady_clock::now();
  const auto forget = options_.forget_after_missed * options_.heartbeat_interval;
  for (auto it = groups_.begin(); it != groups_.end();) {
    if (it->first != status.group_id() && now - it->second.last_heartbeat > forget &&
        it->second.in_flight == 0) {
      ForgetSessionsOf(it->first);
      it = groups_.erase(it);
    } else {
      ++it;
    }
  }
  Group& g = groups_[status.group_id()];
  if (g.stub == nullptr || g.channel_address != status.address()) {
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(64 << 20);
    g.stub = dapq::v1::WorkerGroup::NewStub(ClientChannel(status.address(), args));
    g.channel_address = status.address();
  }
  g.status = status;
  g.last_heartbeat = now;
  g.failed = false;
  g.failure.clear();
  return absl::OkStatus();
}

bool GroupRegistry::Healthy(const std::string& id, const Group& g,
                            std::chrono::steady_clock::time_point now, std::string* why) const {
  if (membership_known_ && !membership_.count(id)) {
    *why = "not registered in etcd";
    return false;
  }
  if (!g.status.healthy()) {
    *why = g.status.health_detail().empty() ? "the group reports it is down"
                                            : g.status.health_detail();
    return false;
  }
  if (g.failed) {
    *why = g.failure;
    return false;
  }
  const auto age = now - g.last_heartbeat;
  if (age > options_.missed_heartbeats * options_.heartbeat_interval) {
    *why = absl::StrCat("no heartbeat for ",
                        std::chrono::duration_cast<std::chrono::milliseconds>(age).count(), " ms");
    return false;
  }
  return true;
}

absl::StatusOr<GroupLease> GroupRegistry::Acquire(const std::string& session_id,
                                                  const std::set<std::string>& exclude) {
  MutexLock lock(&mu_);
  const auto now = std::chrono::steady_clock::now();
  std::string why;
  Group* chosen = nullptr;
  std::string chosen_id;
  if (!session_id.empty()) {
    auto s = sessions_.find(session_id);
    if (s != sessions_.end()) {
      auto g = groups_.find(s->second);
      if (g != groups_.end() && !exclude.count(g->first) &&
          Healthy(g->first, g->second, now, &why)) {
        chosen = &g->second;
        chosen_id = g->first;
      }
    }
  }
  if (chosen == nullptr && !session_id.empty() && options_.deterministic_sessions) {
    uint64_t best = 0;
    for (auto& [id, g] : groups_) {
      if (exclude.count(id) || !Healthy(id, g, now, &why)) continue;
      const uint64_t weight = RendezvousWeight(session_id, id);
      if (chosen == nullptr || weight > best) {
        best = weight;
        chosen = &g;
        chosen_id = id;
      }
    }
  }
  if (chosen == nullptr) {
    // Load per batch slot (compared exactly, as cross products), then the free KV-pool share,
    // then KV bytes.
    long best_load = 0, best_capacity = 0;
    double best_free = -1;
    int64_t best_kv = std::numeric_limits<int64_t>::max();
    for (auto& [id, g] : groups_) {
      if (exclude.count(id) || !Healthy(id, g, now, &why)) continue;
      const long load = g.in_flight + g.status.queue_depth() + g.status.waiting();
      const long capacity = std::max(1, g.status.batch_capacity());
      const double free = FreePoolShare(g.status);
      const int64_t kv = g.status.kv_bytes_used();
      const long lhs = load * best_capacity, rhs = best_load * capacity;
      const bool better = chosen == nullptr || lhs < rhs ||
                          (lhs == rhs && (free > best_free || (free == best_free && kv < best_kv)));
      if (better) {
        best_load = load;
        best_capacity = capacity;
        best_free = free;
        best_kv = kv;
        chosen = &g;
        chosen_id = id;
      }
    }
  }
  if (chosen == nullptr) {
    if (groups_.empty()) return absl::UnavailableError("no worker group has registered yet");
    return absl::UnavailableError(absl::StrCat("no healthy worker group",
                                               exclude.empty() ? "" : " left to retry on",
                                               why.empty() ? "" : absl::StrCat(" (", why, ")")));
  }
  ++chosen->in_flight;
  return GroupLease{chosen_id, chosen->stub};
}

void GroupRegistry::Release(const GroupLease& lease, bool group_failed, const std::string& detail,
                            const std::string& session_id) {
  MutexLock lock(&mu_);
  auto it = groups_.find(lease.group_id);
  if (it == groups_.end()) return;
  --it->second.in_flight;
  if (membership_known_ && !membership_.count(lease.group_id) && it->second.in_flight == 0) {
    ForgetSessionsOf(lease.group_id);
    groups_.erase(it);
    return;
  }
  if (group_failed) {
    it->second.failed = true;
    it->second.failure = detail;
    ForgetSessionsOf(lease.group_id);
  } else if (!session_id.empty()) {
    if (sessions_.size() >= options_.max_sessions && !sessions_.count(session_id)) {
      sessions_.erase(sessions_.begin());
    }
    sessions_[session_id] = lease.group_id;
  }
}

int GroupRegistry::batch_capacity(int per_group) const {
  MutexLock lock(&mu_);
  const auto now = std::chrono::steady_clock::now();
  int n = 0;
  std::string why;
  for (const auto& [id, g] : groups_) {
    if (Healthy(id, g, now, &why)) n += std::max(per_group, g.status.batch_capacity());
  }
  return n;
}

int GroupRegistry::healthy_groups() const {
  MutexLock lock(&mu_);
  const auto now = std::chrono::steady_clock::now();
  int n = 0;
  std::string why;
  for (const auto& [id, g] : groups_) n += Healthy(id, g, now, &why) ? 1 : 0;
  return n;
}

int GroupRegistry::min_max_seq_len() const {
  MutexLock lock(&mu_);
  const auto now = std::chrono::steady_clock::now();
  int best = 0;
  std::string why;
  for (const auto& [id, g] : groups_) {
    if (!Healthy(id, g, now, &why)) continue;
    const int len = g.status.max_seq_len();
    if (best == 0 || len < best) best = len;
  }
  return best;
}

std::vector<dapq::v1::GroupStatus> GroupRegistry::Snapshot() const {
  MutexLock lock(&mu_);
  const auto now = std::chrono::steady_clock::now();
  std::vector<dapq::v1::GroupStatus> out;
  for (const auto& [id, g] : groups_) {
    dapq::v1::GroupStatus s = g.status;
    std::string why;
    s.set_healthy(Healthy(id, g, now, &why));
    s.set_health_detail(why);
    s.set_in_flight(g.in_flight);
    s.set_last_heartbeat_age_ms(
        std::chrono::duration_cast<std::chrono::milliseconds>(now - g.last_heartbeat).count());
    out.push_back(std::move(s));
  }
  return out;
}

void GroupRegistry::ForgetSessionsOf(const std::string& group_id) {
  for (auto s = sessions_.begin(); s != sessions_.end();) {
    s = s->second == group_id ? sessions_.erase(s) : std::next(s);
  }
}

void GroupRegistry::SetMembership(const std::set<std::string>& groups) {
  MutexLock lock(&mu_);
  membership_known_ = true;
  membership_ = groups;
  for (auto it = groups_.begin(); it != groups_.end();) {
    if (groups.count(it->first)) {
      ++it;
    } else if (it->second.in_flight == 0) {
      ForgetSessionsOf(it->first);
      it = groups_.erase(it);
    } else {
      ForgetSessionsOf(it->first);
      ++it;  // Release forgets it when its last request ends
    }
  }
}

std::string GroupRegistry::SessionGroup(const std::string& session_id) const {
  MutexLock lock(&mu_);
  auto it = sessions_.find(session_id);
  return it == sessions_.end() ? "" : it->second;
}

}  // namespace dapq::coordinator
