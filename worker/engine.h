// File: worker/engine.h
// The inference engine: a model sharded over `tp` tensor-parallel ranks, sequences with explicit
// position tracking, chunked prefill, decode and generation with streaming callbacks.
// Two modes:
//  - in-process (Create): every rank is a thread of this process (RankModel + an in-process
//    Communicator each);
//  - multi-process (CreateRank): this process holds one rank of a group whose other ranks are
//    other processes, joined by a Communicator such as Gloo or NCCL. Every rank calls the same
//    Engine methods with the same arguments in the same order (SPMD); rank 0, the driver,
//    samples, calls on_token and receives logits, and sends each sampled token and its
//    keep-going decision to the other ranks, so that all of them feed identical tokens and stop
//    at the same step.
// An engine holds only its local ranks: "local rank i" below is the engine's i-th rank, global
// rank first_rank() + i.
// Positions: a Sequence's next_position() is where its next token goes. It starts at 0 and
// advances by the tokens fed, independently of the number of cached slots (compression will
// shrink the cache without moving positions).
// Thread-safety: an Engine may serve one call at a time (its rank threads are busy during a
// call); Sequences are owned by the caller and used with the engine that created them.
#ifndef DAPQ_WORKER_ENGINE_H_
#define DAPQ_WORKER_ENGINE_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/device.h"
#include "kernels/types.h"
#include "worker/comm/communicator.h"
#include "worker/compress/compression_config.h"
#include "worker/compress/compressor.h"
#include "worker/kv_cache.h"
#include "worker/model_runner.h"
#include "worker/model_weights.h"
#include "worker/sampler.h"

namespace dapq::worker {

struct EngineOptions {
  int tp = 1;                // tensor-parallel degree (rank threads)
  int prefill_chunk = 1024;  // prompt tokens per forward pass (bounds activation memory)
  // Paged KV cache (worker/kv_cache.h): slots per block (a power of two), and the most blocks
  // of each rank's pool (0: grow while memory lasts). A forward pass that does not fit fails
  // with ResourceExhausted on every rank (capped pools agree over the group first) and leaves
  // the sequence as it was.
  int kv_tokens_per_block = 16;
  long kv_max_blocks = 0;
  // Element type of the KV cache (--kv_dtype): fp32 (exact), bf16 or fp16 (half the bytes per
  // block; keys and values are rounded as they are written, attention reads them widened).
  kernels::DType kv_dtype = kernels::DType::kF32;
  // CPU threads the kernels use in this process (kernels/cpu_threads.h; --threads), shared by
  // the tp in-process ranks; 0: every core (or OPENBLAS_NUM_THREADS). Process-wide: the engine
  // created last sets it.
  int cpu_threads = 0;
  // Prefix reuse (kvstore/block_pool.h's prefix index): a fresh sequence's prompt starts from the
  // longest run of full blocks some earlier prompt left in the pool, and prefills only the rest;
  // its own full blocks are published for later prompts when its prefill ends.
  bool prefix_cache = true;
  // Where the ranks run (--device): the CPU, or a CUDA device, every in-process rank on the same
  // one, each with its own stream. A device rank uploads its weight shard, and its KV pool is a
  // device arena, so it needs kv_max_blocks. Builds without CUDA reject cuda devices with
  // Unimplemented when the engine is created.
  kernels::Device device;
  // kUpload: the device path even on the CPU (worker/model_runner.h's WeightPlacement), with
  // the KV pool in a context arena when kv_max_blocks caps it. For tests.
  WeightPlacement placement = WeightPlacement::kAuto;
  absl::Status Validate(const ModelConfig& config) const;
};

// Parses "fp32", "bf16" or "fp16" (--kv_dtype); InvalidArgument naming the flag otherwise.
absl::StatusOr<kernels::DType> ParseKvDtype(const std::string& name);

// How tokens entered a sequence, so that a session can be recomputed exactly (replayed) when its
// stored KV fails to load.
struct FeedSegment {
  enum class Kind { kPrefill, kPrefillAllLogits, kCompressedPrefill, kDecode };
  Kind kind = Kind::kPrefill;
  int length = 0;  // tokens; kDecode: that many single-token forwards at consecutive positions
};

class Sequence {
 public:
  int next_position() const { return next_position_; }
  // The most slots any (layer, KV head) of the first local rank holds (the prompt length until
  // compression).
  int cached_tokens() const { return caches_.empty() ? 0 : caches_[0].max_length(); }
  // The cache of the engine's local rank `rank` (in [0, local_ranks()): the global rank for an
  // in-process engine, 0 for this process's rank of a multi-process engine).
  KvCache& cache(int rank) { return caches_[rank]; }
  const KvCache& cache(int rank) const { return caches_[rank]; }
  int local_ranks() const { return static_cast<int>(caches_.size()); }
  size_t kv_allocated_bytes() const;  // storage reserved over the local ranks
  size_t kv_used_bytes() const;       // valid slots x K and V over the local ranks
  bool compressed() const { return compressed_; }
  // Prompt tokens taken from the prefix cache instead of being prefilled.
  int reused_tokens() const { return reused_tokens_; }
  // Nothing fed yet (prefix reuse applies).
  bool fresh() const { return tokens_.empty() && next_position_ == 0 && cached_tokens() == 0; }
  // Every token fed so far, and how (replayable() is false after a Forward at explicit,
  // non-consecutive positions).
  const std::vector<int>& tokens() const { return tokens_; }
  const std::vector<FeedSegment>& segments() const { return segments_; }
  bool replayable() const { return replayable_; }
  // Restores the bookkeeping of a sequence whose caches were refilled from the KV store.
  void RestoreState(int next_position, bool compressed, std::vector<int> tokens,
                    std::vector<FeedSegment> segments);

  // What the KV store holds of this sequence as a session (worker/session_store.h), so that the
  // next save of the same session writes only the blocks that changed and the history since.
  struct StoredSession {
    std::string id;                   // the session it was saved or loaded as ("": none)
    int first_turn = 0, turns = 0;    // the store's turn records [first_turn, turns)
    size_t tokens = 0, segments = 0;  // tokens() and segments() those records hold
    int tokens_per_block = 0;
    // [local rank][layer * KV heads + head][block]: the turn whose record wrote that block.
    std::vector<std::vector<std::vector<int32_t>>> block_turns;
  };
  StoredSession& stored() { return stored_; }

 private:
  friend class Engine;
  void Record(FeedSegment::Kind kind, std::span<const int> tokens);
  std::vector<KvCache> caches_;
  int next_position_ = 0;
  bool compressed_ = false;  // the cache went through compression (slots != positions)
  int reused_tokens_ = 0;
  std::vector<int> tokens_;
  std::vector<FeedSegment> segments_;
  bool replayable_ = true;
  StoredSession stored_;
};

// One sequence's part of Engine::Step: its next tokens (a prefill chunk, or one decode token),
// fed at next_position(), next_position() + 1, ...
struct StepEntry {
  Sequence* seq = nullptr;
  std::span<const int> tokens;
};

// Where the chunks of a streamed prompt of `total` tokens end: every `chunk` tokens, except that
// a last chunk shorter than `min_last` (the prompt queries the scorer reads) takes tokens from
// the one before it, or is merged into it when that one cannot spare them.
std::vector<size_t> StreamingChunkEnds(size_t total, size_t chunk, size_t min_last);

struct GenerateOptions {
  int max_new_tokens = 256;
  SamplingOptions sampling;
  compress::CompressionConfig compression;  // applied at the end of prefill (default: none)
  bool stop_at_stop_tokens = true;          // stop after a token in config.stop_token_ids
  absl::Status Validate() const;
};

struct GenerateResult {
  std::vector<int> tokens;  // generated tokens only
  int prompt_tokens = 0;
  double prefill_seconds = 0;  // prompt forward, up to the first sampled token
  double decode_seconds = 0;   // the remaining tokens
  bool stopped_at_stop_token = false;
  int reused_prompt_tokens = 0;   // prompt tokens taken from the prefix cache, not prefilled
  int cached_tokens = 0;          // most KV slots of any (layer, KV head) at the end
  size_t kv_used_bytes = 0;       // valid KV bytes over the engine's local ranks at the end
  size_t kv_allocated_bytes = 0;  // KV storage reserved over the engine's local ranks
  compress::CompressionStats compression;
};

class Engine {
 public:
  // In-process: options.tp rank threads.
  static absl::StatusOr<std::unique_ptr<Engine>> Create(std::shared_ptr<const ModelWeights> model,
                                                        const EngineOptions& options);
  // One rank of a multi-process group: this process holds rank comm->rank() of comm->size()
  // (must equal options.tp; InvalidArgument otherwise). Every rank calls the same Engine methods
  // with the same arguments in the same order (SPMD); logits are produced on rank 0 only (the
  // other ranks' logits vectors are zeros). Argument errors (a token id outside the vocabulary,
  // a prompt past the context) are found identically on every rank before any collective, so
  // the group stays usable. A failed collective breaks the communicator (Gloo: every later
  // collective fails); the group must then be rebuilt.
  // Sequences, their caches and KV byte counts cover this process's rank only; SessionStore,
  // which walks options().tp caches, needs an in-process engine.
  static absl::StatusOr<std::unique_ptr<Engine>> CreateRank(
      std::shared_ptr<const ModelWeights> model, const EngineOptions& options,
      std::unique_ptr<Communicator> comm);
  ~Engine();

  const ModelConfig& config() const { return model_->config; }
  const EngineOptions& options() const { return options_; }
  bool is_driver() const { return first_rank_ == 0; }  // holds rank 0 (true in-process)
  // The paged KV block pool of local rank `local_rank` (usage figures for metrics and status).
  const kvstore::BlockPool& kv_pool(int local_rank) const { return ranks_[local_rank]->kv_pool(); }
  int first_rank() const { return first_rank_; }  // global rank of this engine's first local rank
  // Tokens run through forward passes (every kind) and prompt tokens taken from the prefix cache
  // instead, since creation.
  int64_t forwarded_tokens() const { return forwarded_tokens_.load(std::memory_order_relaxed); }
  int64_t prefix_reused_tokens() const {
    return prefix_reused_tokens_.load(std::memory_order_relaxed);
  }
  int local_ranks() const { return static_cast<int>(ranks_.size()); }

  std::unique_ptr<Sequence> NewSequence() const;

  // Feeds tokens at explicit positions; `logits` (optional) receives the last token's logits.
  absl::Status Forward(Sequence& seq, std::span<const int> tokens,
                       std::span<const int32_t> positions, std::vector<float>* logits);
  // Forward with an observer per local rank (observers.size() == local_ranks()) that sees every
  // layer's queries.
  absl::Status ForwardObserved(Sequence& seq, std::span<const int> tokens,
                               std::span<const int32_t> positions, std::vector<float>* logits,
                               std::span<QueryObserver* const> observers);
  // One forward pass over a ragged batch (RankModel::ForwardBatch on every rank): each entry's
  // tokens at its own consecutive positions, the linear layers once over all of them, attention
  // per sequence. `logits` (optional; driver only, zeros elsewhere) receives each entry's
  // last-token logits, [batch.size() * vocab_size]. Sequences must be distinct and may not be
  // mid-compression. Every entry is checked (tokens, context limit) before anything runs; a full
  // KV pool fails the whole step with ResourceExhausted and leaves every sequence's positions
  // and tokens as they were. Each entry is recorded as a decode (one token) or prefill feed.
  absl::Status Step(std::span<const StepEntry> batch, std::vector<float>* logits);
  // Prefix reuse (EngineOptions::prefix_cache; a no-op returning 0 when off). ReusePrefix gives
  // the fresh sequence `seq` the longest cached run of full blocks of `prompt` that leaves at
  // least keep_last (>= 1) tokens to prefill, recorded as a prefill of those tokens, and returns
  // its length (a multiple of kv_tokens_per_block). The ranks of a group agree on the length (the
  // shortest any rank holds). PublishPrefix offers the full blocks of `seq` (uncompressed, fed
  // at consecutive positions from 0) to later prompts; Prefill and PrefillCompressed do both for
  // fresh sequences themselves.
  absl::StatusOr<int> ReusePrefix(Sequence& seq, std::span<const int> prompt, int keep_last = 1);
  void PublishPrefix(const Sequence& seq);
  // Drops every cached prefix (the blocks return to the pools unless sequences hold them).
  void ClearPrefixCache();

  // Feeds tokens at next_position(), next_position()+1, ... in chunks of prefill_chunk (a fresh
  // sequence first takes what the prefix cache holds of them, then publishes its blocks).
  // OutOfRange when they would pass the context limit.
  absl::Status Prefill(Sequence& seq, std::span<const int> tokens, std::vector<float>* logits);
  // Prefill followed by KV-cache compression (COMPRESSION.md): the prompt's queries are
  // collected while it runs, then every rank scores its KV heads, the ranks agree on the keep-set
  // through exact integer all-reduces, and the caches are compacted. Method full, or a prompt
  // within the budget, is a plain prefill (bit-identical). `logits` are the last prompt token's,
  // from the full cache (of the last chunk when streaming). The stats' slot counts are over the
  // whole group (identical on every rank).
  // Streaming (config.streaming_chunk > 0): the prompt runs in chunks of that many tokens and the
  // cache is compressed back to the budget after each chunk once the positions seen exceed it,
  // so it never holds more than budget + chunk slots per (layer, KV head); with a chunk at least
  // as long as the prompt this is the one-shot compression, bit for bit. A sequence that holds
  // slots already (a session's next turn, compressed or not) is compressed with them: the budget
  // then covers its retained slots and the new ones. The budget is sized by positions
  // (next_position() + tokens), identical on every rank.
  absl::StatusOr<compress::CompressionStats> PrefillCompressed(
      Sequence& seq, std::span<const int> tokens, const compress::CompressionConfig& config,
      std::vector<float>* logits);
  // Logits for every one of `tokens` (teacher forcing), [tokens.size() * vocab_size].
  absl::Status PrefillAllLogits(Sequence& seq, std::span<const int> tokens,
                                std::vector<float>* logits);

  // Feeds `tokens` (non-empty) to `seq` — compressed with options.compression when the sequence
  // is fresh, a plain prefill otherwise (a session's next turn) — and samples up to
  // max_new_tokens, feeding each sampled token but the last. on_token (optional) sees each token
  // as it is produced and may return false to stop early. Multi-process: on_token is called on
  // rank 0 only; every rank returns the same tokens and stops at the same step.
  absl::StatusOr<GenerateResult> Continue(Sequence& seq, std::span<const int> tokens,
                                          const GenerateOptions& options,
                                          const std::function<bool(int)>& on_token = nullptr);
  // Replays a sequence's recorded feeds (FeedSegment) into `seq` (fresh) from `source`'s history,
  // compressing compressed prefills with `compression`: bit-identical caches when the engine
  // options are the same. FailedPrecondition if the history is not replayable.
  absl::Status Replay(Sequence& seq, std::span<const int> tokens,
                      std::span<const FeedSegment> segments,
                      const compress::CompressionConfig& compression);
  // Prefills `prompt` (non-empty) and samples up to max_new_tokens; on_token (optional) sees each
  // token as it is produced and may return false to stop early.
  absl::StatusOr<GenerateResult> Generate(std::span<const int> prompt,
                                          const GenerateOptions& options,
                                          const std::function<bool(int)>& on_token = nullptr);

 private:
  Engine(std::shared_ptr<const ModelWeights> model, const EngineOptions& options);
  bool multi_process() const { return static_cast<int>(ranks_.size()) != options_.tp; }
  // Runs fn(local rank) on every local rank (the first on the calling thread). With several
  // local ranks the first error wins and the communicator group is aborted so no rank thread
  // waits forever.
  absl::Status RunOnRanks(const std::function<absl::Status(int)>& fn);
  // Multi-process: sends the driver's sampled token and keep-going decision to every rank.
  absl::Status ShareStep(int& token, bool& keep_going);
  absl::Status ForwardChunk(Sequence& seq, std::span<const int> tokens,
                            std::span<const int32_t> positions, std::span<float> logits,
                            bool all_logits, std::span<QueryObserver* const> observers = {});
  // InvalidArgument for no tokens, OutOfRange past the context limit.
  absl::Status CheckPrefill(const Sequence& seq, size_t tokens) const;
  absl::Status PrefillObserved(Sequence& seq, std::span<const int> tokens,
                               std::vector<float>* logits,
                               std::span<QueryObserver* const> observers);
  // One compression of `seq`'s cache as it stands (a whole prompt, or a streamed prompt's
  // chunks so far): DapQ forward mode's placeholder pass (copies of last_token), then
  // CompressRank on every rank. carried: H2O's scores of the kept slots, per local rank.
  // Returns the slots evicted over the local ranks.
  absl::StatusOr<long> CompressCached(Sequence& seq, const compress::CompressionConfig& c,
                                      const compress::Scorer& scorer,
                                      std::span<compress::QueryCollector* const> collectors,
                                      const std::vector<int>& budgets, int last_token,
                                      std::vector<std::vector<std::vector<float>>>* carried);
  // ReusePrefix without recording the tokens (the caller records the whole prompt).
  absl::StatusOr<int> AttachCachedPrefix(Sequence& seq, std::span<const int> prompt, int keep_last);
  // PublishPrefix for a sequence whose cache holds exactly `tokens`, at positions 0, 1, ...
  void PublishPrefixTokens(const Sequence& seq, std::span<const int> tokens);
  // PrefillObserved; a fresh sequence first takes what the prefix cache holds of `tokens`
  // (leaving keep_last to prefill; 0: no reuse), publishes its full blocks afterwards, and is
  // fresh again when the prefill fails. Records nothing.
  absl::Status PrefillWithPrefixCache(Sequence& seq, std::span<const int> tokens,
                                      std::vector<float>* logits,
                                      std::span<QueryObserver* const> observers, int keep_last);

  std::shared_ptr<const ModelWeights> model_;
  EngineOptions options_;
  std::vector<std::unique_ptr<Communicator>> comms_;
  std::vector<std::unique_ptr<RankModel>> ranks_;
  int first_rank_ = 0;
  std::vector<float> inv_freq_;
  std::atomic<int64_t> forwarded_tokens_{0}, prefix_reused_tokens_{0};
};

}  // namespace dapq::worker

#endif  // DAPQ_WORKER_ENGINE_H_
