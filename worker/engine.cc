// File: worker/engine.cc
// Engine: rank threads (or this process's rank of a group), chunked prefill, decode loop,
// sampling and timing.
#include "worker/engine.h"

#include <chrono>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "kernels/cpu_threads.h"
#include "kvstore/block_pool.h"
#include "worker/comm/in_process_communicator.h"
#include "worker/compress/allocator.h"
#include "worker/compress/query_collector.h"
#include "worker/compress/scorer.h"

namespace dapq::worker {
namespace {
double SecondsSince(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}
}  // namespace

absl::Status EngineOptions::Validate(const ModelConfig& config) const {
  if (prefill_chunk < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("prefill_chunk=", prefill_chunk, " must be >= 1"));
  }
  if (cpu_threads < 0 || cpu_threads > 4096) {
    return absl::InvalidArgumentError(
        absl::StrCat("threads=", cpu_threads, " must be in [0, 4096] (0: every core)"));
  }
  DAPQ_RETURN_IF_ERROR(
      kvstore::BlockPool::Create(config.head_dim, kv_tokens_per_block, kv_max_blocks, kv_dtype)
          .status());
  if (device.backend != kernels::Backend::kCpu && kv_max_blocks <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "kv_max_blocks=", kv_max_blocks, ": the KV pool on ", kernels::DeviceName(device),
        " is allocated up front and needs a cap (kv_max_blocks > 0: dapq-worker "
        "--kv_pool_blocks)"));
  }
  return MakeRankShard(config, 0, tp).status();
}

namespace {

// One rank of an engine on options.device, with its KV pool.
absl::StatusOr<std::unique_ptr<RankModel>> MakeRank(const ModelWeights& model,
                                                    const EngineOptions& options,
                                                    const RankShard& shard, Communicator* comm) {
  const ModelConfig& c = model.config;
  const bool cpu = options.device.backend == kernels::Backend::kCpu;
  if (cpu && options.placement == WeightPlacement::kAuto) {
    DAPQ_ASSIGN_OR_RETURN(auto pool,
                          kvstore::BlockPool::Create(c.head_dim, options.kv_tokens_per_block,
                                                     options.kv_max_blocks, options.kv_dtype));
    return std::make_unique<RankModel>(model, shard, comm, std::move(pool));
  }
  DAPQ_ASSIGN_OR_RETURN(std::shared_ptr<kernels::ExecutionContext> context,
                        kernels::ExecutionContext::Create(options.device));
  // A device pool is a context arena (Validate required the cap); the CPU's device path takes
  // one when capped.
  DAPQ_ASSIGN_OR_RETURN(
      auto pool,
      kvstore::BlockPool::Create(c.head_dim, options.kv_tokens_per_block, options.kv_max_blocks,
                                 options.kv_dtype, options.kv_max_blocks > 0 ? context : nullptr));
  return RankModel::Create(model, shard, comm, std::move(pool), std::move(context),
                           options.placement);
}

}  // namespace

absl::StatusOr<kernels::DType> ParseKvDtype(const std::string& name) {
  if (name == "fp32") return kernels::DType::kF32;
  if (name == "bf16") return kernels::DType::kBF16;
  if (name == "fp16") return kernels::DType::kF16;
  return absl::InvalidArgumentError(
      absl::StrCat("kv_dtype: '", name, "' is not one of fp32, bf16, fp16"));
}

absl::Status GenerateOptions::Validate() const {
  if (max_new_tokens < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_new_tokens=", max_new_tokens, " must be >= 0"));
  }
  return sampling.Validate();
}

void Sequence::Record(FeedSegment::Kind kind, std::span<const int> tokens) {
  tokens_.insert(tokens_.end(), tokens.begin(), tokens.end());
  if (kind == FeedSegment::Kind::kDecode && !segments_.empty() &&
      segments_.back().kind == FeedSegment::Kind::kDecode) {
    segments_.back().length += static_cast<int>(tokens.size());
    return;
  }
  segments_.push_back({kind, static_cast<int>(tokens.size())});
}

void Sequence::RestoreState(int next_position, bool compressed, std::vector<int> tokens,
                            std::vector<FeedSegment> segments) {
  next_position_ = next_position;
  compressed_ = compressed;
  tokens_ = std::move(tokens);
  segments_ = std::move(segments);
}

size_t Sequence::kv_allocated_bytes() const {
  size_t total = 0;
  for (const KvCache& c : caches_) total += c.bytes();
  return total;
}

size_t Sequence::kv_used_bytes() const {
  size_t total = 0;
  for (const KvCache& c : caches_) total += c.total_slots() * c.slot_bytes();
  return total;
}

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(std::shared_ptr<const ModelWeights> model,
                                                       const EngineOptions& options) {
  if (model == nullptr) return absl::InvalidArgumentError("engine: no model");
  DAPQ_RETURN_IF_ERROR(model->config.Validate());
  DAPQ_RETURN_IF_ERROR(options.Validate(model->config));
  std::unique_ptr<Engine> engine(new Engine(model, options));
  kernels::SetCpuThreads(options.cpu_threads, options.tp);
  DAPQ_ASSIGN_OR_RETURN(engine->comms_, CreateInProcessGroup(options.tp));
  for (int r = 0; r < options.tp; ++r) {
    DAPQ_ASSIGN_OR_RETURN(RankShard shard, MakeRankShard(model->config, r, options.tp));
    DAPQ_ASSIGN_OR_RETURN(auto rank, MakeRank(*model, options, shard, engine->comms_[r].get()));
    engine->ranks_.push_back(std::move(rank));
  }
  DAPQ_ASSIGN_OR_RETURN(engine->inv_freq_, kernels::ComputeRopeInvFreq(model->config.rope));
  return engine;
}

absl::StatusOr<std::unique_ptr<Engine>> Engine::CreateRank(
    std::shared_ptr<const ModelWeights> model, const EngineOptions& options,
    std::unique_ptr<Communicator> comm) {
  if (model == nullptr) return absl::InvalidArgumentError("engine: no model");
  if (comm == nullptr) return absl::InvalidArgumentError("engine: no communicator");
  DAPQ_RETURN_IF_ERROR(model->config.Validate());
  DAPQ_RETURN_IF_ERROR(options.Validate(model->config));
  if (comm->size() != options.tp) {
    return absl::InvalidArgumentError(
        absl::StrCat("engine: communicator group of ", comm->size(), " ranks for tp=", options.tp));
  }
  const int rank = comm->rank();
  if (rank < 0 || rank >= options.tp) {
    return absl::InvalidArgumentError(
        absl::StrCat("engine: communicator rank ", rank, " outside [0, tp=", options.tp, ")"));
  }
  DAPQ_ASSIGN_OR_RETURN(RankShard shard, MakeRankShard(model->config, rank, options.tp));
  std::unique_ptr<Engine> engine(new Engine(model, options));
  kernels::SetCpuThreads(options.cpu_threads, 1);  // this process runs one rank
  engine->first_rank_ = rank;
  engine->comms_.push_back(std::move(comm));
  DAPQ_ASSIGN_OR_RETURN(auto rank_model, MakeRank(*model, options, shard, engine->comms_[0].get()));
  engine->ranks_.push_back(std::move(rank_model));
  DAPQ_ASSIGN_OR_RETURN(engine->inv_freq_, kernels::ComputeRopeInvFreq(model->config.rope));
  return engine;
}

Engine::Engine(std::shared_ptr<const ModelWeights> model, const EngineOptions& options)
    : model_(std::move(model)), options_(options) {}

Engine::~Engine() = default;

std::unique_ptr<Sequence> Engine::NewSequence() const {
  auto seq = std::make_unique<Sequence>();
  for (const auto& r : ranks_) seq->caches_.push_back(r->NewCache());
  return seq;
}

absl::Status Engine::RunOnRanks(const std::function<absl::Status(int)>& fn) {
  // A single local rank (in-process tp=1, or this process's rank of a group) aborts nothing: an
  // argument check fails identically on every rank before any collective, so the group stays in
  // step, and a failed collective has already broken the communicator.
  if (ranks_.size() == 1) return fn(0);
  std::vector<absl::Status> results(ranks_.size());
  std::vector<std::thread> threads;
  auto run = [&](int r) {
    results[r] = fn(r);
    // ResourceExhausted (a full KV block pool) is agreed by every rank before any collective
    // (RankModel::Forward): the group stays usable.
    if (!results[r].ok() && !absl::IsResourceExhausted(results[r])) comms_[r]->Abort();
  };
  for (int r = 1; r < static_cast<int>(ranks_.size()); ++r) threads.emplace_back(run, r);
  run(0);
  for (auto& t : threads) t.join();
  for (const absl::Status& s : results) {
    if (!s.ok() && !absl::IsAborted(s)) return s;
  }
  for (const absl::Status& s : results) DAPQ_RETURN_IF_ERROR(s);
  return absl::OkStatus();
}

absl::Status Engine::ForwardChunk(Sequence& seq, std::span<const int> tokens,
                                  std::span<const int32_t> positions, std::span<float> logits,
                                  bool all_logits, std::span<QueryObserver* const> observers) {
  forwarded_tokens_.fetch_add(static_cast<int64_t>(tokens.size()), std::memory_order_relaxed);
  return RunOnRanks([&](int r) {
    const bool global_rank0 = first_rank_ + r == 0;
    return ranks_[r]->Forward(tokens, positions, seq.caches_[r],
                              global_rank0 ? logits : std::span<float>(), all_logits,
                              observers.empty() ? nullptr : observers[r]);
  });
}

absl::Status Engine::Forward(Sequence& seq, std::span<const int> tokens,
                             std::span<const int32_t> positions, std::vector<float>* logits) {
  return ForwardObserved(seq, tokens, positions, logits, {});
}

absl::Status Engine::ForwardObserved(Sequence& seq, std::span<const int> tokens,
                                     std::span<const int32_t> positions, std::vector<float>* logits,
                                     std::span<QueryObserver* const> observers) {
  if (!observers.empty() && observers.size() != ranks_.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("forward: ", observers.size(), " observers for ", ranks_.size(), " ranks"));
  }
  if (logits != nullptr) logits->assign(config().vocab_size, 0.0f);
  DAPQ_RETURN_IF_ERROR(ForwardChunk(seq, tokens, positions,
                                    logits ? std::span<float>(*logits) : std::span<float>(), false,
                                    observers));
  bool consecutive = tokens.size() == 1;
  for (size_t i = 0; i < positions.size(); ++i) {
    consecutive = consecutive && positions[i] == seq.next_position_ + static_cast<int32_t>(i);
  }
  if (!consecutive) seq.replayable_ = false;
  seq.Record(FeedSegment::Kind::kDecode, tokens);
  for (int32_t p : positions) seq.next_position_ = std::max(seq.next_position_, p + 1);
  return absl::OkStatus();
}

absl::Status Engine::Step(std::span<const StepEntry> batch, std::vector<float>* logits) {
  if (batch.empty()) return absl::InvalidArgumentError("step: empty batch");
  std::vector<std::vector<int32_t>> positions(batch.size());
  for (size_t i = 0; i < batch.size(); ++i) {
    const StepEntry& e = batch[i];
    if (e.seq == nullptr)
      return absl::InvalidArgumentError(absl::StrCat("step: entry ", i, ": no sequence"));
    absl::Status fits = CheckPrefill(*e.seq, e.tokens.size());
    if (!fits.ok()) {
      return absl::Status(fits.code(), absl::StrCat("step: entry ", i, ": ", fits.message()));
    }
    positions[i].resize(e.tokens.size());
    for (size_t t = 0; t < e.tokens.size(); ++t) {
      positions[i][t] = e.seq->next_position_ + static_cast<int32_t>(t);
    }
  }
  if (logits != nullptr) logits->assign(batch.size() * config().vocab_size, 0.0f);
  for (const StepEntry& e : batch) {
    forwarded_tokens_.fetch_add(static_cast<int64_t>(e.tokens.size()), std::memory_order_relaxed);
  }
  DAPQ_RETURN_IF_ERROR(RunOnRanks([&](int r) {
    std::vector<BatchSlice> slices(batch.size());
    for (size_t i = 0; i < batch.size(); ++i) {
      slices[i] = BatchSlice{batch[i].tokens, positions[i], &batch[i].seq->caches_[r]};
    }
    const bool global_rank0 = first_rank_ + r == 0;
    return ranks_[r]->ForwardBatch(
        slices, global_rank0 && logits != nullptr ? std::span<float>(*logits) : std::span<float>());
  }));
  for (const StepEntry& e : batch) {
    e.seq->Record(e.tokens.size() == 1 ? FeedSegment::Kind::kDecode : FeedSegment::Kind::kPrefill,
                  e.tokens);
    e.seq->next_position_ += static_cast<int>(e.tokens.size());
  }
  return absl::OkStatus();
}

absl::Status Engine::CheckPrefill(const Sequence& seq, size_t tokens) const {
  if (tokens == 0) return absl::InvalidArgumentError("prefill: no tokens");
  const long end = static_cast<long>(seq.next_position_) + static_cast<long>(tokens);
  if (end > config().max_seq_len) {
    return absl::OutOfRangeError(absl::StrCat("prefill: ", tokens, " tokens from position ",
                                              seq.next_position_, " exceed the context limit ",
                                              config().max_seq_len));
  }
  return absl::OkStatus();
}

absl::StatusOr<int> Engine::AttachCachedPrefix(Sequence& seq, std::span<const int> prompt,
                                               int keep_last) {
  keep_last = std::max(keep_last, 1);
  if (!options_.prefix_cache || !seq.fresh() || static_cast<long>(prompt.size()) <= keep_last) {
    return 0;
  }
  const std::vector<uint64_t> keys =
      kvstore::PrefixKeys(prompt.first(prompt.size() - keep_last), options_.kv_tokens_per_block);
  if (keys.empty()) return 0;
  std::vector<std::vector<kvstore::BlockId>> found(ranks_.size());
  std::vector<int> hits(ranks_.size(), 0);
  const absl::Status looked_up = RunOnRanks([&](int r) -> absl::Status {
    const int per_entry = config().n_layers * ranks_[r]->shard().kv_heads;
    hits[r] = ranks_[r]->kv_pool().LookupPrefix(keys, per_entry, found[r]);
    if (options_.tp == 1) return absl::OkStatus();
    // Every rank takes the shortest run any rank holds (their pools evolve alike, but a rank's
    // eviction must not desynchronise the group).
    std::vector<int64_t> all(options_.tp, 0);
    all[first_rank_ + r] = hits[r];
    DAPQ_RETURN_IF_ERROR(comms_[r]->AllReduceSum(all.data(), all.size()));
    hits[r] = static_cast<int>(*std::min_element(all.begin(), all.end()));
    return absl::OkStatus();
  });
  for (size_t r = 0; r < ranks_.size(); ++r) {
    const size_t per_entry = static_cast<size_t>(config().n_layers) * ranks_[r]->shard().kv_heads;
    const size_t keep = looked_up.ok() ? hits[r] * per_entry : 0;
    std::span<const kvstore::BlockId> ids(found[r]);
    ranks_[r]->kv_pool().Release(ids.subspan(keep));
    if (keep > 0) seq.caches_[r].AttachPrefix(ids.first(keep));
  }
  DAPQ_RETURN_IF_ERROR(looked_up);
  const int reused = hits[0] * options_.kv_tokens_per_block;
  seq.next_position_ = reused;
  seq.reused_tokens_ = reused;
  prefix_reused_tokens_.fetch_add(reused, std::memory_order_relaxed);
  return reused;
}

absl::StatusOr<int> Engine::ReusePrefix(Sequence& seq, std::span<const int> prompt, int keep_last) {
  DAPQ_ASSIGN_OR_RETURN(const int reused, AttachCachedPrefix(seq, prompt, keep_last));
  if (reused > 0) seq.Record(FeedSegment::Kind::kPrefill, prompt.first(reused));
  return reused;
}

void Engine::PublishPrefixTokens(const Sequence& seq, std::span<const int> tokens) {
  const int tpb = options_.kv_tokens_per_block;
  if (!options_.prefix_cache || seq.compressed_ || !seq.replayable_) return;
  const int blocks = static_cast<int>(tokens.size()) / tpb;
  if (blocks == 0) return;
  const std::vector<uint64_t> keys = kvstore::PrefixKeys(tokens.first(blocks * tpb), tpb);
  for (size_t r = 0; r < ranks_.size(); ++r) {
    const KvCache& cache = seq.caches_[r];
    // Every slab holds the tokens at positions 0, 1, ... (uncompressed, consecutive feeds).
    if (cache.max_length() != static_cast<int>(tokens.size()) ||
        cache.total_slots() !=
            static_cast<long>(tokens.size()) * cache.n_layers() * cache.kv_heads()) {
      return;
    }
    ranks_[r]->kv_pool().InsertPrefix(keys, cache.PrefixBlocks(blocks),
                                      cache.n_layers() * cache.kv_heads());
  }
}

void Engine::PublishPrefix(const Sequence& seq) { PublishPrefixTokens(seq, seq.tokens_); }

void Engine::ClearPrefixCache() {
  for (auto& rank : ranks_) rank->kv_pool().ClearPrefixes();
}

absl::Status Engine::PrefillWithPrefixCache(Sequence& seq, std::span<const int> tokens,
                                            std::vector<float>* logits,
                                            std::span<QueryObserver* const> observers,
                                            int keep_last) {
  if (!seq.fresh()) return PrefillObserved(seq, tokens, logits, observers);
  DAPQ_RETURN_IF_ERROR(CheckPrefill(seq, tokens.size()));
  int reused = 0;
  if (keep_last > 0) {
    DAPQ_ASSIGN_OR_RETURN(reused, AttachCachedPrefix(seq, tokens, keep_last));
  }
  if (absl::Status s = PrefillObserved(seq, tokens.subspan(reused), logits, observers); !s.ok()) {
    for (KvCache& cache : seq.caches_) cache.Clear();  // fresh again: no half-attached prefix
    seq.next_position_ = 0;
    seq.reused_tokens_ = 0;
    return s;
  }
  PublishPrefixTokens(seq, tokens);  // before any compression rewrites (copies) blocks
  return absl::OkStatus();
}

absl::Status Engine::Prefill(Sequence& seq, std::span<const int> tokens,
                             std::vector<float>* logits) {
  DAPQ_RETURN_IF_ERROR(PrefillWithPrefixCache(seq, tokens, logits, {}, /*keep_last=*/1));
  seq.Record(FeedSegment::Kind::kPrefill, tokens);
  return absl::OkStatus();
}

absl::Status Engine::PrefillObserved(Sequence& seq, std::span<const int> tokens,
                                     std::vector<float>* logits,
                                     std::span<QueryObserver* const> observers) {
  DAPQ_RETURN_IF_ERROR(CheckPrefill(seq, tokens.size()));
  std::vector<int32_t> positions;
  for (size_t begin = 0; begin < tokens.size(); begin += options_.prefill_chunk) {
    const size_t n = std::min(tokens.size() - begin, static_cast<size_t>(options_.prefill_chunk));
    positions.resize(n);
    for (size_t i = 0; i < n; ++i) positions[i] = seq.next_position_ + static_cast<int32_t>(i);
    const bool last = begin + n == tokens.size();
    if (last && logits != nullptr) logits->assign(config().vocab_size, 0.0f);
    DAPQ_RETURN_IF_ERROR(ForwardChunk(
        seq, tokens.subspan(begin, n), positions,
        last && logits ? std::span<float>(*logits) : std::span<float>(), false, observers));
    seq.next_position_ = positions.back() + 1;
  }
  return absl::OkStatus();
}

std::vector<size_t> StreamingChunkEnds(size_t total, size_t chunk, size_t min_last) {
  std::vector<size_t> ends;
  for (size_t end = chunk; end < total; end += chunk) ends.push_back(end);
  ends.push_back(total);
  const size_t n = ends.size();
  const size_t last = n >= 2 ? ends[n - 1] - ends[n - 2] : ends.back();
  if (n >= 2 && last < min_last) {
    const size_t borrow = min_last - last;
    const size_t before = ends[n - 2] - (n >= 3 ? ends[n - 3] : 0);
    if (before >= borrow + min_last) {
      ends[n - 2] -= borrow;  // the last chunk takes the queries it scores with from the one before
    } else {
      ends.erase(ends.end() - 2);  // too short to lend them: the two become one
    }
  }
  return ends;
}

absl::StatusOr<compress::CompressionStats> Engine::PrefillCompressed(
    Sequence& seq, std::span<const int> tokens, const compress::CompressionConfig& config,
    std::vector<float>* logits) {
  if (tokens.empty()) return absl::InvalidArgumentError("prefill: no tokens");
  // Positions, not slots, size the budget: identical on every rank even when an earlier
  // per-head compression left this rank's heads shorter than another's. For a fresh sequence
  // they are the prompt's slots.
  const int n = seq.next_position_ + static_cast<int>(tokens.size());
  DAPQ_ASSIGN_OR_RETURN(const compress::CompressionConfig c, config.Resolve(n));
  compress::CompressionStats stats;
  stats.config = c.DebugString();
  const ModelConfig& m = this->config();
  stats.prompt_slots = n;
  const std::vector<int> budgets = compress::LayerBudgets(c, n, m.n_layers);
  const int min_budget = *std::min_element(budgets.begin(), budgets.end());
  const bool fits = min_budget >= n;  // for a compressed cache: its slots fit even more so
  if (c.method == compress::Method::kFull || (fits && c.skip_within_budget)) {
    DAPQ_RETURN_IF_ERROR(PrefillWithPrefixCache(seq, tokens, logits, {}, /*keep_last=*/1));
    seq.Record(FeedSegment::Kind::kCompressedPrefill, tokens);
    stats.slots_before = stats.slots_after = static_cast<long>(n) * m.n_layers * m.n_kv_heads;
    return stats;
  }
  DAPQ_ASSIGN_OR_RETURN(std::unique_ptr<compress::Scorer> scorer, compress::MakeScorer(c));
  const compress::ScorerNeeds needs = scorer->Needs();
  if (needs.pseudo_tokens > 0 && static_cast<long>(seq.next_position_) +
                                         static_cast<long>(tokens.size()) + needs.pseudo_tokens >
                                     m.max_seq_len) {
    return absl::OutOfRangeError(
        absl::StrCat("compression: dapq forward mode needs ", needs.pseudo_tokens,
                     " positions after the prompt, beyond the context limit ", m.max_seq_len));
  }
  const size_t chunk =
      c.streaming_chunk > 0 ? static_cast<size_t>(c.streaming_chunk) : tokens.size();
  if (chunk < tokens.size() && chunk < static_cast<size_t>(needs.window_rows)) {
    return absl::InvalidArgumentError(
        absl::StrCat("compression: streaming_chunk=", c.streaming_chunk, " is shorter than the ",
                     needs.window_rows, " prompt queries ", compress::MethodName(c.method),
                     " scores with; use a chunk of at least that many tokens"));
  }
  std::vector<std::unique_ptr<compress::QueryCollector>> owned;
  std::vector<compress::QueryCollector*> collectors;
  std::vector<QueryObserver*> observers;
  for (const auto& rank : ranks_) {
    const RankShard& s = rank->shard();
    owned.push_back(std::make_unique<compress::QueryCollector>(needs, m.n_layers, s.heads,
                                                               s.kv_heads, m.head_dim));
    collectors.push_back(owned.back().get());
    observers.push_back(owned.back().get());
  }
  // Prefix reuse keeps what the scorer reads: the last window_rows prompt queries and the cache.
  // Scorers that read every prompt query (H2O's accumulated attention, ExpectedAttention's
  // statistics) prefill the whole prompt.
  const bool reusable = !needs.accumulated_attention && !needs.query_statistics;
  const int keep_last = reusable ? std::max(1, needs.window_rows) : 0;
  // Streaming (COMPRESSION.md): chunk by chunk, each followed by a compression back to the
  // budget once the prompt seen so far exceeds it, so the cache never holds more than budget +
  // chunk slots per (layer, KV head). H2O's accumulated scores ride along with the kept slots.
  std::vector<std::vector<std::vector<float>>> carried(ranks_.size());
  long evicted = 0;
  const std::vector<size_t> ends =
      StreamingChunkEnds(tokens.size(), chunk, static_cast<size_t>(needs.window_rows));
  for (size_t i = 0, begin = 0; i < ends.size(); begin = ends[i++]) {
    const std::span<const int> piece = tokens.subspan(begin, ends[i] - begin);
    const bool last = i + 1 == ends.size();
    for (size_t r = 0; r < collectors.size(); ++r) {
      collectors[r]->StartChunk();
      const int kv_heads = ranks_[r]->shard().kv_heads;
      for (size_t slab = 0; slab < carried[r].size(); ++slab) {
        collectors[r]->SeedAttention(static_cast<int>(slab) / kv_heads,
                                     static_cast<int>(slab) % kv_heads, carried[r][slab]);
      }
    }
    DAPQ_RETURN_IF_ERROR(
        PrefillWithPrefixCache(seq, piece, last ? logits : nullptr, observers, keep_last));
    if (!last && seq.next_position_ <= min_budget) continue;  // nothing to evict yet
    const auto t0 = std::chrono::steady_clock::now();
    DAPQ_ASSIGN_OR_RETURN(const long dropped, CompressCached(seq, c, *scorer, collectors, budgets,
                                                             piece.back(), &carried));
    stats.seconds += SecondsSince(t0);
    evicted += dropped;
    ++stats.compressions;
  }
  stats.slots_after = 0;
  for (const KvCache& cache : seq.caches_) stats.slots_after += cache.total_slots();
  stats.slots_before = stats.slots_after + evicted;
  if (multi_process()) {
    // Over the whole group, so that every rank reports the same stats.
    int64_t slots[2] = {stats.slots_before, stats.slots_after};
    DAPQ_RETURN_IF_ERROR(comms_[0]->AllReduceSum(slots, 2));
    stats.slots_before = slots[0];
    stats.slots_after = slots[1];
  }
  stats.compressed = true;
  stats.layer_budgets = budgets;
  seq.compressed_ = true;
  seq.Record(FeedSegment::Kind::kCompressedPrefill, tokens);
  return stats;
}

absl::StatusOr<long> Engine::CompressCached(Sequence& seq, const compress::CompressionConfig& c,
                                            const compress::Scorer& scorer,
                                            std::span<compress::QueryCollector* const> collectors,
                                            const std::vector<int>& budgets, int last_token,
                                            std::vector<std::vector<std::vector<float>>>* carried) {
  const compress::ScorerNeeds needs = scorer.Needs();
  if (needs.pseudo_tokens > 0) {
    // DapQ forward mode: placeholder tokens (the last token fed, repeated) at the positions that
    // follow it, run through the model and dropped again.
    std::vector<int> placeholder(needs.pseudo_tokens, last_token);
    std::vector<int32_t> positions(needs.pseudo_tokens);
    for (int i = 0; i < needs.pseudo_tokens; ++i) positions[i] = seq.next_position_ + i;
    const std::vector<QueryObserver*> observers(collectors.begin(), collectors.end());
    for (compress::QueryCollector* col : collectors) col->set_capturing_pseudo(true);
    absl::Status forwarded = ForwardChunk(seq, placeholder, positions, {}, false, observers);
    for (compress::QueryCollector* col : collectors) col->set_capturing_pseudo(false);
    DAPQ_RETURN_IF_ERROR(forwarded);
    for (auto& cache : seq.caches_) DAPQ_RETURN_IF_ERROR(cache.DropLast(needs.pseudo_tokens));
  }
  long before = 0, after = 0;
  for (const KvCache& cache : seq.caches_) before += cache.total_slots();
  DAPQ_RETURN_IF_ERROR(RunOnRanks([&](int r) {
    compress::RankContext ctx;
    ctx.model = &config();
    ctx.shard = ranks_[r]->shard();
    ctx.inv_freq = inv_freq_.data();
    ctx.comm = comms_[r].get();
    ctx.next_position = seq.next_position_;
    return compress::CompressRank(c, scorer, *collectors[r], ctx, budgets, seq.caches_[r],
                                  needs.accumulated_attention ? &(*carried)[r] : nullptr);
  }));
  for (const KvCache& cache : seq.caches_) after += cache.total_slots();
  return before - after;
}

absl::Status Engine::PrefillAllLogits(Sequence& seq, std::span<const int> tokens,
                                      std::vector<float>* logits) {
  DAPQ_RETURN_IF_ERROR(CheckPrefill(seq, tokens.size()));
  std::vector<int32_t> positions(tokens.size());
  for (size_t i = 0; i < tokens.size(); ++i)
    positions[i] = seq.next_position_ + static_cast<int32_t>(i);
  logits->assign(tokens.size() * config().vocab_size, 0.0f);
  DAPQ_RETURN_IF_ERROR(ForwardChunk(seq, tokens, positions, *logits, true));
  seq.next_position_ = positions.back() + 1;
  seq.Record(FeedSegment::Kind::kPrefillAllLogits, tokens);
  return absl::OkStatus();
}

absl::StatusOr<GenerateResult> Engine::Generate(std::span<const int> prompt,
                                                const GenerateOptions& options,
                                                const std::function<bool(int)>& on_token) {
  auto seq = NewSequence();
  return Continue(*seq, prompt, options, on_token);
}

absl::StatusOr<GenerateResult> Engine::Continue(Sequence& seq, std::span<const int> prompt,
                                                const GenerateOptions& options,
                                                const std::function<bool(int)>& on_token) {
  DAPQ_RETURN_IF_ERROR(options.Validate());
  if (prompt.empty()) return absl::InvalidArgumentError("generate: empty prompt");
  const long total = static_cast<long>(seq.next_position_) + static_cast<long>(prompt.size()) +
                     options.max_new_tokens;
  if (total > config().max_seq_len) {
    return absl::OutOfRangeError(absl::StrCat(
        "generate: prompt of ", prompt.size(), " tokens + max_new_tokens=", options.max_new_tokens,
        seq.next_position_ > 0 ? absl::StrCat(" after ", seq.next_position_, " earlier positions")
                               : "",
        " exceeds the context limit ", config().max_seq_len));
  }
  GenerateResult result;
  result.prompt_tokens = static_cast<int>(prompt.size());
  if (options.max_new_tokens == 0) return result;
  Sampler sampler(options.sampling);
  std::vector<float> logits;
  const auto t0 = std::chrono::steady_clock::now();
  if (seq.tokens_.empty() ||
      (options.compression.every_turn && options.compression.method != compress::Method::kFull)) {
    DAPQ_ASSIGN_OR_RETURN(result.compression,
                          PrefillCompressed(seq, prompt, options.compression, &logits));
    result.reused_prompt_tokens = seq.reused_tokens_;
  } else {
    DAPQ_RETURN_IF_ERROR(Prefill(seq, prompt, &logits));
  }
  // Only the driver has logits; the other ranks of a group take its token in ShareStep.
  int token = is_driver() ? sampler.Sample(logits) : 0;
  result.prefill_seconds = SecondsSince(t0);
  const auto t1 = std::chrono::steady_clock::now();
  const auto& stops = config().stop_token_ids;
  while (true) {
    bool keep_going = is_driver() && on_token ? on_token(token) : true;
    if (multi_process()) DAPQ_RETURN_IF_ERROR(ShareStep(token, keep_going));
    result.tokens.push_back(token);
    if (options.stop_at_stop_tokens &&
        std::find(stops.begin(), stops.end(), token) != stops.end()) {
      result.stopped_at_stop_token = true;
      break;
    }
    if (!keep_going || static_cast<int>(result.tokens.size()) >= options.max_new_tokens) break;
    const int32_t pos = seq.next_position();
    DAPQ_RETURN_IF_ERROR(
        Forward(seq, std::span<const int>(&token, 1), std::span<const int32_t>(&pos, 1), &logits));
    if (is_driver()) token = sampler.Sample(logits);
  }
  result.decode_seconds = SecondsSince(t1);
  result.cached_tokens = seq.cached_tokens();
  result.kv_used_bytes = seq.kv_used_bytes();
  result.kv_allocated_bytes = seq.kv_allocated_bytes();
  return result;
}

absl::Status Engine::ShareStep(int& token, bool& keep_going) {
  // An exact int64 sum in which only the driver contributes: a broadcast in effect, but every
  // rank also receives from its peers, so a rank that died is noticed here at once (a Gloo
  // broadcast's root only sends, and a send to a dead peer can wait for the whole timeout).
  int64_t message[2] = {0, 0};
  if (is_driver()) {
    message[0] = token;
    message[1] = keep_going ? 1 : 0;
  }
  DAPQ_RETURN_IF_ERROR(comms_[0]->AllReduceSum(message, 2));
  token = static_cast<int>(message[0]);
  keep_going = message[1] != 0;
  return absl::OkStatus();
}

absl::Status Engine::Replay(Sequence& seq, std::span<const int> tokens,
                            std::span<const FeedSegment> segments,
                            const compress::CompressionConfig& compression) {
  if (!seq.tokens_.empty())
    return absl::FailedPreconditionError("replay: the sequence is not fresh");
  size_t at = 0;
  std::vector<float> logits;
  for (const FeedSegment& s : segments) {
    if (s.length < 0 || at + s.length > tokens.size()) {
      return absl::InvalidArgumentError("replay: segments do not match the tokens");
    }
    const std::span<const int> part = tokens.subspan(at, s.length);
    switch (s.kind) {
      case FeedSegment::Kind::kPrefill:
        DAPQ_RETURN_IF_ERROR(Prefill(seq, part, nullptr));
        break;
      case FeedSegment::Kind::kPrefillAllLogits:
        DAPQ_RETURN_IF_ERROR(PrefillAllLogits(seq, part, &logits));
        break;
      case FeedSegment::Kind::kCompressedPrefill:
        DAPQ_RETURN_IF_ERROR(PrefillCompressed(seq, part, compression, nullptr).status());
        break;
      case FeedSegment::Kind::kDecode:
        for (int t : part) {
          const int32_t pos = seq.next_position();
          DAPQ_RETURN_IF_ERROR(
              Forward(seq, std::span<const int>(&t, 1), std::span(&pos, 1), nullptr));
        }
        break;
    }
    at += s.length;
  }
  if (at != tokens.size()) return absl::InvalidArgumentError("replay: tokens left over");
  return absl::OkStatus();
}

}  // namespace dapq::worker
