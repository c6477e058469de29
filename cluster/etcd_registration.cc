// File: cluster/etcd_registration.cc
// LeasedKey and KeptAliveLease over one periodic keepalive thread (internal::KeepAliveThread).
#include "cluster/etcd_registration.h"

#include <algorithm>
#include <functional>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "common/status_macros.h"

namespace dapq::cluster {
namespace internal {

// Runs `round` every `interval` on its own thread until stopped. After a failed round the next
// one comes sooner: 100 ms, doubling up to `interval`. A round that returns kDone ends the loop.
class KeepAliveThread {
 public:
  enum class Outcome { kOk, kRetry, kDone };

  KeepAliveThread(absl::Duration interval, std::function<Outcome()> round)
      : interval_(interval), round_(std::move(round)) {
    thread_ = std::thread([this] { Run(); });
  }
  ~KeepAliveThread() { Stop(); }

  // Wakes the thread and joins it (a round in progress finishes first). Idempotent; never call
  // from a round.
  void Stop() {
    {
      absl::MutexLock lock(&mu_);
      stopping_ = true;
    }
    std::call_once(join_once_, [this] { thread_.join(); });
  }

  bool healthy() const {
    absl::MutexLock lock(&mu_);
    return healthy_;
  }

 private:
  void Run() {
    absl::Duration wait = interval_;
    for (;;) {
      {
        absl::MutexLock lock(&mu_);
        if (mu_.AwaitWithTimeout(absl::Condition(&stopping_), wait)) return;
      }
      const Outcome outcome = round_();
      {
        absl::MutexLock lock(&mu_);
        healthy_ = outcome != Outcome::kRetry;
      }
      if (outcome == Outcome::kDone) return;
      if (outcome == Outcome::kOk) {
        wait = interval_;
      } else {
        wait = wait >= interval_ ? std::min(absl::Milliseconds(100), interval_)
                                 : std::min(wait * 2, interval_);
      }
    }
  }

  const absl::Duration interval_;
  const std::function<Outcome()> round_;
  mutable absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool healthy_ ABSL_GUARDED_BY(mu_) = true;
  std::once_flag join_once_;
  std::thread thread_;
};

}  // namespace internal

namespace {

using internal::KeepAliveThread;

absl::Duration KeepAliveInterval(int64_t ttl_s) { return absl::Seconds(ttl_s) / 3; }

// Each etcd call of a keepalive round must end well before the lease could expire.
absl::Duration CallTimeout(int64_t ttl_s) {
  return std::clamp(KeepAliveInterval(ttl_s), absl::Milliseconds(500), absl::Seconds(5));
}

}  // namespace

LeasedKey::LeasedKey(std::shared_ptr<EtcdClient> client, std::string key, std::string value,
                     int64_t ttl_s)
    : client_(std::move(client)),
      key_(std::move(key)),
      ttl_s_(ttl_s),
      call_timeout_(CallTimeout(ttl_s)),
      value_(std::move(value)) {}

absl::StatusOr<std::unique_ptr<LeasedKey>> LeasedKey::Create(std::shared_ptr<EtcdClient> client,
                                                             std::string key, std::string value,
                                                             int64_t ttl_s) {
  if (client == nullptr) return absl::InvalidArgumentError("leased key: null client");
  if (key.empty()) return absl::InvalidArgumentError("leased key: empty key");
  if (ttl_s < 1) {
    return absl::InvalidArgumentError(absl::StrCat("leased key ", key, ": ttl_s=", ttl_s, " < 1"));
  }
  std::unique_ptr<LeasedKey> k(
      new LeasedKey(std::move(client), std::move(key), std::move(value), ttl_s));
  {
    absl::MutexLock lock(&k->write_mu_);
    DAPQ_RETURN_IF_ERROR(k->Register());
  }
  LeasedKey* self = k.get();
  k->thread_ = std::make_unique<KeepAliveThread>(KeepAliveInterval(ttl_s), [self] {
    const absl::Status s = self->KeepAliveRound();
    if (s.ok()) return KeepAliveThread::Outcome::kOk;
    DAPQ_LOG(WARNING) << "leased key " << self->key_ << ": " << s;
    return KeepAliveThread::Outcome::kRetry;
  });
  return k;
}

LeasedKey::~LeasedKey() {
  const absl::Status s = Stop();
  if (!s.ok()) {
    DAPQ_LOG(WARNING) << "leased key " << key_ << ": revoke failed: " << s;
  }
}

absl::Status LeasedKey::Register() {
  DAPQ_ASSIGN_OR_RETURN(const int64_t lease, client_->LeaseGrant(ttl_s_, call_timeout_));
  const std::string current = value();
  const absl::StatusOr<int64_t> put = client_->Put(key_, current, lease, call_timeout_);
  if (!put.ok()) {
    // The unused lease would expire by itself; revoking is only tidier.
    (void)client_->LeaseRevoke(lease, call_timeout_);
    return put.status();
  }
  absl::MutexLock lock(&mu_);
  lease_ = lease;
  ++registrations_;
  return absl::OkStatus();
}

absl::Status LeasedKey::KeepAliveRound() {
  absl::MutexLock write(&write_mu_);
  if (stopped_) return absl::OkStatus();
  int64_t lease = 0;
  std::string current;
  {
    absl::MutexLock lock(&mu_);
    lease = lease_;
    current = value_;
  }
  const absl::StatusOr<int64_t> ttl = client_->LeaseKeepAliveOnce(lease, call_timeout_);
  if (!ttl.ok()) {
    if (!absl::IsNotFound(ttl.status())) return ttl.status();
    DAPQ_LOG(WARNING) << "leased key " << key_ << ": lease " << lease
                      << " is gone (expired or etcd lost it); registering again";
    return Register();
  }
  DAPQ_ASSIGN_OR_RETURN(const std::optional<EtcdKeyValue> kv, client_->Get(key_, call_timeout_));
  if (kv.has_value() && kv->lease == lease && kv->value == current) return absl::OkStatus();
  DAPQ_LOG(WARNING) << "leased key " << key_ << ": "
                    << (kv.has_value() ? "changed by someone else" : "deleted")
                    << "; putting it back";
  return client_->Put(key_, current, lease, call_timeout_).status();
}

absl::Status LeasedKey::Update(std::string value) {
  absl::MutexLock write(&write_mu_);
  if (stopped_) {
    return absl::FailedPreconditionError(absl::StrCat("leased key ", key_, ": stopped"));
  }
  int64_t lease = 0;
  {
    absl::MutexLock lock(&mu_);
    value_ = std::move(value);
    lease = lease_;
  }
  return client_->Put(key_, this->value(), lease, call_timeout_).status();
}

absl::Status LeasedKey::Stop() {
  if (thread_ != nullptr) thread_->Stop();
  absl::MutexLock write(&write_mu_);
  if (stopped_) return absl::OkStatus();
  stopped_ = true;
  const absl::Status s = client_->LeaseRevoke(lease_id(), call_timeout_);
  return absl::IsNotFound(s) ? absl::OkStatus() : s;
}

void LeasedKey::AbandonForTesting() {
  if (thread_ != nullptr) thread_->Stop();
  absl::MutexLock write(&write_mu_);
  stopped_ = true;
}

std::string LeasedKey::value() const {
  absl::MutexLock lock(&mu_);
  return value_;
}

int64_t LeasedKey::lease_id() const {
  absl::MutexLock lock(&mu_);
  return lease_;
}

bool LeasedKey::healthy() const { return thread_ == nullptr || thread_->healthy(); }

int64_t LeasedKey::registrations() const {
  absl::MutexLock lock(&mu_);
  return registrations_;
}

bool LeasedKey::AwaitRegistrations(int64_t n, absl::Duration timeout) const {
  absl::MutexLock lock(&mu_);
  const auto reached = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return registrations_ >= n; };
  return mu_.AwaitWithTimeout(absl::Condition(&reached), timeout);
}

KeptAliveLease::KeptAliveLease(std::shared_ptr<EtcdClient> client, int64_t id, int64_t ttl_s)
    : client_(std::move(client)), id_(id), call_timeout_(CallTimeout(ttl_s)) {}

absl::StatusOr<std::unique_ptr<KeptAliveLease>> KeptAliveLease::Grant(
    std::shared_ptr<EtcdClient> client, int64_t ttl_s) {
  if (client == nullptr) return absl::InvalidArgumentError("kept-alive lease: null client");
  DAPQ_ASSIGN_OR_RETURN(const int64_t id, client->LeaseGrant(ttl_s));
  std::unique_ptr<KeptAliveLease> lease(new KeptAliveLease(std::move(client), id, ttl_s));
  KeptAliveLease* self = lease.get();
  lease->thread_ = std::make_unique<KeepAliveThread>(KeepAliveInterval(ttl_s), [self] {
    const absl::StatusOr<int64_t> ttl =
        self->client_->LeaseKeepAliveOnce(self->id_, self->call_timeout_);
    if (ttl.ok()) return KeepAliveThread::Outcome::kOk;
    if (absl::IsNotFound(ttl.status())) {
      absl::MutexLock lock(&self->mu_);
      self->lost_ = true;
      return KeepAliveThread::Outcome::kDone;
    }
    return KeepAliveThread::Outcome::kRetry;
  });
  return lease;
}

KeptAliveLease::~KeptAliveLease() {
  const absl::Status s = Revoke();
  if (!s.ok()) {
    DAPQ_LOG(WARNING) << "etcd lease " << id_ << ": revoke failed: " << s;
  }
}

bool KeptAliveLease::lost() const {
  absl::MutexLock lock(&mu_);
  return lost_;
}

bool KeptAliveLease::AwaitLost(absl::Duration timeout) const {
  absl::MutexLock lock(&mu_);
  return mu_.AwaitWithTimeout(absl::Condition(&lost_), timeout);
}

absl::Status KeptAliveLease::Revoke() {
  if (thread_ != nullptr) thread_->Stop();
  {
    absl::MutexLock lock(&mu_);
    if (revoked_) return absl::OkStatus();
    revoked_ = true;
  }
  const absl::Status s = client_->LeaseRevoke(id_, call_timeout_);
  return absl::IsNotFound(s) ? absl::OkStatus() : s;
}

}  // namespace dapq::cluster
