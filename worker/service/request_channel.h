// File: worker/service/request_channel.h
// One generation request in flight inside a worker: the RPC handler thread submits it and pops
// its events (tokens, then one final event); the group's driver thread runs it and pushes them.
// Either side may cancel (the client went away or its deadline passed).
// Thread-safety: thread-safe; one producer (the driver) and one consumer (the handler).
#ifndef DAPQ_WORKER_SERVICE_REQUEST_CHANNEL_H_
#define DAPQ_WORKER_SERVICE_REQUEST_CHANNEL_H_

#include <atomic>
#include <chrono>
#include <deque>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/mutex.h"
#include "dapq/v1/inference.pb.h"

namespace dapq::worker::service {

struct StreamEvent {
  bool done = false;  // the final event: `status`, and `summary` when ok
  int token = -1;
  std::string text;  // the token's text (empty without a tokenizer)
  absl::Status status;
  dapq::v1::GenerationSummary summary;
};

// The prompt's token ids, tokenized on the RPC handler's thread before the request is queued
// (never on the driver's): as a fresh sequence, and, for a session's request, also as the
// continuation of that session (the driver learns which applies when the turn starts). An
// error is answered when the turn starts, as before.
struct TokenizedPrompt {
  absl::StatusOr<std::vector<int>> fresh = std::vector<int>();
  absl::StatusOr<std::vector<int>> continuing = std::vector<int>();
};

class RequestChannel {
 public:
  explicit RequestChannel(dapq::v1::GenerateRequest request, TokenizedPrompt prompt = {})
      : request_(std::move(request)),
        prompt_(std::move(prompt)),
        enqueued_(std::chrono::steady_clock::now()) {}

  const dapq::v1::GenerateRequest& request() const { return request_; }
  const TokenizedPrompt& prompt() const { return prompt_; }
  std::chrono::steady_clock::time_point enqueued() const { return enqueued_; }

  void Push(StreamEvent event) {
    MutexLock lock(&mu_);
    events_.push_back(std::move(event));
    cv_.SignalAll();
  }
  // Waits up to `timeout` for an event; false when none came.
  bool Pop(StreamEvent* event, std::chrono::milliseconds timeout) {
    MutexLock lock(&mu_);
    if (!cv_.WaitFor(&mu_, timeout, [&] { return !events_.empty(); })) return false;
    *event = std::move(events_.front());
    events_.pop_front();
    return true;
  }
  void Cancel() { cancelled_.store(true); }
  bool cancelled() const { return cancelled_.load(); }
  // The generated text reached one of the request's stop sequences (the driver's thread only).
  void MarkStopSequence() { stop_sequence_ = true; }
  bool stop_sequence() const { return stop_sequence_; }

 private:
  const dapq::v1::GenerateRequest request_;
  const TokenizedPrompt prompt_;
  const std::chrono::steady_clock::time_point enqueued_;
  std::atomic<bool> cancelled_{false};
  bool stop_sequence_ = false;
  Mutex mu_;
  CondVar cv_;
  std::deque<StreamEvent> events_ ABSL_GUARDED_BY(mu_);
};

}  // namespace dapq::worker::service

#endif  // DAPQ_WORKER_SERVICE_REQUEST_CHANNEL_H_
