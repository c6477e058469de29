// File: worker/service/scheduler.h
// Continuous batching over one engine: requests wait in a queue, are admitted while the KV pool
// has room for their whole length (prompt + max_new_tokens, reserved at admission, with a free
// watermark; room = the pool's free blocks, which sequences outside the scheduler such as
// sessions also use, less what running sequences reserved and have not taken yet), and every
// running sequence takes part in each engine step (Engine::Step): decode
// tokens first, then prompt chunks filling the step's token budget, so a long prompt cannot
// stall the streams already decoding. Each request has its own sampler, stop tokens,
// max_new_tokens, deadline and cancellation (its on_token returning false).
// Prefix reuse (EngineOptions::prefix_cache): a request starts from the longest cached run of its
// prompt's full blocks, and a request sharing its first 64 tokens with a prompt still prefilling
// in the batch waits for that prompt's blocks instead of computing them again.
// A streamed compression (CompressionConfig::streaming_chunk) reserves its budget + one chunk
// (+ the tokens to generate) instead of its length: a million-token prompt is admitted within a
// few MiB, or refused up front with ResourceExhausted naming the figure.
// Compression: a request with a method other than full is prefilled alone when admitted
// (Engine::PrefillCompressed: scoring needs every prompt query of that sequence), then decodes in
// the batch like any other; different methods and budgets run side by side.
// Admission::kOptimistic reserves only what a request's tokens take so far (plus one), so a
// capped pool runs more sequences at once, and preemption is the normal way out when it fills.
// Preemption: when a step finds the pool full anyway (ResourceExhausted), the newest running
// sequence is preempted and waits again at the front of the queue. By swap, its KV goes to the
// KV store (BatchOps::SwapOut) and comes back bit-identical when it is readmitted; by recompute
// (or when the swap fails), its blocks are freed and its prompt and the tokens generated so far
// are prefilled again. Either way greedy tokens are unchanged and its sampler keeps its state.
// A request that could never fit the pool fails with ResourceExhausted naming the limit.
// Sequences are named by request id and reached through BatchOps (batch_ops.h): this process's
// engine, or, on rank 0 of a multi-process group, operations that every rank runs.
// Thread-safety: thread-compatible (one driver thread calls Add and RunStep).
#ifndef DAPQ_WORKER_SERVICE_SCHEDULER_H_
#define DAPQ_WORKER_SERVICE_SCHEDULER_H_

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/engine.h"
#include "worker/sampler.h"
#include "worker/service/batch_ops.h"

namespace dapq::worker::service {

enum class Preemption { kRecompute, kSwap };
// What admission sets aside for a request: kReserve, its whole length (prompt + max_new_tokens),
// so a running sequence is preempted only when blocks held outside the scheduler (sessions) grow;
// kOptimistic, only the blocks its tokens so far take plus one more token (vLLM's policy): more
// sequences share a capped pool, and when decoding fills it the newest is preempted.
enum class Admission { kReserve, kOptimistic };

struct SchedulerOptions {
  int max_step_tokens = 256;  // tokens per engine step (decode tokens + prompt chunks)
  int max_running = 64;       // sequences in the batch
  // Capped pools: admission keeps this share of the pool's blocks free.
  double free_block_watermark = 0.0;
  // How a sequence is preempted when the pool runs out: recompute (drop its blocks, prefill it
  // again later), or swap (save its KV to the store, BatchOps::SwapOut, and restore it; falls
  // back to recompute when the save fails).
  Preemption preemption = Preemption::kRecompute;
  Admission admission = Admission::kReserve;
  absl::Status Validate() const;
};

struct ScheduledRequest {
  uint64_t id = 0;
  std::vector<int> prompt;  // non-empty
  GenerateOptions options;
  // Sees each token as it is sampled; returning false cancels the request (it then finishes with
  // the tokens so far, cancelled = true).
  std::function<bool(int)> on_token;
  std::optional<std::chrono::steady_clock::time_point> deadline;
  // When the request reached the scheduler (its time to first token counts from here; default:
  // the time of Add). Reported back in FinishedRequest.
  std::chrono::steady_clock::time_point start{};
  // A session's turn: `continuing` when the ops already hold its sequence under `id` (earlier
  // turns: the prompt is fed after them, never compressed or taken from the prefix cache, and the
  // sequence is never preempted); `keep_sequence` leaves the sequence in the ops when the
  // request finishes well (FinishedRequest::sequence_kept), for the caller to take.
  bool continuing = false;
  bool keep_sequence = false;
};

struct FinishedRequest {
  uint64_t id = 0;
  absl::StatusOr<GenerateResult> result;
  bool cancelled = false;
  int preemptions = 0;
  std::chrono::steady_clock::time_point start;
  bool sequence_kept = false;  // keep_sequence and it finished well: the ops still hold it
};

class Scheduler {
 public:
  // Runs its sequences on `engine` (LocalBatchOps), or through `ops` when given (a
  // multi-process group's rank 0 sends each operation to the other ranks); `engine` gives the
  // model's shape and the KV pool. Both must outlive the scheduler. Request ids must be unique
  // among the requests it holds.
  Scheduler(Engine* engine, const SchedulerOptions& options, BatchOps* ops = nullptr);

  // Queues a request. InvalidArgument for bad options or an empty prompt, OutOfRange past the
  // context, ResourceExhausted when its whole length could never fit the KV pool.
  absl::Status Add(ScheduledRequest request);
  // Admits what fits, runs one engine step over the running sequences, samples, and returns the
  // requests that finished in it (in any order). An engine failure other than a full pool fails
  // every running request with that status.
  std::vector<FinishedRequest> RunStep();

  bool idle() const { return waiting_.empty() && running_.empty(); }
  int waiting() const { return static_cast<int>(waiting_.size()); }
  int running() const { return static_cast<int>(running_.size()); }
  int64_t preemptions() const { return preemptions_; }
  int64_t swaps() const { return swaps_; }  // preemptions by swap (the rest are recomputes)
  // The blocks the KV pool lacks to admit the request at the head of the queue: 0 when none
  // waits, the batch is full, the pool is uncapped or the request fits. Blocks held outside the
  // scheduler (idle sessions kept in the pool) can be given back to cover it.
  long AdmissionShortfall() const;
  // The last RunStep's engine step: sequences and tokens in it (0 when it ran none).
  int last_step_sequences() const { return last_step_sequences_; }
  int last_step_tokens() const { return last_step_tokens_; }

 private:
  struct Entry {
    ScheduledRequest request;
    bool has_sequence = false;  // ops_ holds a sequence for request.id
    std::unique_ptr<Sampler> sampler;
    std::vector<int> feed;  // tokens to feed before sampling (prompt, or prompt + generated)
    size_t fed = 0;
    int next = -1;  // the sampled token to feed next
    GenerateResult result;
    bool cancelled = false;
    bool swapped = false;  // its KV waits in the store
    int preemptions = 0;
    long reserved_blocks = 0;
    // Prefix reuse: the key of the prompt's kSharedPrefixTokens-th token block (0: none), and
    // whether its full blocks are published yet.
    uint64_t share_key = 0;
    bool published = false;
  };
  // A request whose first kSharedPrefixTokens tokens equal those of a prompt still prefilling in
  // the batch waits until that prompt's blocks are published, then takes them: a wave of
  // questions over one document prefills the document once.
  static constexpr int kSharedPrefixTokens = 64;
  // Whether `e` should wait for a running prompt with the same start (see kSharedPrefixTokens).
  bool WaitsForSharedPrefix(const Entry& e) const;
  // KV blocks per rank `e` holds at most: its whole length, or, for a streamed compression
  // (CompressionConfig::streaming_chunk), what StreamedSlotsPerHead bounds.
  long BlocksFor(const Entry& e) const;
  // KV blocks per rank reserved for `e` at admission: BlocksFor(e), or, with
  // Admission::kOptimistic, no more than the blocks of the tokens it holds once admitted plus one.
  long AdmissionBlocks(const Entry& e) const;
  // Blocks per rank of `tokens` slots in every (layer, KV head) of the rank.
  long BlocksOfTokens(long tokens) const;
  // The most slots one KV head of a streamed request holds on average over its layer's heads:
  // budget + max(chunk + placeholders, tokens still to generate); 0 when `e` does not stream.
  long StreamedSlotsPerHead(const Entry& e) const;
  // Capped pools: the pool's blocks less the free watermark.
  long UsableBlocks() const;
  long FreeBlocks() const;
  // Moves waiting requests that fit into the batch; compressed ones are prefilled here.
  void Admit(std::vector<FinishedRequest>& finished);
  // Handles one sampled token of `e`; true when `e` is done.
  bool Accept(Entry& e, int token);
  FinishedRequest Finish(Entry& e, absl::Status status);

  // Drops e's sequence, if any.
  void ReleaseSequence(Entry& e);
  // Preempts the newest running sequence that is not a continuing session turn (swap or
  // recompute) and queues it first; with none, fails the newest turn (into `finished`).
  void PreemptNewest(std::vector<FinishedRequest>& finished);
  // e will feed every token it has seen but the last sampled one (fed when it decodes again).
  static void PrepareRecompute(Entry& e);

  Engine* const engine_;
  const SchedulerOptions options_;
  std::unique_ptr<LocalBatchOps> local_ops_;  // when no ops were given
  BatchOps* const ops_;
  std::deque<std::unique_ptr<Entry>> waiting_;
  std::vector<std::unique_ptr<Entry>> running_;  // oldest first
  int64_t preemptions_ = 0, swaps_ = 0;
  int last_step_sequences_ = 0, last_step_tokens_ = 0;
};

}  // namespace dapq::worker::service

#endif  // DAPQ_WORKER_SERVICE_SCHEDULER_H_
