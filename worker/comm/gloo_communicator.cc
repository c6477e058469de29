// File: worker/comm/gloo_communicator.cc
// Gloo (TCP) collectives behind the Communicator interface. Every Gloo call runs inside
// GlooCommunicator::Run, which turns Gloo's exceptions into absl::Status and breaks the group on
// the first failure.
#include "worker/comm/gloo_communicator.h"

#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <exception>
#include <filesystem>
#include <mutex>
#include <string>
#include <system_error>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "gloo/allgather.h"
#include "gloo/allreduce.h"
#include "gloo/barrier.h"
#include "gloo/broadcast.h"
#include "gloo/common/error.h"
#include "gloo/common/logging.h"
#include "gloo/math.h"
#include "gloo/rendezvous/context.h"
#include "gloo/rendezvous/file_store.h"
#include "gloo/rendezvous/prefix_store.h"
#include "gloo/transport/tcp/device.h"

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
      gloo::AllgatherOptions opts(context_);
      opts.setInput(data, count);
      opts.setOutput(gathered_.data(), gathered_.size());
      opts.setTag(NextTag());
      opts.setTimeout(timeout_);
      gloo::allgather(opts);
      std::memcpy(data, gathered_.data(), count * sizeof(float));
      for (int r = 1; r < size_; ++r) {
        const float* other = gathered_.data() + static_cast<size_t>(r) * count;
        for (size_t i = 0; i < count; ++i) data[i] += other[i];
      }
    });
  }

  absl::Status AllReduceSum(int64_t* data, size_t count) override {
    return Run("allreduce", count, [&] {
      gloo::AllreduceOptions opts(context_);
      opts.setOutput(data, count);
      void (*fn)(void*, const void*, const void*, size_t) = &gloo::sum<int64_t>;
      opts.setReduceFunction(fn);
      opts.setTag(NextTag());
      opts.setTimeout(timeout_);
      gloo::allreduce(opts);
    });
  }

  absl::Status Broadcast(void* data, size_t bytes, int root) override {
    if (root < 0 || root >= size_) {
      return absl::InvalidArgumentError(
          absl::StrCat(Context("broadcast"), "root=", root, " outside [0, ", size_, ")"));
    }
    return Run("broadcast", bytes, [&] {
      gloo::BroadcastOptions opts(context_);
      opts.setOutput(static_cast<uint8_t*>(data), bytes);
      opts.setRoot(root);
      opts.setTag(NextTag());
      opts.setTimeout(timeout_);
      gloo::broadcast(opts);
    });
  }

  absl::Status Barrier() override {
    return Run("barrier", 1, [&] {
      gloo::BarrierOptions opts(context_);
      opts.setTag(NextTag());
      opts.setTimeout(timeout_);
      gloo::barrier(opts);
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

  // Runs one collective: Aborted after Abort(), the first error again once the group is broken,
  // a no-op for a group of one or an empty buffer (every rank passes the same count).
  template <typename F>
  absl::Status Run(const char* op, size_t count, F&& f) {
    if (aborted_.load()) {
      return absl::AbortedError(absl::StrCat(Context(op), "group aborted by a failed rank"));
    }
    if (!broken_.ok()) {
      return absl::Status(
          broken_.code(),
          absl::StrCat(Context(op), "group broken by an earlier failure: ", broken_.message()));
    }
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
  if (rendezvous_dir.empty()) {
    return absl::InvalidArgumentError("gloo group: rendezvous_dir is empty");
  }
  if (hostname.empty()) return absl::InvalidArgumentError("gloo group: hostname is empty");
  if (timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("gloo group: timeout=", absl::FormatDuration(timeout), " must be > 0"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Communicator>> ConnectGlooGroup(const GlooGroupOptions& options) {
  DAPQ_RETURN_IF_ERROR(options.Validate());
  const auto timeout = absl::ToChronoMilliseconds(options.timeout);
  if (options.size == 1) {
    return std::unique_ptr<Communicator>(
        std::make_unique<GlooCommunicator>(nullptr, 0, 1, timeout));
  }
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
