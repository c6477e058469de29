// File: worker/comm/gloo_communicator.cc
// Gloo (TCP) collectives behind the Communicator interface. Every Gloo call runs inside
// GlooCommunicator::Run, which turns Gloo's exceptions into absl::Status and breaks the group on
// the first failure.
#include "worker/comm/gloo_communicator.h"

#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <exception>
#include <filesystem>
#include <mutex>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "cluster/etcd_client.h"
#include "cluster/etcd_rendezvous.h"
#include "cluster/etcd_url.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "gloo/common/error.h"
#include "gloo/common/logging.h"
#include "gloo/rendezvous/context.h"
#include "gloo/rendezvous/file_store.h"
#include "gloo/rendezvous/prefix_store.h"
#include "gloo/transport/tcp/device.h"
#include "gloo/transport/unbound_buffer.h"
#include "gloo/types.h"
#include "worker/comm/etcd_store.h"
#include "worker/comm/internal/group_state.h"

namespace dapq::worker {
namespace {

// Writes to a socket whose peer died raise SIGPIPE; its default action would kill this process
// before Gloo can report the error. Ignored process-wide, unless someone installed a handler.
void IgnoreSigpipeIfDefault() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction current {};
    if (sigaction(SIGPIPE, nullptr, &current) != 0) return;
    if ((current.sa_flags & SA_SIGINFO) != 0 || current.sa_handler != SIG_DFL) return;
    struct sigaction ignore {};
    ignore.sa_handler = SIG_IGN;
    sigemptyset(&ignore.sa_mask);
    sigaction(SIGPIPE, &ignore, nullptr);
  });
}

// Gloo signals its timeouts with IoException ("Timed out waiting ...", "Wait timeout for
// key(s)", "Connect timeout", "Application timeout caused pair closure").
bool IsTimeoutMessage(const std::string& what) {
  const std::string lower = absl::AsciiStrToLower(what);
  return absl::StrContains(lower, "timed out") || absl::StrContains(lower, "timeout");
}

// Converts the exception being handled (call from a catch block only).
absl::Status CurrentExceptionToStatus(const std::string& context) {
  try {
    throw;
  } catch (const gloo::IoException& e) {
    const std::string what = e.what();
    if (IsTimeoutMessage(what)) return absl::DeadlineExceededError(absl::StrCat(context, what));
    return absl::UnavailableError(absl::StrCat(context, what));
  } catch (const gloo::EnforceNotMet& e) {
    return absl::InternalError(absl::StrCat(context, e.what()));
  } catch (const std::exception& e) {
    const std::string what = e.what();
    if (IsTimeoutMessage(what)) return absl::DeadlineExceededError(absl::StrCat(context, what));
    return absl::InternalError(absl::StrCat(context, what));
  } catch (...) {
    return absl::InternalError(absl::StrCat(context, "unknown exception"));
  }
}

class GlooCommunicator final : public Communicator {
 public:
  // `context` is null for a group of one (every collective is then local).
  GlooCommunicator(std::shared_ptr<gloo::rendezvous::Context> context, int rank, int size,
                   std::chrono::milliseconds timeout)
      : context_(std::move(context)), rank_(rank), size_(size), timeout_(timeout) {}

  ~GlooCommunicator() override {
    // Gloo's destructors close sockets and join the device's I/O thread; none should throw, but
    // nothing may escape a destructor.
    try {
      context_.reset();
    } catch (...) {
    }
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }

  absl::Status AllReduceSum(float* data, size_t count) override {
    return Run("allreduce", count, [&] {
      // Allgather, then add in rank order exactly as the in-process communicator does (the
      // header explains why Gloo's allreduce is not used for floats).
      gathered_.resize(count * static_cast<size_t>(size_));
      AllGather(data, count * sizeof(float), gathered_.data());
      std::memcpy(data, gathered_.data(), count * sizeof(float));
      for (int r = 1; r < size_; ++r) {
        const float* other = gathered_.data() + static_cast<size_t>(r) * count;
        for (size_t i = 0; i < count; ++i) data[i] += other[i];
      }
    });
  }

  absl::Status AllReduceSum(int64_t* data, size_t count) override {
    return Run("allreduce", count, [&] {
      std::vector<int64_t> all(count * static_cast<size_t>(size_));
      AllGather(data, count * sizeof(int64_t), all.data());
      for (size_t i = 0; i < count; ++i) {
        int64_t sum = 0;
        for (int r = 0; r < size_; ++r) sum += all[static_cast<size_t>(r) * count + i];
        data[i] = sum;
      }
    });
  }

  absl::Status Broadcast(void* data, size_t bytes, int root) override {
    if (root < 0 || root >= size_) {
      return absl::InvalidArgumentError(
          absl::StrCat(Context("broadcast"), "root=", root, " outside [0, ", size_, ")"));
    }
    return Run("broadcast", bytes, [&] {
      // The others acknowledge with one byte, posted together with their receive, and the root
      // waits for the acknowledgements before its sends: a dead peer then fails a receive at
      // once instead of leaving the root's send pending until the timeout.
      const uint32_t tag = NextTag();
      const uint64_t data_slot = gloo::Slot::build(kDataPrefix, tag);
      const uint64_t ack_slot = gloo::Slot::build(kAckPrefix, tag);
      auto payload = context_->createUnboundBuffer(data, bytes);
      if (rank_ == root) {
        std::vector<uint8_t> acks(static_cast<size_t>(size_));
        auto ack = context_->createUnboundBuffer(acks.data(), acks.size());
        for (int p = 0; p < size_; ++p) {
          if (p != root) ack->recv(p, ack_slot, static_cast<size_t>(p), 1);
        }
        for (int p = 0; p < size_; ++p) {
          if (p != root) payload->send(p, data_slot);
        }
        for (int p = 1; p < size_; ++p) Wait(*ack, /*recv=*/true);
        for (int p = 1; p < size_; ++p) Wait(*payload, /*recv=*/false);
      } else {
        uint8_t one = 1;
        auto ack = context_->createUnboundBuffer(&one, 1);
        payload->recv(root, data_slot);
        ack->send(root, ack_slot);
        Wait(*payload, /*recv=*/true);
        Wait(*ack, /*recv=*/false);
      }
    });
  }

  absl::Status Barrier() override {
    return Run("barrier", 1, [&] {
      uint8_t mine = 1;
      std::vector<uint8_t> all(static_cast<size_t>(size_));
      AllGather(&mine, 1, all.data());
    });
  }

  void Abort() override { aborted_.store(true); }

 private:
  std::string Context(const char* op) const {
    return absl::StrCat("gloo ", op, " (rank ", rank_, " of ", size_, "): ");
  }

  // The group runs its collectives one after another; a fresh tag each keeps a late message of
  // one from ever matching another (every rank counts the same sequence).
  uint32_t NextTag() { return next_tag_++; }

  // Slot prefixes of our point-to-point collectives (distinct from Gloo's own algorithms').
  static constexpr uint8_t kDataPrefix = 0x5d;
  static constexpr uint8_t kAckPrefix = 0x5e;

  // Waits for one pending receive or send of `buffer` (throws on failure or timeout). Sends are
  // waited for only after every receive of the exchange completed: by then each peer has
  // posted its receives (it posts them before sending what we received), so a live peer takes
  // our data at once. A send still pending after kSendGrace means the peer died after sending:
  // Gloo does not always fail such a send when the connection closes, so the grace bounds how
  // long a dead peer can stall the group (instead of the whole collective timeout).
  static constexpr std::chrono::milliseconds kSendGrace{3000};
  void Wait(gloo::transport::UnboundBuffer& buffer, bool recv) {
    const bool done = recv ? buffer.waitRecv(nullptr, timeout_)
                           : buffer.waitSend(nullptr, std::min(timeout_, kSendGrace));
    if (!done) throw std::runtime_error("aborted");
  }

  // out[r * bytes ...] = rank r's `in`, on every rank. Every receive is posted before any send,
  // and the receives are waited for first: a peer that died fails its receive at once. (A Gloo
  // unbound-buffer send to a peer that never posted the matching receive stays pending until
  // the timeout; a peer that posted it before dying had already received what it needed.)
  void AllGather(const void* in, size_t bytes, void* out) {
    std::memcpy(static_cast<uint8_t*>(out) + static_cast<size_t>(rank_) * bytes, in, bytes);
    const uint64_t slot = gloo::Slot::build(kDataPrefix, NextTag());
    auto send = context_->createUnboundBuffer(const_cast<void*>(in), bytes);
    auto recv = context_->createUnboundBuffer(out, bytes * static_cast<size_t>(size_));
    for (int p = 0; p < size_; ++p) {
      if (p != rank_) recv->recv(p, slot, static_cast<size_t>(p) * bytes, bytes);
    }
    for (int p = 0; p < size_; ++p) {
      if (p != rank_) send->send(p, slot);
    }
    for (int p = 1; p < size_; ++p) Wait(*recv, /*recv=*/true);
    for (int p = 1; p < size_; ++p) Wait(*send, /*recv=*/false);
  }

  // Runs one collective: Aborted after Abort(), the first error again once the group is broken,
  // a no-op for a group of one or an empty buffer (every rank passes the same count).
  template <typename F>
  absl::Status Run(const char* op, size_t count, F&& f) {
    DAPQ_RETURN_IF_ERROR(internal::CheckGroupUsable(aborted_.load(), broken_, Context(op)));
    if (size_ == 1 || count == 0) return absl::OkStatus();
    try {
      f();
      return absl::OkStatus();
    } catch (...) {
      broken_ = CurrentExceptionToStatus(Context(op));
    }
    // Close every connection so that the peers blocked on this rank fail now instead of at
    // their timeout.
    try {
      context_->closeConnections();
    } catch (...) {
    }
    return broken_;
  }

  std::shared_ptr<gloo::rendezvous::Context> context_;
  const int rank_;
  const int size_;
  const std::chrono::milliseconds timeout_;
  std::atomic<bool> aborted_{false};
  absl::Status broken_;  // the first failure; OK while the group works
  uint32_t next_tag_ = 0;
  std::vector<float> gathered_;
};

}  // namespace

absl::Status GlooGroupOptions::Validate() const {
  if (size < 1) {
    return absl::InvalidArgumentError(absl::StrCat("gloo group: size=", size, " must be >= 1"));
  }
  if (rank < 0 || rank >= size) {
    return absl::InvalidArgumentError(
        absl::StrCat("gloo group: rank=", rank, " outside [0, size=", size, ")"));
  }
  if (!rendezvous_url.empty()) {
    absl::StatusOr<cluster::EtcdUrl> url = cluster::ParseEtcdUrl(rendezvous_url);
    if (!url.ok()) {
      return absl::Status(url.status().code(),
                          absl::StrCat("gloo group: rendezvous_url: ", url.status().message()));
    }
    if (group_id.empty() || absl::StrContains(group_id, '/')) {
      return absl::InvalidArgumentError(absl::StrCat("gloo group: group_id '", group_id,
                                                     "' must be non-empty without '/' with an etcd "
                                                     "rendezvous_url"));
    }
  } else if (rendezvous_dir.empty()) {
    return absl::InvalidArgumentError(
        "gloo group: rendezvous_dir and rendezvous_url are both empty");
  }
  if (hostname.empty()) return absl::InvalidArgumentError("gloo group: hostname is empty");
  if (timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("gloo group: timeout=", absl::FormatDuration(timeout), " must be > 0"));
  }
  return absl::OkStatus();
}

namespace {

// The etcd path of ConnectGlooGroup: rendezvous incarnation, EtcdStore, full mesh, barrier,
// then the rendezvous keys are removed. Ranks > 0 join again when their incarnation is
// superseded while they connect.
absl::StatusOr<std::unique_ptr<Communicator>> ConnectThroughEtcd(const GlooGroupOptions& options) {
  const auto timeout = absl::ToChronoMilliseconds(options.timeout);
  const absl::Time deadline = absl::Now() + options.timeout;
  DAPQ_ASSIGN_OR_RETURN(cluster::EtcdUrl url, cluster::ParseEtcdUrl(options.rendezvous_url));
  cluster::EtcdClientOptions client_options;
  client_options.endpoints = url.endpoints;
  client_options.timeout = std::min(options.timeout, absl::Seconds(5));
  DAPQ_ASSIGN_OR_RETURN(std::shared_ptr<cluster::EtcdClient> client,
                        cluster::EtcdClient::Create(std::move(client_options)));
  cluster::EtcdRendezvousOptions rendezvous_options;
  rendezvous_options.prefix = url.prefix;
  rendezvous_options.group_id = options.group_id;
  rendezvous_options.rank = options.rank;
  rendezvous_options.size = options.size;
  IgnoreSigpipeIfDefault();
  for (;;) {
    DAPQ_ASSIGN_OR_RETURN(std::unique_ptr<cluster::EtcdRendezvous> rendezvous,
                          cluster::EtcdRendezvous::Join(client, rendezvous_options, deadline));
    const std::string context = absl::StrCat(
        "gloo connect (rank ", options.rank, " of ", options.size, ", group '", options.group_id,
        "' incarnation ", rendezvous->incarnation(), " via ", options.rendezvous_url, "): ");
    EtcdStoreOptions store_options;
    store_options.prefix = rendezvous->store_prefix();
    store_options.lease = rendezvous->lease_id();
    store_options.timeout = std::max(deadline - absl::Now(), absl::Milliseconds(1));
    store_options.check = [r = rendezvous.get()] { return r->CheckCurrent(); };
    EtcdStore store(client, std::move(store_options));
    std::shared_ptr<gloo::rendezvous::Context> gloo_context;
    absl::Status failed;
    try {
      gloo::transport::tcp::attr attr;
      attr.hostname = options.hostname;
      std::shared_ptr<gloo::transport::Device> device = gloo::transport::tcp::CreateDevice(attr);
      gloo_context = std::make_shared<gloo::rendezvous::Context>(options.rank, options.size);
      gloo_context->setTimeout(timeout);
      gloo_context->connectFullMesh(store, device);
    } catch (...) {
      failed = CurrentExceptionToStatus(context);
      if (const absl::Status s = store.error(); !s.ok()) {
        failed = absl::Status(s.code(), absl::StrCat(context, s.message()));
      }
    }
    if (!failed.ok()) {
      gloo_context.reset();
      // A rank > 0 follows rank 0 into its newer incarnation.
      const bool superseded =
          absl::IsAborted(failed) || absl::IsAborted(rendezvous->CheckCurrent());
      if (options.rank > 0 && superseded && absl::Now() < deadline) {
        DAPQ_LOG(INFO) << context << failed.message() << "; joining again";
        continue;
      }
      return failed;
    }
    auto comm = std::make_unique<GlooCommunicator>(std::move(gloo_context), options.rank,
                                                   options.size, timeout);
    // Every rank has read all the addresses it needs only once every rank is connected: pass a
    // barrier over the new mesh before the rendezvous keys go.
    DAPQ_RETURN_IF_ERROR(comm->Barrier());
    if (const absl::Status s = rendezvous->Finish(deadline); !s.ok()) {
      DAPQ_LOG(WARNING) << context << "removing the rendezvous keys: " << s
                        << " (they expire with their lease)";
    }
    return std::unique_ptr<Communicator>(std::move(comm));
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<Communicator>> ConnectGlooGroup(const GlooGroupOptions& options) {
  DAPQ_RETURN_IF_ERROR(options.Validate());
  const auto timeout = absl::ToChronoMilliseconds(options.timeout);
  if (options.size == 1) {
    return std::unique_ptr<Communicator>(
        std::make_unique<GlooCommunicator>(nullptr, 0, 1, timeout));
  }
  if (!options.rendezvous_url.empty()) return ConnectThroughEtcd(options);
  std::error_code ec;
  std::filesystem::create_directories(options.rendezvous_dir, ec);
  if (ec) {
    return absl::FailedPreconditionError(absl::StrCat("gloo group: cannot create rendezvous_dir ",
                                                      options.rendezvous_dir, ": ", ec.message()));
  }
  IgnoreSigpipeIfDefault();
  const std::string context =
      absl::StrCat("gloo connect (rank ", options.rank, " of ", options.size, ", group '",
                   options.group_id, "' in ", options.rendezvous_dir, "): ");
  try {
    gloo::transport::tcp::attr attr;
    attr.hostname = options.hostname;
    std::shared_ptr<gloo::transport::Device> device = gloo::transport::tcp::CreateDevice(attr);
    gloo::rendezvous::FileStore file_store(options.rendezvous_dir);
    gloo::rendezvous::PrefixStore store(options.group_id, file_store);
    auto gloo_context = std::make_shared<gloo::rendezvous::Context>(options.rank, options.size);
    gloo_context->setTimeout(timeout);
    gloo_context->connectFullMesh(store, device);
    return std::unique_ptr<Communicator>(std::make_unique<GlooCommunicator>(
        std::move(gloo_context), options.rank, options.size, timeout));
  } catch (...) {
    absl::Status s = CurrentExceptionToStatus(context);
    if (absl::StrContains(s.message(), "File already exists")) {
      // FileStore refuses to overwrite a key: this group_id was used before in this directory.
      return absl::FailedPreconditionError(
          absl::StrCat(context, "group_id '", options.group_id,
                       "' was already used in this rendezvous_dir; use a new group_id per "
                       "attempt (",
                       s.message(), ")"));
    }
    return s;
  }
}

}  // namespace dapq::worker
