// File: cluster/etcd_watch.cc
// PrefixWatcher: list, then stream /v3/watch (newline-delimited JSON messages) on a thread;
// re-list and re-watch with backoff whenever the stream ends.
//
// Cancelling the stream: httplib's Client::stop() shuts the socket of a request in flight down
// (the blocked read then fails at once). It does nothing to a request that has not connected
// yet, and connecting happens under the client's own lock, so Stop() repeats stop() until the
// thread reports that it is done: the stop flag is checked before every request and by the
// content receiver, so at most one request can slip through between the check and the connect,
// and the next stop() then finds it in flight.
#include "cluster/etcd_watch.h"

#include <httplib.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <algorithm>
#include <chrono>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "cluster/internal/etcd_json.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"

namespace dapq::cluster {
namespace {

using Json = nlohmann::json;

// Keepalive probes on the stream's socket: a host that vanished (no FIN, no RST) is noticed
// after about idle + count * interval = 5 s instead of at the idle resync.
void SetKeepAlive(socket_t sock) {
  int on = 1;
  ::setsockopt(sock, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on));
  int idle = 2, interval = 1, count = 3;
  ::setsockopt(sock, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
  ::setsockopt(sock, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof(interval));
  ::setsockopt(sock, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof(count));
}

}  // namespace

PrefixWatcher::PrefixWatcher(std::shared_ptr<EtcdClient> client, std::string prefix,
                             Callback on_change, PrefixWatcherOptions options)
    : client_(std::move(client)),
      prefix_(std::move(prefix)),
      on_change_(std::move(on_change)),
      options_(options) {}

absl::StatusOr<std::unique_ptr<PrefixWatcher>> PrefixWatcher::Start(
    std::shared_ptr<EtcdClient> client, std::string prefix, Callback on_change,
    PrefixWatcherOptions options) {
  if (client == nullptr) return absl::InvalidArgumentError("prefix watcher: null client");
  if (options.min_backoff <= absl::ZeroDuration() || options.max_backoff < options.min_backoff ||
      options.idle_resync <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("prefix watcher: need 0 < min_backoff <= max_backoff and idle_resync > 0 "
                     "(min_backoff=",
                     absl::FormatDuration(options.min_backoff),
                     " max_backoff=", absl::FormatDuration(options.max_backoff),
                     " idle_resync=", absl::FormatDuration(options.idle_resync), ")"));
  }
  std::unique_ptr<PrefixWatcher> w(
      new PrefixWatcher(std::move(client), std::move(prefix), std::move(on_change), options));
  DAPQ_ASSIGN_OR_RETURN(EtcdRange range, w->client_->GetPrefix(w->prefix_, options.list_timeout));
  {
    absl::MutexLock lock(&w->mu_);
    for (EtcdKeyValue& kv : range.kvs) w->map_[std::move(kv.key)] = std::move(kv.value);
    w->revision_ = range.revision;
  }
  w->Notify();
  w->thread_ = std::thread([p = w.get()] { p->Run(); });
  return w;
}

PrefixWatcher::~PrefixWatcher() { Stop(); }

void PrefixWatcher::Stop() {
  std::call_once(stop_once_, [this] {
    {
      absl::MutexLock lock(&mu_);
      stopping_ = true;
    }
    stop_flag_.store(true);
    if (!thread_.joinable()) return;
    for (;;) {
      {
        absl::MutexLock lock(&stream_mu_);
        if (stream_client_ != nullptr) stream_client_->stop();
      }
      absl::MutexLock lock(&mu_);
      if (mu_.AwaitWithTimeout(absl::Condition(&thread_done_), absl::Milliseconds(20))) break;
    }
    thread_.join();
  });
}

PrefixWatcher::Map PrefixWatcher::Snapshot() const {
  absl::MutexLock lock(&mu_);
  return map_;
}

int64_t PrefixWatcher::revision() const {
  absl::MutexLock lock(&mu_);
  return revision_;
}

bool PrefixWatcher::healthy() const {
  absl::MutexLock lock(&mu_);
  return healthy_;
}

int64_t PrefixWatcher::resyncs() const {
  absl::MutexLock lock(&mu_);
  return resyncs_;
}

bool PrefixWatcher::Await(const std::function<bool(const Map&, bool)>& pred,
                          absl::Duration timeout) const {
  absl::MutexLock lock(&mu_);
  const auto holds = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return pred(map_, healthy_); };
  return mu_.AwaitWithTimeout(absl::Condition(&holds), timeout);
}

void PrefixWatcher::SetHealthy(bool healthy) {
  absl::MutexLock lock(&mu_);
  if (healthy_ != healthy) {
    DAPQ_LOG(INFO) << "etcd watch of " << prefix_ << ": "
                   << (healthy ? "in sync again" : "lost etcd, keeping the last known keys");
  }
  healthy_ = healthy;
}

void PrefixWatcher::Notify() {
  if (!on_change_) return;
  Map copy = Snapshot();
  on_change_(copy);
}

bool PrefixWatcher::WaitBackoff(absl::Duration d) {
  absl::MutexLock lock(&mu_);
  return !mu_.AwaitWithTimeout(absl::Condition(&stopping_), d);
}

absl::StatusOr<int64_t> PrefixWatcher::Relist() {
  DAPQ_ASSIGN_OR_RETURN(EtcdRange range, client_->GetPrefix(prefix_, options_.list_timeout));
  Map fresh;
  for (EtcdKeyValue& kv : range.kvs) fresh[std::move(kv.key)] = std::move(kv.value);
  bool changed = false;
  {
    absl::MutexLock lock(&mu_);
    changed = fresh != map_;
    map_ = std::move(fresh);
    revision_ = range.revision;
    healthy_ = true;
    ++resyncs_;
  }
  if (changed) Notify();
  return range.revision;
}

void PrefixWatcher::Run() {
  int64_t start_revision = revision() + 1;
  absl::Duration backoff = options_.min_backoff;
  bool listed = true;  // Start listed
  while (!stop_flag_.load()) {
    if (!listed) {
      absl::StatusOr<int64_t> rev = Relist();
      if (!rev.ok()) {
        if (healthy()) {
          DAPQ_LOG(WARNING) << "etcd watch of " << prefix_ << ": " << rev.status();
        }
        SetHealthy(false);
        if (!WaitBackoff(backoff)) break;
        backoff = std::min(backoff * 2, options_.max_backoff);
        continue;
      }
      start_revision = *rev + 1;
    }
    bool created = false;
    const absl::Status s = WatchOnce(start_revision, &created);
    listed = false;
    if (stop_flag_.load()) break;
    if (created) {
      backoff = options_.min_backoff;  // it worked: list again at once
      continue;
    }
    // The watch never started: etcd is unreachable or refused it.
    DAPQ_LOG(WARNING) << "etcd watch of " << prefix_ << ": " << s;
    SetHealthy(false);
    if (!WaitBackoff(backoff)) break;
    backoff = std::min(backoff * 2, options_.max_backoff);
  }
  absl::MutexLock lock(&mu_);
  thread_done_ = true;
}

absl::Status PrefixWatcher::WatchOnce(int64_t start_revision, bool* created) {
  const std::vector<EtcdEndpoint>& endpoints = client_->endpoints();
  const EtcdEndpoint& endpoint = endpoints[endpoint_ % endpoints.size()];
  httplib::Client http(endpoint.host, endpoint.port);
  const absl::Duration connect =
      options_.list_timeout > absl::ZeroDuration() ? options_.list_timeout : absl::Seconds(5);
  http.set_connection_timeout(absl::ToChronoMicroseconds(connect));
  http.set_read_timeout(absl::ToChronoMicroseconds(options_.idle_resync));
  http.set_write_timeout(absl::ToChronoMicroseconds(connect));
  http.set_keep_alive(false);
  http.set_socket_options(SetKeepAlive);
  {
    absl::MutexLock lock(&stream_mu_);
    stream_client_ = &http;
  }

  const Json create = {{"create_request",
                        {{"key", internal::Base64(prefix_)},
                         {"range_end", internal::Base64(EtcdPrefixRangeEnd(prefix_))},
                         {"start_revision", std::to_string(start_revision)}}}};
  httplib::Request req;
  req.method = "POST";
  req.path = "/v3/watch";
  req.body = create.dump();
  req.set_header("Content-Type", "application/json");
  std::string pending;  // bytes of an unfinished message
  absl::Status stream_status;
  req.content_receiver = [&](const char* data, size_t length, uint64_t, uint64_t) {
    if (stop_flag_.load()) return false;
    pending.append(data, length);
    size_t start = 0;
    for (size_t nl; (nl = pending.find('\n', start)) != std::string::npos; start = nl + 1) {
      if (nl > start && !HandleMessage(std::string_view(pending).substr(start, nl - start), created,
                                       &stream_status)) {
        return false;
      }
    }
    pending.erase(0, start);
    return true;
  };
  httplib::Response res;
  httplib::Error error = httplib::Error::Success;
  const bool sent = !stop_flag_.load() && http.send(req, res, error);
  {
    absl::MutexLock lock(&stream_mu_);
    stream_client_ = nullptr;
  }
  if (!sent &&
      (error == httplib::Error::Connection || error == httplib::Error::ConnectionTimeout)) {
    ++endpoint_;  // try the next endpoint next time
    return absl::UnavailableError(
        absl::StrCat("etcd watch at ", endpoint.ToString(), ": ", httplib::to_string(error)));
  }
  if (!stream_status.ok()) return stream_status;
  if (sent && res.status != 200) {
    return absl::UnavailableError(absl::StrCat("etcd watch at ", endpoint.ToString(), ": HTTP ",
                                               res.status, " ", res.body.substr(0, 200)));
  }
  return absl::UnavailableError(absl::StrCat("etcd watch at ", endpoint.ToString(),
                                             ": stream ended (",
                                             sent ? "closed" : httplib::to_string(error), ")"));
}

bool PrefixWatcher::HandleMessage(std::string_view line, bool* created,
                                  absl::Status* stream_status) {
  absl::StatusOr<Json> parsed = internal::ParseJson(line);
  if (!parsed.ok()) {
    *stream_status = parsed.status();
    return false;
  }
  const Json& j = *parsed;
  if (j.contains("error")) {
    const Json& e = j["error"];
    *stream_status = absl::UnavailableError(
        absl::StrCat("etcd watch of ", prefix_, ": ", e.is_object() ? e.value("message", "") : ""));
    return false;
  }
  const Json result = j.value("result", Json::object());
  if (result.value("canceled", false)) {
    // Typically the start revision was compacted: list again.
    *stream_status = absl::AbortedError(absl::StrCat(
        "etcd watch of ", prefix_, " cancelled (compact_revision ",
        internal::JsonInt(result, "compact_revision"), ") ", result.value("cancel_reason", "")));
    return false;
  }
  const int64_t revision = internal::JsonInt(result.value("header", Json::object()), "revision");
  if (result.value("created", false)) {
    *created = true;
    SetHealthy(true);
  }
  if (!result.contains("events") || !result["events"].is_array() || result["events"].empty()) {
    return true;
  }
  {
    absl::MutexLock lock(&mu_);
    for (const Json& event : result["events"]) {
      absl::StatusOr<EtcdKeyValue> kv = internal::ParseKeyValue(event.value("kv", Json::object()));
      if (!kv.ok()) {
        *stream_status = kv.status();
        return false;
      }
      if (event.value("type", "PUT") == "DELETE") {
        map_.erase(kv->key);
      } else {
        map_[std::move(kv->key)] = std::move(kv->value);
      }
    }
    revision_ = std::max(revision_, revision);
  }
  Notify();
  return true;
}

}  // namespace dapq::cluster
