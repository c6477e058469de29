// File: worker/comm/etcd_store.cc
// EtcdStore: create-if-absent puts and polled waits, failures thrown as gloo::IoException.
#include "worker/comm/etcd_store.h"

#include <algorithm>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gloo/common/error.h"

namespace dapq::worker {
namespace {

constexpr absl::Duration kMinPoll = absl::Milliseconds(5);
constexpr absl::Duration kMaxPoll = absl::Milliseconds(100);

}  // namespace

EtcdStore::EtcdStore(std::shared_ptr<cluster::EtcdClient> client, EtcdStoreOptions options)
    : client_(std::move(client)), options_(std::move(options)) {}

absl::Status EtcdStore::error() const {
  absl::MutexLock lock(&mu_);
  return error_;
}

void EtcdStore::Fail(const absl::Status& status) {
  {
    absl::MutexLock lock(&mu_);
    if (error_.ok()) error_ = status;
  }
  throw ::gloo::IoException(status.ToString());
}

void EtcdStore::set(const std::string& key, const std::vector<char>& data) {
  const std::string full = options_.prefix + key;
  const std::string value(data.begin(), data.end());
  absl::StatusOr<bool> created = client_->CreateIfAbsent(full, value, options_.lease);
  if (!created.ok()) {
    Fail(absl::Status(created.status().code(),
                      absl::StrCat("etcd store set ", full, ": ", created.status().message())));
  }
  if (*created) return;
  // Already there: fine if it is ours (a retried set), an error otherwise.
  absl::StatusOr<std::optional<cluster::EtcdKeyValue>> kv = client_->Get(full);
  if (kv.ok() && kv->has_value() && (*kv)->value == value) return;
  Fail(absl::FailedPreconditionError(
      absl::StrCat("etcd store: key '", full, "' already set by another writer")));
}

std::vector<char> EtcdStore::get(const std::string& key) {
  const std::string full = options_.prefix + key;
  absl::StatusOr<std::map<std::string, std::string>> values = WaitFor({full}, options_.timeout);
  if (!values.ok()) Fail(values.status());
  const std::string& value = values->at(full);
  return std::vector<char>(value.begin(), value.end());
}

void EtcdStore::wait(const std::vector<std::string>& keys) {
  wait(keys, std::chrono::milliseconds(absl::ToInt64Milliseconds(options_.timeout)));
}

void EtcdStore::wait(const std::vector<std::string>& keys,
                     const std::chrono::milliseconds& timeout) {
  std::vector<std::string> full;
  full.reserve(keys.size());
  for (const std::string& k : keys) full.push_back(options_.prefix + k);
  absl::StatusOr<std::map<std::string, std::string>> values =
      WaitFor(full, std::min(absl::FromChrono(timeout), options_.timeout));
  if (!values.ok()) Fail(values.status());
}

absl::StatusOr<std::map<std::string, std::string>> EtcdStore::WaitFor(
    const std::vector<std::string>& keys, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  absl::Duration interval = kMinPoll;
  absl::Status last = absl::OkStatus();
  std::vector<std::string> missing = keys;
  for (;;) {
    const absl::Duration left = std::max(deadline - absl::Now(), absl::Milliseconds(1));
    std::map<std::string, std::string> found;
    absl::Status s;
    if (keys.size() == 1) {
      absl::StatusOr<std::optional<cluster::EtcdKeyValue>> kv = client_->Get(keys[0], left);
      if (!kv.ok()) {
        s = kv.status();
      } else if (kv->has_value()) {
        found[keys[0]] = std::move((*kv)->value);
      }
    } else {
      absl::StatusOr<cluster::EtcdRange> range = client_->GetPrefix(options_.prefix, left);
      if (!range.ok()) {
        s = range.status();
      } else {
        for (cluster::EtcdKeyValue& kv : range->kvs) found[kv.key] = std::move(kv.value);
      }
    }
    if (s.ok()) {
      missing.clear();
      for (const std::string& k : keys) {
        if (found.find(k) == found.end()) missing.push_back(k);
      }
      if (missing.empty()) return found;
    } else {
      last = s;
    }
    if (options_.check) {
      const absl::Status check = options_.check();
      if (!check.ok() && !absl::IsUnavailable(check) && !absl::IsDeadlineExceeded(check)) {
        return check;
      }
    }
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat("etcd store: Wait timeout for key(s): ", absl::StrJoin(missing, ", "),
                       " after ", absl::FormatDuration(timeout),
                       last.ok() ? "" : absl::StrCat(" (last etcd error: ", last.ToString(), ")")));
    }
    absl::SleepFor(std::min(interval, deadline - absl::Now()));
    interval = std::min(interval * 2, kMaxPoll);
  }
}

}  // namespace dapq::worker
