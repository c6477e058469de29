// File: worker/service/group_driver.cc
// GroupDriver: the request queue, the lock-step command loop and the session table.
#include "worker/service/group_driver.h"

#include "absl/strings/str_cat.h"
#include "api/stop_sequences.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "worker/service/request_options.h"
#include "worker/session_store.h"

namespace dapq::worker::service {
namespace {

double SecondsBetween(std::chrono::steady_clock::time_point a,
                      std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

}  // namespace

bool IsGroupFailure(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kAborted:
    case absl::StatusCode::kDeadlineExceeded:
    case absl::StatusCode::kInternal:
    case absl::StatusCode::kUnknown:
      return true;
    default:
      return false;
  }
}

GroupDriver::GroupDriver(Engine* engine, Communicator* comm,
                         const tokenizer::TextTokenizer* tokenizer,
                         const GroupDriverOptions& options)
    : engine_(engine),
      comm_(comm),
      tokenizer_(tokenizer),
      options_(options),
      kv_scale_(comm != nullptr ? comm->size() : 1) {}

absl::StatusOr<std::shared_ptr<RequestChannel>> GroupDriver::Submit(
    dapq::v1::GenerateRequest request) {
  DAPQ_RETURN_IF_ERROR(ToGenerateOptions(request).status());  // session id included
  // A stored session starts moving up to the device tier while the request waits in the queue
  // (this rank's store; the others prefetch when the turn starts).
  if (options_.store != nullptr && !request.session_id().empty()) {
    options_.store->Prefetch(request.session_id());
  }
  // Tokenized here, on the caller's thread: the driver's thread only runs the model.
  const PromptCodec codec{tokenizer_, options_.chat_template};
  TokenizedPrompt prompt;
  prompt.fresh = PromptTokens(request, codec, engine_->config().vocab_size, false);
  DAPQ_RETURN_IF_ERROR(prompt.fresh.status());
  if (!request.session_id().empty()) {
    prompt.continuing = PromptTokens(request, codec, engine_->config().vocab_size, true);
  }
  auto channel = std::make_shared<RequestChannel>(std::move(request), std::move(prompt));
  MutexLock lock(&mu_);
  if (broken_.load() || shutdown_) {
    return absl::UnavailableError(
        absl::StrCat("worker group ", options_.group_id,
                     broken_.load() ? " lost a rank and is down" : " is shutting down"));
  }
  // A batching group takes its queue into the batch every step: it holds max_running more.
  const int limit =
      options_.max_queue + (options_.continuous_batching ? options_.scheduler.max_running : 0);
  if (static_cast<int>(queue_.size()) >= limit) {
    if (options_.metrics) options_.metrics->OnRejected();
    return absl::ResourceExhaustedError(absl::StrCat(
        "worker group ", options_.group_id, ": queue full (", queue_.size(), " requests waiting)"));
  }
  queue_.push_back(channel);
  if (options_.metrics) options_.metrics->SetQueueDepth(static_cast<int>(queue_.size()));
  cv_.SignalAll();
  return channel;
}

void GroupDriver::Shutdown() {
  MutexLock lock(&mu_);
  shutdown_ = true;
  cv_.SignalAll();
}

void GroupDriver::FailQueued(const absl::Status& status) {
  std::deque<std::shared_ptr<RequestChannel>> queued;
  {
    MutexLock lock(&mu_);
    queued.swap(queue_);
  }
  for (auto& channel : queued) {
    StreamEvent done;
    done.done = true;
    done.status = status;
    channel->Push(std::move(done));
  }
}

absl::Status GroupDriver::SendCommand(const dapq::v1::GroupCommand& command) {
  if (comm_ == nullptr) return absl::OkStatus();
  std::string bytes;
  command.SerializeToString(&bytes);
  // The size goes as an int64 sum (the others add 0): unlike a broadcast, whose root only
  // sends, every rank receives in it, so rank 0 notices a dead rank at the next command or
  // idle ping instead of waiting for a send timeout.
  int64_t size = static_cast<int64_t>(bytes.size());
  DAPQ_RETURN_IF_ERROR(comm_->AllReduceSum(&size, 1));
  return comm_->Broadcast(bytes.data(), bytes.size(), 0);
}

absl::StatusOr<dapq::v1::GroupCommand> GroupDriver::ReceiveCommand() {
  int64_t size = 0;
  DAPQ_RETURN_IF_ERROR(comm_->AllReduceSum(&size, 1));
  if (size < 0 || size > (1 << 30))
    return absl::DataLossError(absl::StrCat("group command of ", size, " bytes"));
  std::string bytes(size, '\0');
  DAPQ_RETURN_IF_ERROR(comm_->Broadcast(bytes.data(), bytes.size(), 0));
  dapq::v1::GroupCommand command;
  if (!command.ParseFromString(bytes)) return absl::DataLossError("unparsable group command");
  return command;
}

absl::Status GroupDriver::RunDriver() {
  if (options_.continuous_batching) return RunBatched();
  while (true) {
    std::shared_ptr<RequestChannel> channel;
    bool stop = false;
    {
      MutexLock lock(&mu_);
      cv_.WaitFor(&mu_, options_.idle_ping, [&] { return shutdown_ || !queue_.empty(); });
      stop = shutdown_;
      if (!stop && !queue_.empty()) {
        channel = queue_.front();
        queue_.pop_front();
        if (options_.metrics) options_.metrics->SetQueueDepth(static_cast<int>(queue_.size()));
      }
    }
    if (stop) {
      FailQueued(absl::UnavailableError(
          absl::StrCat("worker group ", options_.group_id, " is shutting down")));
      dapq::v1::GroupCommand command;
      command.set_kind(dapq::v1::GroupCommand::SHUTDOWN);
      return SendCommand(command);
    }
    if (channel == nullptr) {
      absl::Status ping = SendCommand(dapq::v1::GroupCommand());
      if (ping.ok()) ping = GatherKvUsage();
      if (!ping.ok()) {
        broken_.store(true);
        if (options_.metrics) options_.metrics->SetHealthy(false);
        FailQueued(absl::UnavailableError(
            absl::StrCat("worker group ", options_.group_id, " lost a rank: ", ping.message())));
        return ping;
      }
      continue;
    }
    const bool sent = Serve(*channel);
    if (!broken_.load() && sent) {
      // After the gather the other ranks run after each request: they then wait for commands.
      absl::Status s = GatherKvUsage();
      if (s.ok()) s = EvictIdleSessions([] { return 0L; });
      if (!s.ok()) {
        broken_.store(true);
        if (options_.metrics) options_.metrics->SetHealthy(false);
      }
    }
    if (broken_.load()) {
      FailQueued(absl::UnavailableError(
          absl::StrCat("worker group ", options_.group_id, " lost a rank and is down")));
      return absl::UnavailableError(absl::StrCat("worker group ", options_.group_id, " broke"));
    }
  }
}

bool GroupDriver::AnswerIfCancelled(RequestChannel& channel) {
  if (!channel.cancelled()) return false;
  StreamEvent done;
  done.done = true;
  done.status = absl::CancelledError("cancelled while queued");
  channel.Push(std::move(done));
  return true;
}

absl::StatusOr<std::vector<int>> GroupDriver::PreparePrompt(const RequestChannel& channel,
                                                            bool continuing, int next_position,
                                                            GenerateOptions* options) const {
  DAPQ_ASSIGN_OR_RETURN(std::vector<int> prompt,
                        continuing ? channel.prompt().continuing : channel.prompt().fresh);
  DAPQ_ASSIGN_OR_RETURN(*options, ToGenerateOptions(channel.request()));
  DAPQ_RETURN_IF_ERROR(CheckContext(prompt.size(), options->max_new_tokens, next_position,
                                    engine_->config().max_seq_len));
  return prompt;
}

std::function<bool(int)> GroupDriver::StreamTo(RequestChannel* channel, int prev) const {
  const auto& stops = channel->request().stop();
  auto filter = std::make_shared<api::StopSequenceFilter>(
      std::vector<std::string>(stops.begin(), stops.end()));
  return [this, channel, prev, filter](int token) mutable {
    StreamEvent event;
    event.token = token;
    if (tokenizer_ != nullptr) event.text = tokenizer_->Decode(prev, token);
    prev = token;
    if (!channel->request().stop().empty()) {
      filter->Push(event.text);
      if (filter->stopped()) channel->MarkStopSequence();
    }
    channel->Push(std::move(event));
    return !channel->cancelled() && !channel->stop_sequence();
  };
}

void GroupDriver::AddToBatch(std::shared_ptr<RequestChannel> channel, BatchState& batch) {
  const auto start = std::chrono::steady_clock::now();
  if (AnswerIfCancelled(*channel)) return;
  const dapq::v1::GenerateRequest& request = channel->request();
  const std::string& sid = request.session_id();
  if (!sid.empty() && batch.active_sessions.count(sid) > 0) {
    batch.deferred[sid].push_back(std::move(channel));  // after the session's current turn
    return;
  }
  const Session* session = sid.empty() ? nullptr : FindSession(sid);
  const int next_position = session != nullptr ? static_cast<int>(session->tokens.size()) : 0;
  GenerateOptions options;
  absl::StatusOr<std::vector<int>> prompt =
      PreparePrompt(*channel, /*continuing=*/session != nullptr, next_position, &options);
  absl::Status status = prompt.status();
  const uint64_t id = next_request_id_++;
  bool continuing = false, began = false;
  if (status.ok() && !sid.empty()) {
    // Every rank moves the session's sequence (restored from its store if need be) into the
    // batch under this request's id.
    dapq::v1::GroupCommand command = BatchCommand(dapq::v1::BatchOp::SESSION_BEGIN, id);
    command.mutable_batch_op()->set_session_id(sid);
    *command.mutable_batch_op()->mutable_compression() = request.compression();
    status = SendCommand(command);
    if (status.ok()) {
      absl::StatusOr<bool> joined = BeginBatchedSession(id, sid, options.compression, batch.local);
      status = joined.status();
      began = joined.ok();
      continuing = joined.ok() && *joined;
    }
  }
  dapq::v1::CompressionOptions compression = request.compression();
  if (continuing) {
    // A session compressed on every turn compresses this one with its first turn's settings.
    const compress::CompressionConfig& first = batched_sessions_[id].compression;
    if (first.every_turn && first.method != compress::Method::kFull) {
      options.compression = first;
      compression = ToCompressionOptions(first);
    }
  }
  if (status.ok()) {
    ScheduledRequest r;
    r.id = id;
    r.prompt = *std::move(prompt);
    r.options = std::move(options);
    r.start = start;
    r.on_token = StreamTo(channel.get(), r.prompt.back());
    r.continuing = continuing;
    r.keep_sequence = !sid.empty();
    status = batch.scheduler.Add(std::move(r));
    // Before the scheduler's first operation on it (admission happens in RunStep).
    if (status.ok()) batch.group.Register(id, compression);
  }
  if (!status.ok() && began) {
    // The turn never ran: the session stays as it was (its sequence back in the table).
    GenerateResult none;
    EndSessionEverywhere(id, &none, batch).IgnoreError();
  }
  if (!status.ok()) {
    Complete(*channel, start, status, 0);
    return;
  }
  if (!sid.empty()) batch.active_sessions.insert(sid);
  batch.ids[id] = std::move(channel);
}

absl::StatusOr<bool> GroupDriver::BeginBatchedSession(uint64_t id, const std::string& sid,
                                                      const compress::CompressionConfig& requested,
                                                      LocalBatchOps& ops) {
  Session* session = FindSession(sid);
  batched_sessions_[id] = {sid, session != nullptr ? session->compression : requested};
  if (session == nullptr) return false;  // its first turn: a fresh sequence
  std::unique_ptr<Sequence> seq = std::move(session->seq);
  if (seq != nullptr && options_.metrics) options_.metrics->OnSessionTurn("pool");
  if (seq == nullptr) {
    absl::StatusOr<std::unique_ptr<Sequence>> restored = RestoreSession(sid, *session);
    if (!restored.ok()) {
      batched_sessions_.erase(id);
      DropSession(sid);
      return restored.status();
    }
    seq = *std::move(restored);
  }
  ops.Adopt(id, std::move(seq));
  return true;
}

absl::StatusOr<int> GroupDriver::EndBatchedSession(uint64_t id, const GenerateResult* result,
                                                   LocalBatchOps& ops) {
  auto it = batched_sessions_.find(id);
  if (it == batched_sessions_.end()) {
    return absl::DataLossError(absl::StrCat("session end for request ", id, ", which has none"));
  }
  const BatchedSession ended = std::move(it->second);
  batched_sessions_.erase(it);
  std::unique_ptr<Sequence> seq = ops.Take(id);
  absl::Status kept = absl::OkStatus();
  if (result != nullptr) {
    if (seq != nullptr) {
      Sequence* raw = seq.get();
      kept = KeepSession(ended.id, std::move(seq), raw, *result, ended.compression);
    }
    kept = AgreeOnSessionSave(ended.id, kept);
  }
  if (result == nullptr || !kept.ok()) DropSession(ended.id);
  sessions_count_.store(static_cast<int>(sessions_.size()));
  kv_bytes_.store(static_cast<int64_t>(SessionsKvBytes()) * kv_scale_);
  DAPQ_RETURN_IF_ERROR(kept);
  auto session = sessions_.find(ended.id);
  return session != sessions_.end() ? static_cast<int>(session->second.tokens.size()) : 0;
}

absl::StatusOr<int> GroupDriver::EndSessionEverywhere(uint64_t id, const GenerateResult* result,
                                                      BatchState& batch) {
  dapq::v1::GroupCommand command = BatchCommand(dapq::v1::BatchOp::SESSION_END, id);
  command.mutable_batch_op()->set_keep(result != nullptr);
  if (result != nullptr) {
    command.mutable_batch_op()->mutable_tokens()->Assign(result->tokens.begin(),
                                                         result->tokens.end());
  }
  DAPQ_RETURN_IF_ERROR(SendCommand(command));
  return EndBatchedSession(id, result, batch.local);
}

void GroupDriver::Deliver(const FinishedRequest& f, BatchState& batch) {
  batch.group.Unregister(f.id);
  auto it = batch.ids.find(f.id);
  if (it == batch.ids.end()) return;
  std::shared_ptr<RequestChannel> channel = std::move(it->second);
  batch.ids.erase(it);
  absl::StatusOr<GenerateResult> result = f.result;
  const int generated = result.ok() ? static_cast<int>(result->tokens.size()) : 0;
  int next = result.ok() ? result->prompt_tokens + std::max(generated - 1, 0) : 0;
  const std::string& sid = channel->request().session_id();
  if (!sid.empty()) {
    // Every rank keeps the turn's sequence as the session (feeding the last token, saving it),
    // or drops the session when the turn failed.
    const bool keep = result.ok() && f.sequence_kept;
    absl::StatusOr<int> ended = EndSessionEverywhere(f.id, keep ? &*result : nullptr, batch);
    if (keep && ended.ok()) next = *ended;
    if (keep && !ended.ok()) result = ended.status();
    batch.active_sessions.erase(sid);
    // Within its budget before the turn's final event: the client then sees the pool settled.
    if (!EvictIdleSessions([] { return 0L; }).ok()) broken_.store(true);
  }
  Complete(*channel, f.start, result, next);
  if (sid.empty()) return;
  // The session's next turn, if one came meanwhile.
  auto waiting = batch.deferred.find(sid);
  if (waiting == batch.deferred.end()) return;
  std::shared_ptr<RequestChannel> next_turn = std::move(waiting->second.front());
  waiting->second.pop_front();
  if (waiting->second.empty()) batch.deferred.erase(waiting);
  AddToBatch(std::move(next_turn), batch);
}

absl::Status GroupDriver::RunBatched() {
  // Multi-process: the scheduler's operations go to the other ranks first (GroupBatchOps).
  LocalBatchOps local(engine_, options_.store);
  GroupBatchOps group(&local, [this](const dapq::v1::GroupCommand& c) { return SendCommand(c); });
  Scheduler scheduler(engine_, options_.scheduler,
                      comm_ != nullptr ? static_cast<BatchOps*>(&group) : &local);
  BatchState batch{local, group, scheduler, {}, {}, {}};
  const auto fail_all = [&](const absl::Status& why) {
    const auto now = std::chrono::steady_clock::now();
    for (auto& [sid, channels] : batch.deferred) {
      for (auto& channel : channels) Complete(*channel, now, why, 0);
    }
    batch.deferred.clear();
    FailQueued(why);
  };
  auto last_gather = std::chrono::steady_clock::now();
  while (true) {
    std::deque<std::shared_ptr<RequestChannel>> taken;
    bool stop = false;
    {
      MutexLock lock(&mu_);
      if (scheduler.idle()) {
        cv_.WaitFor(&mu_, options_.idle_ping, [&] { return shutdown_ || !queue_.empty(); });
      }
      stop = shutdown_;
      while (!stop && !queue_.empty()) {
        taken.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
      if (options_.metrics) options_.metrics->SetQueueDepth(static_cast<int>(queue_.size()));
    }
    if (stop) {
      // Requests already taken run to the end; nothing new starts.
      const absl::Status closing = absl::UnavailableError(
          absl::StrCat("worker group ", options_.group_id, " is shutting down"));
      for (auto& channel : taken) Complete(*channel, std::chrono::steady_clock::now(), closing, 0);
      while (!scheduler.idle()) {
        for (const FinishedRequest& f : scheduler.RunStep()) Deliver(f, batch);
      }
      fail_all(closing);
      dapq::v1::GroupCommand command;
      command.set_kind(dapq::v1::GroupCommand::SHUTDOWN);
      return SendCommand(command);
    }
    for (auto& channel : taken) AddToBatch(std::move(channel), batch);
    if (broken_.load()) break;
    if (scheduler.idle()) {
      if (!PingAndGather().ok()) broken_.store(true);
      if (broken_.load()) break;
      continue;
    }
    active_.store(scheduler.running());
    // Idle sessions holding blocks the next admission needs leave the pool first.
    if (!EvictIdleSessions([&] { return scheduler.AdmissionShortfall(); }).ok()) {
      broken_.store(true);
      break;
    }
    const int64_t preempted_before = scheduler.preemptions(), swapped_before = scheduler.swaps();
    std::vector<FinishedRequest> finished = scheduler.RunStep();
    if (options_.metrics) {
      WorkerMetrics& wm = *options_.metrics;
      if (scheduler.last_step_sequences() > 0) {
        wm.ObserveStep(scheduler.last_step_sequences(), scheduler.last_step_tokens());
      }
      wm.SetBatchState(scheduler.running(), scheduler.waiting());
      const int64_t swapped = scheduler.swaps() - swapped_before;
      wm.OnPreemptions("swap", swapped);
      wm.OnPreemptions("recompute", scheduler.preemptions() - preempted_before - swapped);
    }
    for (const FinishedRequest& f : finished) Deliver(f, batch);
    // After a step that had to preempt, every idle session leaves the pool.
    const bool preempted = scheduler.preemptions() > preempted_before;
    if (preempted && !EvictIdleSessions([] { return 1L; }).ok()) {
      broken_.store(true);
      break;
    }
    active_.store(scheduler.running());
    waiting_.store(scheduler.waiting());
    // KV usage for Status(): when the batch drains, and at least every idle_ping under load.
    if (!broken_.load() && (scheduler.idle() ||
                            std::chrono::steady_clock::now() - last_gather >= options_.idle_ping)) {
      if (!PingAndGather().ok()) broken_.store(true);
      last_gather = std::chrono::steady_clock::now();
    }
    if (broken_.load()) break;
  }
  if (options_.metrics) options_.metrics->SetHealthy(false);
  const absl::Status down = absl::UnavailableError(
      absl::StrCat("worker group ", options_.group_id, " lost a rank and is down"));
  for (auto& [id, channel] : batch.ids) {
    Complete(*channel, std::chrono::steady_clock::now(), down, 0);
  }
  fail_all(down);
  return absl::UnavailableError(absl::StrCat("worker group ", options_.group_id, " broke"));
}

absl::Status GroupDriver::PingAndGather() {
  DAPQ_RETURN_IF_ERROR(SendCommand(dapq::v1::GroupCommand()));
  return GatherKvUsage();
}

absl::Status GroupDriver::RunBatchOp(const dapq::v1::BatchOp& op) {
  if (follower_ops_ == nullptr) {
    follower_ops_ = std::make_unique<LocalBatchOps>(engine_, options_.store);
  }
  if (op.kind() == dapq::v1::BatchOp::SESSION_EVICT) {
    EvictSession(op.session_id());
    return absl::OkStatus();
  }
  const bool session_op =
      op.kind() == dapq::v1::BatchOp::SESSION_BEGIN || op.kind() == dapq::v1::BatchOp::SESSION_END;
  if (!session_op) return RunBatchOpMessage(op, *follower_ops_);
  // Session turns touch the session table, which the driver owns.
  DAPQ_ASSIGN_OR_RETURN(const uint64_t id, BatchOpId(op));
  if (op.kind() == dapq::v1::BatchOp::SESSION_BEGIN) {
    DAPQ_ASSIGN_OR_RETURN(const compress::CompressionConfig requested,
                          ToCompressionConfig(op.compression()));
    return BeginBatchedSession(id, op.session_id(), requested, *follower_ops_).status();
  }
  GenerateResult result;
  result.tokens.assign(op.tokens().begin(), op.tokens().end());
  return EndBatchedSession(id, op.keep() ? &result : nullptr, *follower_ops_).status();
}

bool GroupDriver::Serve(RequestChannel& channel) {
  bool sent = false;
  const auto start = std::chrono::steady_clock::now();
  if (AnswerIfCancelled(channel)) return false;
  active_.store(1);
  const dapq::v1::GenerateRequest& request = channel.request();
  const Session* session =
      request.session_id().empty() ? nullptr : FindSession(request.session_id());
  const int next_position = session != nullptr ? static_cast<int>(session->tokens.size()) : 0;
  GenerateOptions options;
  absl::StatusOr<std::vector<int>> prompt =
      PreparePrompt(channel, /*continuing=*/session != nullptr, next_position, &options);
  absl::Status status = prompt.status();
  if (status.ok()) {
    dapq::v1::GroupCommand command;
    command.set_kind(dapq::v1::GroupCommand::GENERATE);
    *command.mutable_request() = request;
    command.mutable_request()->mutable_token_ids()->mutable_ids()->Assign(prompt->begin(),
                                                                          prompt->end());
    status = SendCommand(command);
    sent = status.ok();
    if (status.ok()) {
      int next = 0;
      absl::StatusOr<GenerateResult> result = Execute(command.request(), *prompt, &channel, &next);
      active_.store(0);
      Complete(channel, start, result, next);
      return sent;
    }
  }
  active_.store(0);
  Complete(channel, start, status, 0);
  return sent;
}

void GroupDriver::Complete(RequestChannel& channel, std::chrono::steady_clock::time_point start,
                           const absl::StatusOr<GenerateResult>& result, int next_position) {
  StreamEvent done;
  done.done = true;
  absl::Status status = result.status();
  const dapq::v1::GenerateRequest& request = channel.request();
  if (result.ok()) {
    const compress::CompressionStats& c = result->compression;
    const ModelConfig& m = engine_->config();
    dapq::v1::GenerationSummary& s = done.summary;
    s.set_prompt_tokens(result->prompt_tokens);
    s.set_cached_prompt_tokens(result->reused_prompt_tokens);
    s.set_generated_tokens(static_cast<int>(result->tokens.size()));
    s.set_finish_reason(channel.cancelled()                                        ? "cancelled"
                        : result->stopped_at_stop_token || channel.stop_sequence() ? "stop"
                                                                                   : "length");
    s.set_queue_seconds(SecondsBetween(channel.enqueued(), start));
    s.set_ttft_seconds(s.queue_seconds() + result->prefill_seconds);
    s.set_prefill_seconds(result->prefill_seconds);
    s.set_decode_seconds(result->decode_seconds);
    const int64_t per_token = static_cast<int64_t>(m.n_layers) * m.n_kv_heads;
    s.set_kv_full_slots(c.slots_before > 0 ? c.slots_before : per_token * result->prompt_tokens);
    s.set_kv_kept_slots(c.slots_before > 0 ? c.slots_after : per_token * result->prompt_tokens);
    s.set_kv_bytes(static_cast<int64_t>(result->kv_used_bytes) * kv_scale_);
    s.set_group_id(options_.group_id);
    s.set_next_position(next_position);
    s.set_compression(c.config);
    if (options_.metrics) {
      WorkerMetrics& wm = *options_.metrics;
      wm.OnRequest(channel.cancelled() ? "cancelled" : "ok");
      wm.OnTokens(result->prompt_tokens - result->reused_prompt_tokens,
                  static_cast<int>(result->tokens.size()), result->reused_prompt_tokens);
      const int later = static_cast<int>(result->tokens.size()) - 1;
      wm.ObserveLatency(s.ttft_seconds(), later > 0 ? result->decode_seconds / later : -1);
      wm.OnCompression(
          c, std::string(compress::MethodName(ToGenerateOptions(request)->compression.method)));
    }
  }
  if (!status.ok() && options_.metrics) {
    options_.metrics->OnRequest(absl::IsCancelled(status) ? "cancelled" : "error");
  }
  if (!status.ok() && IsGroupFailure(status)) {
    broken_.store(true);
    if (options_.metrics) options_.metrics->SetHealthy(false);
    DAPQ_LOG(ERROR) << "worker group " << options_.group_id << " failed: " << status.message();
    status = absl::UnavailableError(
        absl::StrCat("worker group ", options_.group_id, " lost a rank: ", status.message()));
  }
  done.status = status;
  served_.fetch_add(1);
  channel.Push(std::move(done));
}

absl::StatusOr<GenerateResult> GroupDriver::Execute(const dapq::v1::GenerateRequest& request,
                                                    const std::vector<int>& prompt,
                                                    RequestChannel* channel, int* next_position) {
  DAPQ_ASSIGN_OR_RETURN(const GenerateOptions options, ToGenerateOptions(request));
  const std::string& id = request.session_id();
  Session* session = id.empty() ? nullptr : FindSession(id);
  std::unique_ptr<Sequence> owned;
  Sequence* seq = nullptr;
  compress::CompressionConfig compression = options.compression;
  if (session != nullptr) {
    compression = session->compression;  // the session's first turn decided it
    if (session->seq != nullptr) {
      seq = session->seq.get();
      if (options_.metrics) options_.metrics->OnSessionTurn("pool");
    } else {
      absl::StatusOr<std::unique_ptr<Sequence>> restored = RestoreSession(id, *session);
      if (!restored.ok()) {
        DropSession(id);
        return restored.status();
      }
      owned = std::move(*restored);
    }
  } else {
    owned = engine_->NewSequence();
  }
  if (seq == nullptr) seq = owned.get();
  std::function<bool(int)> on_token;
  if (channel != nullptr) on_token = StreamTo(channel, prompt.back());
  absl::StatusOr<GenerateResult> result = engine_->Continue(*seq, prompt, options, on_token);
  *next_position = seq->next_position();
  if (!id.empty()) {
    absl::Status kept = result.status();
    if (kept.ok()) kept = KeepSession(id, std::move(owned), seq, *result, compression);
    kept = AgreeOnSessionSave(id, kept);
    if (kept.ok()) {
      *next_position = static_cast<int>(sessions_[id].tokens.size());
    } else {
      DropSession(id);  // its cache may hold part of this turn: never continue it wrongly
      if (result.ok()) result = kept;
    }
  }
  sessions_count_.store(static_cast<int>(sessions_.size()));
  kv_bytes_.store(static_cast<int64_t>(SessionsKvBytes()) * kv_scale_);
  return result;
}

absl::StatusOr<std::unique_ptr<Sequence>> GroupDriver::RestoreSession(const std::string& id,
                                                                      const Session& session) {
  absl::StatusOr<LoadResult> loaded =
      LoadSession(*engine_, id, *options_.store, FailedLoadPolicy::kFail, session.compression);
  // Every rank must take the same path (a replay runs collectives): agree on any failure.
  int64_t failed = loaded.ok() ? 0 : 1;
  if (comm_ != nullptr) DAPQ_RETURN_IF_ERROR(comm_->AllReduceSum(&failed, 1));
  if (failed == 0) {
    if (options_.metrics) options_.metrics->OnSessionTurn("store");
    return std::move(loaded->sequence);
  }
  const std::string why = loaded.ok() ? "a block failed to load on another rank"
                                      : std::string(loaded.status().message());
  if (options_.fail_on_bad_block) {
    return absl::DataLossError(absl::StrCat("session_id ", id, ": stored KV failed to load (", why,
                                            ") and --fail_on_bad_block is set"));
  }
  DAPQ_LOG(WARNING) << "session " << id << ": recomputing (" << why << ")";
  if (options_.metrics) options_.metrics->OnSessionTurn("replay");
  std::unique_ptr<Sequence> seq = engine_->NewSequence();
  DAPQ_RETURN_IF_ERROR(
      engine_->Replay(*seq, session.tokens, session.segments, session.compression));
  return seq;
}

absl::Status GroupDriver::KeepSession(const std::string& id, std::unique_ptr<Sequence> owned,
                                      Sequence* seq, const GenerateResult& result,
                                      const compress::CompressionConfig& compression) {
  DAPQ_ASSIGN_OR_RETURN(SessionHistory history,
                        EndSessionTurn(*engine_, *seq, result, id, options_.store));
  auto it = sessions_.find(id);
  if (it == sessions_.end()) {
    lru_.push_front(id);
    it = sessions_.emplace(id, Session{}).first;
    it->second.lru = lru_.begin();
  }
  Session& s = it->second;
  s.tokens = std::move(history.tokens);
  s.segments = std::move(history.segments);
  s.compression = compression;
  if (options_.store != nullptr && options_.resident_session_bytes == 0) {
    s.seq = nullptr;              // saved by EndSessionTurn; the next turn restores it
  } else if (owned != nullptr) {  // kept in the pool (and, with a store, saved there too)
    s.seq = std::move(owned);
  }
  while (static_cast<int>(sessions_.size()) > options_.max_sessions) DropSession(lru_.back());
  return absl::OkStatus();
}

absl::Status GroupDriver::AgreeOnSessionSave(const std::string& id, absl::Status kept) {
  if (comm_ == nullptr || comm_->size() <= 1) return kept;  // one process: one outcome
  int64_t failed = kept.ok() ? 0 : 1;
  if (absl::Status s = comm_->AllReduceSum(&failed, 1); !s.ok()) return s;  // the group broke
  if (failed == 0 || !kept.ok()) return kept;
  DropSession(id);
  return absl::FailedPreconditionError(absl::StrCat(
      "session_id ", id, ": this turn's KV could not be saved on ", failed,
      " other rank(s) of the group, so the session was dropped on every rank; start it again"));
}

void GroupDriver::DropSession(const std::string& id) {
  auto it = sessions_.find(id);
  if (it == sessions_.end()) return;
  lru_.erase(it->second.lru);
  sessions_.erase(it);
  if (options_.store != nullptr) options_.store->EraseSession(id).IgnoreError();
}

absl::Status GroupDriver::RunFollower() {
  while (true) {
    absl::StatusOr<dapq::v1::GroupCommand> command = ReceiveCommand();
    if (!command.ok()) {
      broken_.store(true);
      return command.status();
    }
    switch (command->kind()) {
      case dapq::v1::GroupCommand::SHUTDOWN:
        return absl::OkStatus();
      case dapq::v1::GroupCommand::NOOP:
        if (absl::Status s = GatherKvUsage(); !s.ok()) {
          broken_.store(true);
          return s;
        }
        break;
      case dapq::v1::GroupCommand::GENERATE: {
        const auto& ids = command->request().token_ids().ids();
        const std::vector<int> prompt(ids.begin(), ids.end());
        int next = 0;
        absl::StatusOr<GenerateResult> result = Execute(command->request(), prompt, nullptr, &next);
        if (!result.ok() && IsGroupFailure(result.status())) {
          broken_.store(true);
          return result.status();
        }
        served_.fetch_add(1);
        if (absl::Status s = GatherKvUsage(); !s.ok()) {
          broken_.store(true);
          return s;
        }
        break;
      }
      case dapq::v1::GroupCommand::BATCH: {
        const absl::Status s = RunBatchOp(command->batch_op());
        // Request errors (a full pool, agreed across ranks) are rank 0's to report.
        if (!s.ok() && (IsGroupFailure(s) || absl::IsDataLoss(s))) {
          broken_.store(true);
          return s;
        }
        break;
      }
      default:
        break;
    }
  }
}

GroupDriver::Session* GroupDriver::FindSession(const std::string& id) {
  auto it = sessions_.find(id);
  if (it == sessions_.end()) return nullptr;
  lru_.splice(lru_.begin(), lru_, it->second.lru);
  return &it->second;
}

size_t GroupDriver::SessionsKvBytes() const {
  size_t total = 0;
  if (options_.store != nullptr) {
    for (const kvstore::TierStats& t : options_.store->Stats()) total += t.used_bytes;
    return total;
  }
  for (const auto& [id, s] : sessions_) total += s.seq ? s.seq->kv_used_bytes() : 0;
  return total;
}

absl::Status GroupDriver::GatherKvUsage() {
  // The live KV cache (the engine's paged pool) first, then the store's tiers.
  std::vector<kvstore::TierStats> local(1);
  const kvstore::BlockPool& pool = engine_->kv_pool(0);
  local[0].name = "cache";
  local[0].used_bytes = static_cast<size_t>(pool.blocks_in_use()) * pool.block_bytes();
  local[0].capacity_bytes = static_cast<size_t>(pool.max_blocks()) * pool.block_bytes();
  local[0].blocks = static_cast<int>(pool.blocks_in_use());
  if (options_.store != nullptr) {
    for (const kvstore::TierStats& t : options_.store->Stats()) local.push_back(t);
  }
  const int tp = comm_ != nullptr ? comm_->size() : 1;
  const int rank = comm_ != nullptr ? comm_->rank() : 0;
  const size_t tiers = local.size();
  std::vector<int64_t> all(static_cast<size_t>(tp) * tiers * 3, 0);
  for (size_t t = 0; t < tiers; ++t) {
    int64_t* slot = &all[(static_cast<size_t>(rank) * tiers + t) * 3];
    slot[0] = static_cast<int64_t>(local[t].used_bytes);
    slot[1] = static_cast<int64_t>(local[t].capacity_bytes);
    slot[2] = local[t].blocks;
  }
  if (comm_ != nullptr) DAPQ_RETURN_IF_ERROR(comm_->AllReduceSum(all.data(), all.size()));
  std::vector<dapq::v1::RankUsage> usage(tp);
  for (int r = 0; r < tp; ++r) {
    usage[r].set_rank(r);
    for (size_t t = 0; t < tiers; ++t) {
      const int64_t* slot = &all[(static_cast<size_t>(r) * tiers + t) * 3];
      dapq::v1::TierUsage* u = usage[r].add_tiers();
      u->set_tier(local[t].name);
      u->set_used_bytes(slot[0]);
      u->set_capacity_bytes(slot[1]);
      u->set_blocks(static_cast<int32_t>(slot[2]));
    }
  }
  MutexLock lock(&mu_);
  rank_usage_ = std::move(usage);
  return absl::OkStatus();
}

dapq::v1::GroupStatus GroupDriver::Status() const {
  dapq::v1::GroupStatus s;
  s.set_group_id(options_.group_id);
  s.set_tp(comm_ != nullptr ? comm_->size() : engine_->options().tp);
  s.set_healthy(healthy());
  if (!healthy()) s.set_health_detail("a rank of the group is gone");
  s.set_max_seq_len(engine_->config().max_seq_len);
  s.set_kv_remote(options_.kv_remote);
  s.set_kv_peer(options_.kv_peer);
  {
    MutexLock lock(&mu_);
    s.set_queue_depth(static_cast<int>(queue_.size()));
    for (const auto& r : rank_usage_) *s.add_ranks() = r;
  }
  s.set_active(active_.load());
  s.set_waiting(waiting_.load());
  s.set_batch_capacity(options_.continuous_batching ? options_.scheduler.max_running : 1);
  s.set_sessions(sessions_count_.load());
  s.set_kv_bytes_used(kv_bytes_.load());
  s.set_requests_served(served_.load());
  return s;
}

}  // namespace dapq::worker::service
