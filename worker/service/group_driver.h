// File: worker/service/group_driver.h
// Drives one worker group (the TP ranks of one model replica) in lock step. Rank 0 runs
// RunDriver(): it takes requests from a bounded queue, validates and tokenizes them, and runs
// them in a continuous batch (worker/service/scheduler.h), sending every batch operation as a
// GroupCommand to the other ranks over the group's communicator; every rank then runs the same
// engine call on its slice of the model. Without batching it runs one request at a time, each
// broadcast as one GENERATE command (the engine broadcasts each sampled token from rank 0).
// Ranks > 0 run RunFollower(). When idle, rank 0 broadcasts a NOOP every `idle_ping` so a dead
// rank is noticed without traffic.
// Sessions: every rank keeps the same table session id -> Sequence (LRU, max_sessions), because
// every rank sees the same commands in the same order. With continuous batching a session's turn
// runs in the batch like any request: its sequence moves from the table into the batch
// (SESSION_BEGIN, restored from the KV store if need be) and back when the turn ends
// (SESSION_END: the last token fed, saved); a later turn of the same session waits for it.
// With a store, an idle session's sequence stays in the table (the engine's pool) within
// resident_session_bytes; rank 0 takes sessions out (SESSION_EVICT to every rank), so the ranks'
// tables stay the same.
// A communicator failure breaks the group for good: the request gets UNAVAILABLE, later
// requests too, and RunDriver returns (the process then exits and the coordinator reroutes).
// Thread-safety: Submit/Status/Shutdown from any thread; RunDriver/RunFollower on one thread.
#ifndef DAPQ_WORKER_SERVICE_GROUP_DRIVER_H_
#define DAPQ_WORKER_SERVICE_GROUP_DRIVER_H_

#include <atomic>
#include <chrono>
#include <deque>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <unordered_map>

#include "absl/status/statusor.h"
#include "common/mutex.h"
#include "dapq/v1/admin.pb.h"
#include "dapq/v1/worker.pb.h"
#include "kvstore/kv_store.h"
#include "tokenizer/text_tokenizer.h"
#include "worker/chat_template.h"
#include "worker/comm/communicator.h"
#include "worker/engine.h"
#include "worker/service/group_batch_ops.h"
#include "worker/service/request_channel.h"
#include "worker/service/scheduler.h"
#include "worker/service/worker_metrics.h"

namespace dapq::worker::service {

struct GroupDriverOptions {
  std::string group_id = "g0";
  int max_queue = 16;     // requests waiting (RESOURCE_EXHAUSTED beyond; + scheduler.max_running
                          // when the group batches continuously)
  int max_sessions = 64;  // sessions kept; the least recently used is dropped beyond
  std::chrono::milliseconds idle_ping{1000};
  // With a KV store (one per rank): a session's KV is saved there after each turn (and spills
  // down its tiers while idle) and restored for the next turn. A block that fails verification
  // on any rank makes every rank recompute the session (replay), or, with fail_on_bad_block,
  // fails the request with DATA_LOSS. Without a store, sessions stay in memory.
  kvstore::KvStore* store = nullptr;  // not owned
  // With a store, the engine's block pool is the sessions' device tier: an idle session's
  // sequence stays in the pool after its turn (saved through to the store, incrementally, so it
  // can leave at any time without a copy) and its next turn continues from there, reading
  // nothing from the store. Idle sessions leave the pool, least recently used first, while their
  // KV (rank 0's count, over its local ranks) exceeds this many bytes, when the batch waits for
  // pool blocks they hold, and when a step had to preempt; rank 0 decides and every rank follows
  // (BatchOp SESSION_EVICT), so the ranks hold the same sessions. 0: every session leaves the
  // pool after its turn.
  size_t resident_session_bytes = 64ull << 20;
  bool fail_on_bad_block = false;
  WorkerMetrics* metrics = nullptr;  // optional; not owned
  // Reported in Status() (dapq status): the store's remote tier URL and this rank's KvPeer
  // address, empty when there is none.
  std::string kv_remote;
  std::string kv_peer;
  // Continuous batching (worker/service/scheduler.h): requests run together, one engine step for
  // all, session turns included (one turn per session at a time). In a
  // multi-process group rank 0 plans and sends every batch operation to the other ranks
  // (GroupCommand BATCH). false: one request at a time.
  bool continuous_batching = true;
  SchedulerOptions scheduler;
  // Renders chat prompts (null: the group rejects them).
  const ChatTemplate* chat_template = nullptr;
};

class GroupDriver {
 public:
  // `engine` holds this process's ranks; `comm` is the group's communicator when the ranks are
  // separate processes (null when every rank is in this process). `tokenizer` may be null
  // (token-id prompts only); so may `options.chat_template` (no chat prompts). All must outlive
  // the driver.
  GroupDriver(Engine* engine, Communicator* comm, const tokenizer::TextTokenizer* tokenizer,
              const GroupDriverOptions& options);

  // Rank 0. Queues a request: ResourceExhausted when the queue is full, Unavailable once the
  // group is broken or shutting down, InvalidArgument for bad options.
  absl::StatusOr<std::shared_ptr<RequestChannel>> Submit(dapq::v1::GenerateRequest request);
  // Rank 0: serves the queue until Shutdown() (OK) or a group failure (its status).
  absl::Status RunDriver();
  // Ranks > 0: runs rank 0's commands until SHUTDOWN (OK) or a failure.
  absl::Status RunFollower();
  // Makes RunDriver broadcast SHUTDOWN and return once the running request finished; queued
  // requests get UNAVAILABLE.
  void Shutdown();

  bool healthy() const { return !broken_.load(); }
  // Load and health (group_id, tp, model, queue, sessions, KV bytes, requests served).
  dapq::v1::GroupStatus Status() const;

 private:
  struct Session {
    std::unique_ptr<Sequence> seq;  // null when the session lives in the KV store only
    std::list<std::string>::iterator lru;
    // What a replay needs (identical on every rank).
    std::vector<int> tokens;
    std::vector<FeedSegment> segments;
    compress::CompressionConfig compression;
  };
  // Runs one GENERATE on this rank. `channel` is non-null on rank 0 only.
  absl::StatusOr<GenerateResult> Execute(const dapq::v1::GenerateRequest& request,
                                         const std::vector<int>& prompt, RequestChannel* channel,
                                         int* next_position);
  absl::Status SendCommand(const dapq::v1::GroupCommand& command);
  absl::StatusOr<dapq::v1::GroupCommand> ReceiveCommand();
  // Runs one request; true when its command was broadcast (every rank ran it).
  bool Serve(RequestChannel& channel);
  // RunDriver with continuous batching (in-process and multi-process groups).
  absl::Status RunBatched();
  // Rank 0's continuous batch: the ops (this rank's sequences, and the group's), the scheduler,
  // the channels of its requests by scheduler id, and the session turns in it or waiting.
  struct BatchState {
    LocalBatchOps& local;
    GroupBatchOps& group;
    Scheduler& scheduler;
    std::map<uint64_t, std::shared_ptr<RequestChannel>> ids;
    std::set<std::string> active_sessions;
    std::map<std::string, std::deque<std::shared_ptr<RequestChannel>>> deferred;
  };
  // Queues `channel`'s request in the batch (or answers it at once when it is cancelled or
  // invalid); a session's turn joins with its sequence, or waits while its session has one in.
  void AddToBatch(std::shared_ptr<RequestChannel> channel, BatchState& batch);
  // A finished request's last event; a session turn's sequence returns to the table first, and
  // the session's next waiting turn joins.
  void Deliver(const FinishedRequest& f, BatchState& batch);
  // Every rank: session `sid`'s turn joins the batch as request `id` on `ops` (its sequence from
  // the table, or restored from the store); true when it continues earlier turns. A failed
  // restore (agreed by the ranks) drops the session. `requested`: a first turn's compression.
  absl::StatusOr<bool> BeginBatchedSession(uint64_t id, const std::string& sid,
                                           const compress::CompressionConfig& requested,
                                           LocalBatchOps& ops);
  // Every rank: request `id`'s turn ended; with `result`, its sequence becomes the session
  // (KeepSession) and the session's next position is returned; without, the session is dropped.
  absl::StatusOr<int> EndBatchedSession(uint64_t id, const GenerateResult* result,
                                        LocalBatchOps& ops);
  // Rank 0: EndBatchedSession on every rank (a SESSION_END command, then here).
  absl::StatusOr<int> EndSessionEverywhere(uint64_t id, const GenerateResult* result,
                                           BatchState& batch);
  // Answers a request cancelled while it waited in the queue; true when it did.
  static bool AnswerIfCancelled(RequestChannel& channel);
  // The request's prompt as token ids and its options, within the context from `next_position`.
  absl::StatusOr<std::vector<int>> PreparePrompt(const RequestChannel& channel, bool continuing,
                                                 int next_position, GenerateOptions* options) const;
  // Streams each sampled token (and its text after `prev`) to `channel`; false once cancelled
  // or once the text reached one of the request's stop sequences.
  std::function<bool(int)> StreamTo(RequestChannel* channel, int prev) const;
  // Followers: runs one operation of rank 0's continuous batch on this rank's sequences.
  absl::Status RunBatchOp(const dapq::v1::BatchOp& op);
  // Rank 0 of a batching group: a NOOP to the other ranks, then the KV usage gather they run
  // after it.
  absl::Status PingAndGather();
  // The final event of a request: summary, metrics, group-failure handling.
  void Complete(RequestChannel& channel, std::chrono::steady_clock::time_point start,
                const absl::StatusOr<GenerateResult>& result, int next_position);
  void FailQueued(const absl::Status& status);
  Session* FindSession(const std::string& id);
  // Restores a stored session on every rank, agreeing across the group on recomputing.
  absl::StatusOr<std::unique_ptr<Sequence>> RestoreSession(const std::string& id,
                                                           const Session& session);
  // Records the turn's sequence under `id` (EndSessionTurn: feeds the last sampled token, saves).
  // Every rank of a multi-process group runs this after a session save, in the same order:
  // when the save failed on any rank, every rank drops the session (else the next turn would
  // find it on some ranks only and run mismatched collectives). Returns this rank's outcome, or
  // FailedPrecondition when another rank failed.
  absl::Status AgreeOnSessionSave(const std::string& id, absl::Status kept);
  absl::Status KeepSession(const std::string& id, std::unique_ptr<Sequence> owned, Sequence* seq,
                           const GenerateResult& result,
                           const compress::CompressionConfig& compression);
  void DropSession(const std::string& id);
  size_t SessionsKvBytes() const;
  // Rank 0, with a store (group_driver_sessions.cc): takes idle sessions' sequences out of the
  // pool, least recently used first, while their KV exceeds resident_session_bytes or
  // `blocks_short()` (asked again after each) is positive; each eviction goes to the other ranks
  // first (BatchOp SESSION_EVICT). Fails only when sending it fails (the group broke).
  absl::Status EvictIdleSessions(const std::function<long()>& blocks_short);
  // Every rank: session `id`'s sequence leaves the pool (its KV is in the store); a no-op when
  // it is not there.
  void EvictSession(const std::string& id);
  // The KV bytes (over the local ranks) of the sessions whose sequences are in the pool.
  size_t ResidentSessionBytes() const;
  // Every rank's store usage per tier, gathered with one int64 all-reduce (each rank fills its
  // own slots); kept on rank 0 for Status(). Called by every rank at the same points.
  absl::Status GatherKvUsage();

  Engine* const engine_;
  Communicator* const comm_;
  const tokenizer::TextTokenizer* const tokenizer_;
  const GroupDriverOptions options_;
  const int kv_scale_;  // ranks per local rank (KV bytes are reported for the whole group)

  mutable Mutex mu_;
  CondVar cv_;
  std::deque<std::shared_ptr<RequestChannel>> queue_ ABSL_GUARDED_BY(mu_);
  bool shutdown_ ABSL_GUARDED_BY(mu_) = false;
  std::atomic<bool> broken_{false};
  std::atomic<int> active_{0};
  std::atomic<int> waiting_{0};  // the batch's waiting requests
  std::atomic<int> sessions_count_{0};
  std::atomic<int64_t> kv_bytes_{0};
  std::atomic<int64_t> served_{0};
  std::vector<dapq::v1::RankUsage> rank_usage_ ABSL_GUARDED_BY(mu_);

  // Driver/follower thread only.
  std::unordered_map<std::string, Session> sessions_;
  std::list<std::string> lru_;                   // most recent first
  uint64_t next_request_id_ = 1;                 // scheduler ids of batched requests
  std::unique_ptr<LocalBatchOps> follower_ops_;  // followers' sequences of the batch
  struct BatchedSession {
    std::string id;
    compress::CompressionConfig compression;  // the session's (its first turn's)
  };
  std::map<uint64_t, BatchedSession> batched_sessions_;  // session turns in the batch, by request
};

// True for the statuses that mean the group itself failed (a rank or the transport is gone), as
// opposed to a bad request.
bool IsGroupFailure(const absl::Status& status);

}  // namespace dapq::worker::service

#endif  // DAPQ_WORKER_SERVICE_GROUP_DRIVER_H_
