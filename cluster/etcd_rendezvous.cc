// File: cluster/etcd_rendezvous.cc
// The incarnation protocol of etcd_rendezvous.h: one transaction to open (rank 0), one to claim
// a slot (ranks > 0), one to check that the incarnation is still current.
#include "cluster/etcd_rendezvous.h"

#include <unistd.h>

#include <algorithm>
#include <optional>
#include <string>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "common/status_macros.h"

namespace dapq::cluster {
namespace {

constexpr absl::Duration kMinPoll = absl::Milliseconds(10);
constexpr absl::Duration kMaxPoll = absl::Milliseconds(250);

std::string CounterKey(const std::string& group_key) { return group_key + "/incarnation"; }
std::string OpenKey(const std::string& group_key, int64_t inc) {
  return absl::StrCat(group_key, "/", inc, "/open");
}
std::string MemberKey(const std::string& group_key, int64_t inc, int rank) {
  return absl::StrCat(group_key, "/", inc, "/member/", rank);
}

std::string Describe(const EtcdRendezvousOptions& o) {
  return absl::StrCat("etcd rendezvous of group '", o.group_id, "' (rank ", o.rank, " of ", o.size,
                      ")");
}

// Sleeps until the poll interval or the deadline, whichever comes first; doubles the interval.
void PollWait(absl::Duration* interval, absl::Time deadline) {
  const absl::Duration d = std::min(*interval, deadline - absl::Now());
  if (d > absl::ZeroDuration()) absl::SleepFor(d);
  *interval = std::min(*interval * 2, kMaxPoll);
}

absl::Duration Left(absl::Time deadline) {
  return std::max(deadline - absl::Now(), absl::Milliseconds(1));
}

// Rank 0: counter C -> C+1, open and member/0 in one transaction. Retries lost races.
absl::StatusOr<int64_t> Open(EtcdClient& client, const std::string& group_key, int64_t lease,
                             absl::Time deadline, const EtcdRendezvousOptions& o) {
  const std::string counter = CounterKey(group_key);
  for (;;) {
    DAPQ_ASSIGN_OR_RETURN(std::optional<EtcdKeyValue> current, client.Get(counter, Left(deadline)));
    int64_t value = 0;
    int64_t mod_revision = 0;
    if (current.has_value()) {
      mod_revision = current->mod_revision;
      if (!absl::SimpleAtoi(current->value, &value)) {
        return absl::FailedPreconditionError(absl::StrCat(Describe(o), ": ", counter, " holds '",
                                                          current->value, "', not a counter"));
      }
    }
    const int64_t next = value + 1;
    DAPQ_ASSIGN_OR_RETURN(
        EtcdTxnResult r,
        client.Txn(
            {EtcdCompare::ModRevisionIs(counter, mod_revision)},
            {EtcdOp::Put(counter, std::to_string(next)),
             EtcdOp::Put(OpenKey(group_key, next), std::to_string(next), lease),
             EtcdOp::Put(MemberKey(group_key, next, 0), absl::StrCat("pid ", ::getpid()), lease)},
            {}, Left(deadline)));
    if (r.succeeded) return next;
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat(Describe(o), ": could not increment ", counter, " (contended)"));
    }
  }
}

// Rank r > 0: waits for the counter's incarnation to be open and claims slot r in it.
absl::StatusOr<int64_t> Claim(EtcdClient& client, const std::string& group_key, int64_t lease,
                              absl::Time deadline, const EtcdRendezvousOptions& o) {
  const std::string counter = CounterKey(group_key);
  absl::Duration interval = kMinPoll;
  absl::Status last = absl::OkStatus();
  std::string seen = "no incarnation yet";
  for (;;) {
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat(Describe(o), ": rank 0 did not open an incarnation in time (", seen, ")",
                       last.ok() ? "" : absl::StrCat("; last etcd error: ", last.ToString())));
    }
    absl::StatusOr<EtcdRange> range = client.GetPrefix(group_key + "/", Left(deadline));
    if (!range.ok()) {
      last = range.status();
      PollWait(&interval, deadline);
      continue;
    }
    int64_t inc = 0;
    bool open = false;
    for (const EtcdKeyValue& kv : range->kvs) {
      if (kv.key == counter) (void)absl::SimpleAtoi(kv.value, &inc);
    }
    if (inc > 0) {
      const std::string open_key = OpenKey(group_key, inc);
      for (const EtcdKeyValue& kv : range->kvs) open = open || kv.key == open_key;
      seen = absl::StrCat("incarnation ", inc, open ? " open" : " not open");
    }
    if (open) {
      absl::StatusOr<EtcdTxnResult> r = client.Txn(
          {EtcdCompare::ValueIs(counter, std::to_string(inc)),
           EtcdCompare::KeyExists(OpenKey(group_key, inc)),
           EtcdCompare::KeyMissing(MemberKey(group_key, inc, o.rank))},
          {EtcdOp::Put(MemberKey(group_key, inc, o.rank), absl::StrCat("pid ", ::getpid()), lease)},
          {}, Left(deadline));
      if (r.ok() && r->succeeded) return inc;
      if (!r.ok()) last = r.status();
      if (r.ok()) seen = absl::StrCat("incarnation ", inc, " open, but rank ", o.rank, " taken");
    }
    PollWait(&interval, deadline);
  }
}

}  // namespace

absl::Status EtcdRendezvousOptions::Validate() const {
  if (group_id.empty()) return absl::InvalidArgumentError("etcd rendezvous: empty group_id");
  if (absl::StrContains(group_id, '/')) {
    return absl::InvalidArgumentError(
        absl::StrCat("etcd rendezvous: group_id '", group_id, "' contains '/'"));
  }
  if (size < 1 || rank < 0 || rank >= size) {
    return absl::InvalidArgumentError(
        absl::StrCat("etcd rendezvous: rank=", rank, " outside [0, size=", size, ")"));
  }
  if (lease_ttl_s < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("etcd rendezvous: lease_ttl_s=", lease_ttl_s, " < 1"));
  }
  return absl::OkStatus();
}

std::string RendezvousGroupKey(const EtcdRendezvousOptions& options) {
  return absl::StrCat(options.prefix, "/rendezvous/", options.group_id);
}

EtcdRendezvous::EtcdRendezvous(std::shared_ptr<EtcdClient> client, EtcdRendezvousOptions options,
                               std::unique_ptr<KeptAliveLease> lease, int64_t incarnation)
    : client_(std::move(client)),
      options_(std::move(options)),
      lease_(std::move(lease)),
      incarnation_(incarnation),
      group_key_(RendezvousGroupKey(options_)),
      store_prefix_(absl::StrCat(group_key_, "/", incarnation_, "/store/")) {}

absl::StatusOr<std::unique_ptr<EtcdRendezvous>> EtcdRendezvous::Join(
    std::shared_ptr<EtcdClient> client, const EtcdRendezvousOptions& options, absl::Time deadline) {
  DAPQ_RETURN_IF_ERROR(options.Validate());
  if (client == nullptr) return absl::InvalidArgumentError("etcd rendezvous: null client");
  const std::string group_key = RendezvousGroupKey(options);
  DAPQ_ASSIGN_OR_RETURN(std::unique_ptr<KeptAliveLease> lease,
                        KeptAliveLease::Grant(client, options.lease_ttl_s));
  absl::StatusOr<int64_t> inc = options.rank == 0
                                    ? Open(*client, group_key, lease->id(), deadline, options)
                                    : Claim(*client, group_key, lease->id(), deadline, options);
  if (!inc.ok()) return inc.status();  // the lease is revoked on the way out
  DAPQ_LOG(INFO) << Describe(options) << ": " << (options.rank == 0 ? "opened" : "joined")
                 << " incarnation " << *inc;
  return std::unique_ptr<EtcdRendezvous>(
      new EtcdRendezvous(std::move(client), options, std::move(lease), *inc));
}

EtcdRendezvous::~EtcdRendezvous() = default;  // ~KeptAliveLease revokes

absl::Status EtcdRendezvous::CheckCurrent() const {
  if (lease_->lost()) {
    return absl::AbortedError(
        absl::StrCat(Describe(options_), ": lease of incarnation ", incarnation_, " lost"));
  }
  DAPQ_ASSIGN_OR_RETURN(
      EtcdTxnResult r,
      client_->Txn({EtcdCompare::ValueIs(CounterKey(group_key_), std::to_string(incarnation_)),
                    EtcdCompare::KeyExists(OpenKey(group_key_, incarnation_))},
                   {}, {}));
  if (r.succeeded) return absl::OkStatus();
  return absl::AbortedError(absl::StrCat(Describe(options_), ": incarnation ", incarnation_,
                                         " was superseded by a newer one or abandoned by rank 0"));
}

absl::Status EtcdRendezvous::Finish(absl::Time deadline) {
  if (finished_) return absl::OkStatus();
  finished_ = true;
  if (options_.rank != 0) {
    // Keep our slot until rank 0 closed the incarnation, so no newcomer can claim it.
    const std::string open_key = OpenKey(group_key_, incarnation_);
    absl::Duration interval = kMinPoll;
    while (absl::Now() < deadline) {
      absl::StatusOr<std::optional<EtcdKeyValue>> open = client_->Get(open_key, Left(deadline));
      if (open.ok() && !open->has_value()) break;
      PollWait(&interval, deadline);
    }
  }
  return lease_->Revoke();
}

}  // namespace dapq::cluster
