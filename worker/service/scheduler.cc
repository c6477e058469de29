// File: worker/service/scheduler.cc
// Scheduler: admission against the KV pool, step planning (decode first, prompt chunks after),
// sampling and stop conditions per request, preemption by swap or recompute.
#include "worker/service/scheduler.h"

#include <algorithm>
#include <limits>
#include <span>

#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "kvstore/block_pool.h"
#include "worker/compress/allocator.h"
#include "worker/service/request_options.h"

namespace dapq::worker::service {
namespace {

double SecondsSince(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

}  // namespace

absl::Status SchedulerOptions::Validate() const {
  if (max_step_tokens < 1 || max_running < 1) {
    return absl::InvalidArgumentError(absl::StrCat("scheduler: max_step_tokens=", max_step_tokens,
                                                   " and max_running=", max_running,
                                                   " must be >= 1"));
  }
  if (!(free_block_watermark >= 0.0 && free_block_watermark < 1.0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "scheduler: free_block_watermark=", free_block_watermark, " must be in [0, 1)"));
  }
  return absl::OkStatus();
}

Scheduler::Scheduler(Engine* engine, const SchedulerOptions& options, BatchOps* ops)
    : engine_(engine),
      options_(options),
      local_ops_(ops == nullptr ? std::make_unique<LocalBatchOps>(engine) : nullptr),
      ops_(ops != nullptr ? ops : local_ops_.get()) {}

void Scheduler::ReleaseSequence(Entry& e) {
  if (!e.has_sequence) return;
  // A failed release (a rank gone) shows in the group's next operation.
  ops_->Release(e.request.id).IgnoreError();
  e.has_sequence = false;
}

long Scheduler::BlocksFor(const Entry& e) const {
  const ModelConfig& c = engine_->config();
  const long tokens_per_block = engine_->options().kv_tokens_per_block;
  // Its prompt and every token it may generate (also when preempted: a recomputed sequence feeds
  // the tokens it generated again, a swapped one brings them back).
  long length = static_cast<long>(e.request.prompt.size()) + e.request.options.max_new_tokens;
  if (e.request.continuing) {  // after the slots its earlier turns hold
    const Sequence* seq = ops_->Find(e.request.id);
    if (seq != nullptr && e.result.tokens.empty() && e.fed == 0) length += seq->cached_tokens();
  }
  const long kv_heads = c.n_kv_heads / engine_->options().tp;
  const long whole = BlocksOfTokens(length);
  const long streamed = StreamedSlotsPerHead(e);
  if (streamed <= 0 || streamed >= length) return whole;
  // Streamed: each layer's heads hold budget + chunk slots between them on average (adaptive
  // budgets move slots between heads; each head rounds up to a block at most once).
  const long per_layer = (streamed * kv_heads + tokens_per_block - 1) / tokens_per_block + kv_heads;
  return std::min(whole, per_layer * c.n_layers);
}

long Scheduler::BlocksOfTokens(long tokens) const {
  const ModelConfig& c = engine_->config();
  const long tokens_per_block = engine_->options().kv_tokens_per_block;
  const long kv_heads = c.n_kv_heads / engine_->options().tp;
  return (tokens + tokens_per_block - 1) / tokens_per_block * c.n_layers * kv_heads;
}

long Scheduler::AdmissionBlocks(const Entry& e) const {
  const long whole = BlocksFor(e);
  if (options_.admission == Admission::kReserve || e.request.continuing) return whole;
  // What it holds once admitted: its feed (a swapped sequence also the tokens it generated
  // before its last one), and one slot more for the token its next step appends.
  long held = static_cast<long>(e.feed.size()) + 1;
  if (e.swapped && !e.result.tokens.empty()) {
    held += static_cast<long>(e.result.tokens.size()) - 1;
  }
  // Plus the blocks the running sequences' next decode tokens take, so that admitting it never
  // fails the next step: otherwise a readmitted sequence could take the blocks the others grow
  // into, be preempted again, and so on forever.
  long headroom = 0;
  for (const auto& r : running_) {
    const Sequence* seq = r->has_sequence ? ops_->Find(r->request.id) : nullptr;
    if (seq != nullptr && r->fed >= r->feed.size()) headroom += seq->cache(0).BlocksToReserve(1);
  }
  return std::min(whole, BlocksOfTokens(held)) + headroom;
}

long Scheduler::StreamedSlotsPerHead(const Entry& e) const {
  const compress::CompressionConfig& config = e.request.options.compression;
  if (config.method == compress::Method::kFull || config.streaming_chunk <= 0 ||
      e.request.continuing) {
    return 0;
  }
  const int n = static_cast<int>(e.feed.size());
  absl::StatusOr<compress::CompressionConfig> resolved = config.Resolve(n);
  if (!resolved.ok() || n == 0) return 0;
  const std::vector<int> budgets = compress::LayerBudgets(*resolved, n, engine_->config().n_layers);
  const long budget = *std::max_element(budgets.begin(), budgets.end());
  // The budget, one chunk (and DapQ forward mode's placeholders) while the prompt streams, then
  // the tokens still to generate.
  const long pseudo = resolved->mode == compress::DapqMode::kForward ? resolved->query_window : 0;
  const long remaining =
      e.request.options.max_new_tokens - static_cast<long>(e.result.tokens.size());
  return budget + std::max<long>(resolved->streaming_chunk + pseudo, remaining + 1);
}

long Scheduler::UsableBlocks() const {
  const long cap = engine_->kv_pool(0).max_blocks();
  return cap - static_cast<long>(options_.free_block_watermark * static_cast<double>(cap));
}

long Scheduler::FreeBlocks() const {
  const kvstore::BlockPool& pool = engine_->kv_pool(0);
  if (pool.max_blocks() == 0) return std::numeric_limits<long>::max();
  // What the pool really has free (sequences outside the scheduler, such as sessions, hold
  // blocks too), less what the running sequences reserved and have not taken yet.
  long outstanding = 0;
  for (const auto& e : running_) {
    const Sequence* seq = e->has_sequence ? ops_->Find(e->request.id) : nullptr;
    const long held =
        seq != nullptr ? static_cast<long>(seq->cache(0).bytes() / pool.block_bytes()) : 0;
    outstanding += std::max(0L, e->reserved_blocks - held);
  }
  return UsableBlocks() - pool.blocks_in_use() - outstanding;
}

long Scheduler::AdmissionShortfall() const {
  if (waiting_.empty() || static_cast<int>(running_.size()) >= options_.max_running) return 0;
  const long free = FreeBlocks();
  if (free == std::numeric_limits<long>::max()) return 0;  // uncapped
  return std::max(0L, AdmissionBlocks(*waiting_.front()) - free);
}

absl::Status Scheduler::Add(ScheduledRequest request) {
  DAPQ_RETURN_IF_ERROR(options_.Validate());
  DAPQ_RETURN_IF_ERROR(request.options.Validate());
  if (request.prompt.empty()) return absl::InvalidArgumentError("scheduler: empty prompt");
  DAPQ_RETURN_IF_ERROR(CheckContext(request.prompt.size(), request.options.max_new_tokens,
                                    /*next_position=*/0, engine_->config().max_seq_len));
  if (request.start == std::chrono::steady_clock::time_point{}) {
    request.start = std::chrono::steady_clock::now();
  }
  auto e = std::make_unique<Entry>();
  e->has_sequence = request.continuing;
  e->feed = request.prompt;
  e->result.prompt_tokens = static_cast<int>(request.prompt.size());
  const int tpb = engine_->options().kv_tokens_per_block;
  const size_t share_blocks = (kSharedPrefixTokens + tpb - 1) / tpb;
  if (engine_->options().prefix_cache && !request.continuing &&
      request.prompt.size() > share_blocks * tpb) {
    e->share_key = kvstore::PrefixKeys(
        std::span<const int>(request.prompt).first(share_blocks * tpb), tpb)[share_blocks - 1];
  }
  e->request = std::move(request);
  const long cap = engine_->kv_pool(0).max_blocks();
  if (const long need = BlocksFor(*e); cap > 0 && need > UsableBlocks()) {
    const long streamed = StreamedSlotsPerHead(*e);
    return absl::ResourceExhaustedError(absl::StrCat(
        "kv pool: the request needs ", need, " blocks per rank (prompt ", e->feed.size(),
        " + max_new_tokens ", e->request.options.max_new_tokens, " tokens",
        streamed > 0 ? absl::StrCat(", streamed: ", streamed, " slots per KV head") : "",
        "), more than the pool's ", UsableBlocks(), " usable blocks (kv_pool_blocks=", cap, ")"));
  }
  waiting_.push_back(std::move(e));
  return absl::OkStatus();
}

FinishedRequest Scheduler::Finish(Entry& e, absl::Status status) {
  FinishedRequest f;
  f.id = e.request.id;
  f.preemptions = e.preemptions;
  f.start = e.request.start;
  f.cancelled = e.cancelled;
  if (const Sequence* seq = e.has_sequence ? ops_->Find(e.request.id) : nullptr) {
    e.result.cached_tokens = seq->cached_tokens();
    e.result.kv_used_bytes = seq->kv_used_bytes();
    e.result.kv_allocated_bytes = seq->kv_allocated_bytes();
  }
  if (!e.result.tokens.empty()) {
    e.result.decode_seconds = SecondsSince(e.request.start) - e.result.prefill_seconds;
  }
  f.result = status.ok() ? absl::StatusOr<GenerateResult>(e.result)
                         : absl::StatusOr<GenerateResult>(status);
  e.reserved_blocks = 0;
  if (status.ok() && e.request.keep_sequence && e.has_sequence) {
    f.sequence_kept = true;  // the caller takes it from the ops
    e.has_sequence = false;
  } else {
    ReleaseSequence(e);  // its blocks go back to the pool
  }
  return f;
}

bool Scheduler::Accept(Entry& e, int token) {
  if (e.result.tokens.empty()) e.result.prefill_seconds = SecondsSince(e.request.start);
  const bool keep_going = e.request.on_token ? e.request.on_token(token) : true;
  e.result.tokens.push_back(token);
  const auto& stops = engine_->config().stop_token_ids;
  if (e.request.options.stop_at_stop_tokens &&
      std::find(stops.begin(), stops.end(), token) != stops.end()) {
    e.result.stopped_at_stop_token = true;
    return true;
  }
  if (!keep_going) {
    e.cancelled = true;
    return true;
  }
  if (static_cast<int>(e.result.tokens.size()) >= e.request.options.max_new_tokens) return true;
  e.next = token;
  return false;
}

bool Scheduler::WaitsForSharedPrefix(const Entry& e) const {
  if (e.share_key == 0 || e.swapped || e.preemptions > 0) return false;
  return std::any_of(running_.begin(), running_.end(), [&](const std::unique_ptr<Entry>& r) {
    return r->share_key == e.share_key && !r->published;
  });
}

void Scheduler::Admit(std::vector<FinishedRequest>& finished) {
  while (!waiting_.empty() && static_cast<int>(running_.size()) < options_.max_running) {
    Entry& e = *waiting_.front();
    const long need = AdmissionBlocks(e);
    if (need > FreeBlocks()) break;      // first come, first served: nothing overtakes it
    if (WaitsForSharedPrefix(e)) break;  // its prefix is being computed: take it next step
    std::unique_ptr<Entry> owned = std::move(waiting_.front());
    waiting_.pop_front();
    if (e.request.options.max_new_tokens == 0) {
      finished.push_back(Finish(e, absl::OkStatus()));
      continue;
    }
    e.reserved_blocks = need;
    if (e.sampler == nullptr) e.sampler = std::make_unique<Sampler>(e.request.options.sampling);
    if (e.swapped) {
      const absl::Status in = ops_->SwapIn(e.request.id, e.request.options.compression);
      if (absl::IsResourceExhausted(in)) {  // the pool is fuller than the reservations say
        e.reserved_blocks = 0;
        waiting_.push_front(std::move(owned));
        break;
      }
      e.swapped = false;
      if (in.ok()) {
        e.has_sequence = true;
        running_.push_back(std::move(owned));
        continue;
      }
      // The saved KV is lost (a block failed verification): recompute instead, from a sequence
      // every rank starts afresh (a rank whose own swap-in failed differently drops what it has).
      ops_->Release(e.request.id).IgnoreError();
      PrepareRecompute(e);
    }
    e.fed = 0;
    const compress::CompressionConfig& compression = e.request.options.compression;
    const bool compressed = compression.method != compress::Method::kFull;
    if (e.request.continuing && !(compressed && compression.every_turn)) {
      // A session's next turn: its prompt is fed in the batch after the earlier turns.
    } else if (compressed) {
      // Scoring needs every query of this prompt: its prefill runs alone, then it decodes in the
      // batch (a preempted request feeds its earlier tokens in the batch first).
      std::vector<float> logits;
      absl::StatusOr<compress::CompressionStats> stats = ops_->PrefillCompressed(
          e.request.id, e.request.prompt, e.request.options.compression, &logits);
      if (absl::IsResourceExhausted(stats.status()) && !e.request.continuing) {
        // The pool is fuller than the reservations say (sequences outside the scheduler): wait.
        // (A session's turn compressed again fails instead: its sequence was fed in part.)
        e.reserved_blocks = 0;
        waiting_.push_front(std::move(owned));
        break;
      }
      e.has_sequence = stats.ok();
      if (!stats.ok()) {
        finished.push_back(Finish(e, stats.status()));
        continue;
      }
      e.result.compression = *stats;
      e.published = true;  // the engine publishes its blocks before compressing
      if (e.preemptions == 0) {
        if (const Sequence* seq = ops_->Find(e.request.id)) {
          e.result.reused_prompt_tokens = seq->reused_tokens();
        }
      }
      e.fed = e.request.prompt.size();
      if (e.fed == e.feed.size()) {
        if (e.result.tokens.empty()) {
          if (Accept(e, e.sampler->Sample(logits))) {
            finished.push_back(Finish(e, absl::OkStatus()));
            continue;
          }
        } else {
          e.next = e.result.tokens.back();
        }
      }
    } else {
      // The prompt (or, recomputing, everything fed so far) starts from the longest cached prefix.
      absl::StatusOr<int> reused = ops_->ReusePrefix(e.request.id, e.feed);
      e.has_sequence = reused.ok();
      if (!reused.ok()) {
        finished.push_back(Finish(e, reused.status()));
        continue;
      }
      e.fed = static_cast<size_t>(*reused);
      if (e.preemptions == 0) e.result.reused_prompt_tokens = *reused;
    }
    running_.push_back(std::move(owned));
  }
}

void Scheduler::PreemptNewest(std::vector<FinishedRequest>& finished) {
  // A session's continuing turn is never preempted (recomputing it would need its whole
  // history): the newest other sequence goes; when there is none, the newest turn fails.
  auto newest = std::find_if(running_.rbegin(), running_.rend(),
                             [](const auto& e) { return !e->request.continuing; });
  if (newest == running_.rend()) {
    Entry& e = *running_.back();
    finished.push_back(
        Finish(e, absl::ResourceExhaustedError(absl::StrCat(
                      "request ", e.request.id,
                      ": the KV pool ran out and only continuing session turns hold it"))));
    running_.pop_back();
    return;
  }
  std::unique_ptr<Entry> victim = std::move(*newest);
  running_.erase(std::next(newest).base());
  ++victim->preemptions;
  ++preemptions_;
  if (options_.preemption == Preemption::kSwap && victim->has_sequence &&
      ops_->SwapOut(victim->request.id).ok()) {
    // Its KV waits in the store; it resumes exactly where it stopped.
    victim->has_sequence = false;
    victim->swapped = true;
    victim->reserved_blocks = 0;
    ++swaps_;
    waiting_.push_front(std::move(victim));
    return;
  }
  victim->reserved_blocks = 0;
  ReleaseSequence(*victim);  // its blocks go back to the pool
  PrepareRecompute(*victim);
  waiting_.push_front(std::move(victim));
}

void Scheduler::PrepareRecompute(Entry& e) {
  e.feed = e.request.prompt;
  if (e.result.tokens.size() > 1) {
    e.feed.insert(e.feed.end(), e.result.tokens.begin(), e.result.tokens.end() - 1);
  }
  e.fed = 0;
  e.next = -1;
}

std::vector<FinishedRequest> Scheduler::RunStep() {
  std::vector<FinishedRequest> finished;
  Admit(finished);
  // Deadlines.
  const auto now = std::chrono::steady_clock::now();
  for (auto it = running_.begin(); it != running_.end();) {
    Entry& e = **it;
    if (e.request.deadline.has_value() && now >= *e.request.deadline) {
      finished.push_back(Finish(e, absl::DeadlineExceededError(absl::StrCat(
                                       "request ", e.request.id, ": deadline passed after ",
                                       e.result.tokens.size(), " tokens"))));
      it = running_.erase(it);
    } else {
      ++it;
    }
  }
  // The plan: every decoding sequence's token first, then prompt chunks in the remaining budget.
  std::vector<uint64_t> ids;
  std::vector<std::vector<int>> chunks;
  std::vector<Entry*> members;
  int budget = options_.max_step_tokens;
  for (auto& owned : running_) {
    Entry& e = *owned;
    if (e.fed < e.feed.size() || budget == 0) continue;
    ids.push_back(e.request.id);
    chunks.push_back({e.next});
    members.push_back(&e);
    --budget;
  }
  for (auto& owned : running_) {
    Entry& e = *owned;
    if (e.fed >= e.feed.size() || budget == 0) continue;
    const size_t n = std::min(e.feed.size() - e.fed, static_cast<size_t>(budget));
    ids.push_back(e.request.id);
    chunks.emplace_back(e.feed.begin() + e.fed, e.feed.begin() + e.fed + n);
    members.push_back(&e);
    budget -= static_cast<int>(n);
  }
  last_step_sequences_ = static_cast<int>(members.size());
  last_step_tokens_ = options_.max_step_tokens - budget;
  if (members.empty()) return finished;

  std::vector<float> logits;
  const absl::Status stepped = ops_->Step(ids, chunks, &logits);
  for (Entry* e : members) e->has_sequence = true;
  if (absl::IsResourceExhausted(stepped)) {
    PreemptNewest(finished);
    return finished;
  }
  if (!stepped.ok()) {
    for (auto& owned : running_) finished.push_back(Finish(*owned, stepped));
    running_.clear();
    return finished;
  }
  const size_t vocab = static_cast<size_t>(engine_->config().vocab_size);
  std::vector<Entry*> done;
  for (size_t b = 0; b < members.size(); ++b) {
    Entry& e = *members[b];
    const bool was_decode = e.fed >= e.feed.size();
    if (!was_decode) {
      e.fed += chunks[b].size();
      if (e.fed < e.feed.size()) continue;  // mid-prompt: nothing to sample yet
      // Fed in full: its blocks serve later prompts with the same start.
      e.published = true;
      if (absl::Status s = ops_->PublishPrefix(e.request.id); !s.ok()) {
        DAPQ_LOG(WARNING) << "request " << e.request.id << ": publishing its prefix failed: " << s;
      }
      if (!e.result.tokens.empty()) {  // a preempted sequence caught up
        e.next = e.result.tokens.back();
        continue;
      }
    }
    // Each row is sampled once; the sampler may overwrite it in place.
    if (Accept(e, e.sampler->Sample(std::span<float>(logits).subspan(b * vocab, vocab)))) {
      done.push_back(&e);
    }
  }
  for (Entry* e : done) {
    finished.push_back(Finish(*e, absl::OkStatus()));
    running_.erase(std::find_if(running_.begin(), running_.end(),
                                [e](const std::unique_ptr<Entry>& r) { return r.get() == e; }));
  }
  return finished;
}

}  // namespace dapq::worker::service
