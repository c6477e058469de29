// File: worker/service/worker_metrics.cc
// WorkerMetrics, KvStoreCollector, TimedCommunicator.
#include "worker/service/worker_metrics.h"

#include <algorithm>
#include <chrono>

#include "common/metrics.h"

namespace dapq::worker::service {
namespace {

using prometheus::BuildCounter;
using prometheus::BuildGauge;
using prometheus::BuildHistogram;

double Since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

std::string FailureCause(const absl::Status& s) {
  if (absl::IsDataLoss(s)) return "checksum";
  if (absl::IsNotFound(s)) return "missing";
  return "unavailable";
}

}  // namespace

WorkerMetrics::WorkerMetrics(prometheus::Registry& r, const std::string& group, int rank)
    : group_(group),
      rank_(std::to_string(rank)),
      requests_(BuildCounter()
                    .Name("dapq_worker_requests_total")
                    .Help("Generation requests finished by the group (rank 0), by outcome")
                    .Register(r)),
      prefill_tokens_(BuildCounter()
                          .Name("dapq_worker_prefill_tokens_total")
                          .Help("Prompt tokens prefilled")
                          .Register(r)
                          .Add(With({}))),
      reused_tokens_(BuildCounter()
                         .Name("dapq_worker_prefix_reused_tokens_total")
                         .Help("Prompt tokens taken from the prefix cache instead of prefilled")
                         .Register(r)
                         .Add(With({}))),
      decode_tokens_(BuildCounter()
                         .Name("dapq_worker_decode_tokens_total")
                         .Help("Tokens generated")
                         .Register(r)
                         .Add(With({}))),
      ttft_(BuildHistogram()
                .Name("dapq_worker_ttft_seconds")
                .Help("Request arrival at the worker to its first token (queue + prefill)")
                .Register(r)
                .Add(With({}), LatencyBuckets())),
      tpot_(BuildHistogram()
                .Name("dapq_worker_time_per_output_token_seconds")
                .Help("Mean decode time per generated token after the first, per request")
                .Register(r)
                .Add(With({}), LatencyBuckets())),
      queue_depth_(BuildGauge()
                       .Name("dapq_worker_queue_depth")
                       .Help("Requests waiting in the group's queue")
                       .Register(r)
                       .Add(With({}))),
      rejections_(BuildCounter()
                      .Name("dapq_worker_queue_rejections_total")
                      .Help("Requests refused because the group's queue was full")
                      .Register(r)
                      .Add(With({}))),
      healthy_(BuildGauge()
                   .Name("dapq_worker_group_healthy")
                   .Help("1 while every rank of the group is reachable, else 0")
                   .Register(r)
                   .Add(With({}))),
      allreduce_(BuildHistogram()
                     .Name("dapq_worker_allreduce_seconds")
                     .Help("Time in one all-reduce of the TP group (including waiting for peers)")
                     .Register(r)
                     .Add(With({}), LatencyBuckets())),
      step_sequences_(BuildHistogram()
                          .Name("dapq_worker_step_sequences")
                          .Help("Sequences in one engine step (continuous batching)")
                          .Register(r)
                          .Add(With({}), prometheus::Histogram::BucketBoundaries{1, 2, 4, 8, 16, 32,
                                                                                 64, 128, 256})),
      step_tokens_(BuildHistogram()
                       .Name("dapq_worker_step_tokens")
                       .Help("Tokens in one engine step (decode tokens + prompt chunks)")
                       .Register(r)
                       .Add(With({}), prometheus::Histogram::BucketBoundaries{1, 4, 16, 64, 256,
                                                                              1024, 4096, 16384})),
      running_(BuildGauge()
                   .Name("dapq_worker_running_sequences")
                   .Help("Sequences in the group's batch")
                   .Register(r)
                   .Add(With({}))),
      waiting_(BuildGauge()
                   .Name("dapq_worker_waiting_sequences")
                   .Help("Requests taken from the queue and waiting for KV room or a batch slot")
                   .Register(r)
                   .Add(With({}))),
      preemptions_(BuildCounter()
                       .Name("dapq_worker_preemptions_total")
                       .Help("Sequences preempted when the KV pool ran out, by kind")
                       .Register(r)),
      session_turns_(BuildCounter()
                         .Name("dapq_worker_session_turns_total")
                         .Help("Session turns by where their KV came from: pool (kept there "
                               "since the last turn), store (restored), replay (recomputed)")
                         .Register(r)),
      sessions_evicted_(BuildCounter()
                            .Name("dapq_worker_sessions_evicted_total")
                            .Help("Idle sessions taken out of the KV pool (their KV stays in "
                                  "the store)")
                            .Register(r)
                            .Add(With({}))),
      kept_(BuildCounter()
                .Name("dapq_compression_tokens_kept_total")
                .Help("KV token slots (tokens x layers x KV heads) kept by compression")
                .Register(r)),
      evicted_(BuildCounter()
                   .Name("dapq_compression_tokens_evicted_total")
                   .Help("KV token slots (tokens x layers x KV heads) evicted by compression")
                   .Register(r)),
      kept_ratio_(BuildHistogram()
                      .Name("dapq_compression_kept_ratio")
                      .Help("Share of a compressed prompt's KV slots kept, per request")
                      .Register(r)),
      layer_kept_ratio_(BuildHistogram()
                            .Name("dapq_compression_layer_kept_ratio")
                            .Help("Share of a layer's prompt KV kept, one sample per layer")
                            .Register(r)),
      spill_bytes_(BuildCounter()
                       .Name("dapq_kv_spill_bytes_total")
                       .Help("KV bytes moved down the tiers")
                       .Register(r)),
      spill_blocks_(BuildCounter()
                        .Name("dapq_kv_spill_blocks_total")
                        .Help("KV blocks moved down the tiers")
                        .Register(r)),
      restore_bytes_(BuildCounter()
                         .Name("dapq_kv_restore_bytes_total")
                         .Help("KV bytes moved up the tiers (access or prefetch)")
                         .Register(r)),
      restore_blocks_(BuildCounter()
                          .Name("dapq_kv_restore_blocks_total")
                          .Help("KV blocks moved up the tiers (access or prefetch)")
                          .Register(r)),
      spill_failures_(BuildCounter()
                          .Name("dapq_kv_spill_failures_total")
                          .Help("Block moves that failed (the block stayed), by target tier")
                          .Register(r)),
      failed_loads_(BuildCounter()
                        .Name("dapq_kv_failed_loads_total")
                        .Help("Blocks that could not be read back, by cause")
                        .Register(r)),
      transfer_seconds_(BuildHistogram()
                            .Name("dapq_kv_transfer_seconds")
                            .Help("Time to move one block between tiers")
                            .Register(r)) {
  healthy_.Set(1);
  for (const char* outcome : {"ok", "error", "cancelled"})
    requests_.Add(With({{"outcome", outcome}}));
  for (const char* cause : {"checksum", "missing", "unavailable"}) {
    failed_loads_.Add(With({{"cause", cause}}));
  }
  preemptions_.Add(With({{"kind", "recompute"}}));
  preemptions_.Add(With({{"kind", "swap"}}));
  for (const char* source : {"pool", "store", "replay"})
    session_turns_.Add(With({{"source", source}}));
  // Every method's series exist from the start, so rate() sees a request's first increment.
  for (const compress::Method m :
       {compress::Method::kDapq, compress::Method::kSnapKv, compress::Method::kH2o,
        compress::Method::kStreamingLlm, compress::Method::kTova,
        compress::Method::kExpectedAttention, compress::Method::kRandom}) {
    const prometheus::Labels labels = With({{"method", std::string(compress::MethodName(m))}});
    kept_.Add(labels);
    evicted_.Add(labels);
    kept_ratio_.Add(labels, RatioBuckets());
    layer_kept_ratio_.Add(labels, RatioBuckets());
  }
}

prometheus::Labels WorkerMetrics::With(prometheus::Labels extra) const {
  extra["group"] = group_;
  extra["rank"] = rank_;
  return extra;
}

void WorkerMetrics::OnRequest(const std::string& outcome) {
  requests_.Add(With({{"outcome", outcome}})).Increment();
}

void WorkerMetrics::OnTokens(int prefill, int decode, int reused) {
  prefill_tokens_.Increment(prefill);
  reused_tokens_.Increment(reused);
  decode_tokens_.Increment(decode);
}

void WorkerMetrics::ObserveLatency(double ttft, double tpot) {
  ttft_.Observe(ttft);
  if (tpot >= 0) tpot_.Observe(tpot);
}

void WorkerMetrics::SetQueueDepth(int depth) { queue_depth_.Set(depth); }
void WorkerMetrics::OnRejected() { rejections_.Increment(); }
void WorkerMetrics::SetHealthy(bool healthy) { healthy_.Set(healthy ? 1 : 0); }
void WorkerMetrics::ObserveAllReduce(double seconds) { allreduce_.Observe(seconds); }
void WorkerMetrics::ObserveStep(int sequences, int tokens) {
  step_sequences_.Observe(sequences);
  step_tokens_.Observe(tokens);
}
void WorkerMetrics::SetBatchState(int running, int waiting) {
  running_.Set(running);
  waiting_.Set(waiting);
}
void WorkerMetrics::OnPreemptions(const std::string& kind, int64_t count) {
  if (count > 0) preemptions_.Add(With({{"kind", kind}})).Increment(static_cast<double>(count));
}

void WorkerMetrics::OnSessionTurn(const std::string& source) {
  session_turns_.Add(With({{"source", source}})).Increment();
}

void WorkerMetrics::OnSessionEvicted() { sessions_evicted_.Increment(); }

void WorkerMetrics::OnCompression(const compress::CompressionStats& stats,
                                  const std::string& method) {
  if (!stats.compressed || stats.slots_before <= 0) return;
  const prometheus::Labels labels = With({{"method", method}});
  kept_.Add(labels).Increment(static_cast<double>(stats.slots_after));
  evicted_.Add(labels).Increment(static_cast<double>(stats.slots_before - stats.slots_after));
  kept_ratio_.Add(labels, RatioBuckets())
      .Observe(static_cast<double>(stats.slots_after) / stats.slots_before);
  auto& per_layer = layer_kept_ratio_.Add(labels, RatioBuckets());
  for (int budget : stats.layer_budgets) {
    per_layer.Observe(stats.prompt_slots > 0
                          ? std::min(1.0, static_cast<double>(budget) / stats.prompt_slots)
                          : 1.0);
  }
}

void WorkerMetrics::SetTierNames(std::vector<std::string> names) {
  tiers_ = std::move(names);
  // Series that exist at 0 before the first failure (so rates and alerts see them).
  for (size_t t = 1; t < tiers_.size(); ++t) spill_failures_.Add(With({{"tier", tiers_[t]}}));
  for (size_t from = 0; from < tiers_.size(); ++from) {
    for (size_t to = 0; to < tiers_.size(); ++to) {
      if (from == to) continue;
      const prometheus::Labels pair = With({{"from", tiers_[from]}, {"to", tiers_[to]}});
      (from < to ? spill_bytes_ : restore_bytes_).Add(pair);
      (from < to ? spill_blocks_ : restore_blocks_).Add(pair);
    }
  }
  for (const char* direction : {"spill", "restore"}) {
    transfer_seconds_.Add(With({{"direction", direction}}), LatencyBuckets());
  }
}

std::string WorkerMetrics::TierName(int tier) const {
  return tier >= 0 && tier < static_cast<int>(tiers_.size()) ? tiers_[tier]
                                                             : "tier" + std::to_string(tier);
}

void WorkerMetrics::OnTransfer(int from, int to, size_t bytes, double seconds,
                               const absl::Status& status) {
  if (!status.ok()) {
    spill_failures_.Add(With({{"tier", TierName(to)}})).Increment();
    return;
  }
  const prometheus::Labels pair = With({{"from", TierName(from)}, {"to", TierName(to)}});
  const bool spill = from < to;
  (spill ? spill_bytes_ : restore_bytes_).Add(pair).Increment(static_cast<double>(bytes));
  (spill ? spill_blocks_ : restore_blocks_).Add(pair).Increment();
  transfer_seconds_.Add(With({{"direction", spill ? "spill" : "restore"}}), LatencyBuckets())
      .Observe(seconds);
}

void WorkerMetrics::OnFailedLoad(int, const absl::Status& status) {
  failed_loads_.Add(With({{"cause", FailureCause(status)}})).Increment();
}

KvStoreCollector::KvStoreCollector(const kvstore::KvStore* store, std::string group, int rank)
    : store_(store), group_(std::move(group)), rank_(std::to_string(rank)) {}

std::vector<prometheus::MetricFamily> KvStoreCollector::Collect() const {
  struct Gauge {
    const char* name;
    const char* help;
    double (*value)(const kvstore::TierStats&);
  };
  static const Gauge kGauges[] = {
      {"dapq_kv_used_bytes", "KV bytes held on the tier",
       [](const kvstore::TierStats& s) { return static_cast<double>(s.used_bytes); }},
      {"dapq_kv_capacity_bytes", "The tier's capacity in bytes",
       [](const kvstore::TierStats& s) { return static_cast<double>(s.capacity_bytes); }},
      {"dapq_kv_high_watermark_bytes", "Usage above which the tier spills down",
       [](const kvstore::TierStats& s) { return static_cast<double>(s.high_watermark_bytes); }},
      {"dapq_kv_used_blocks", "KV blocks held on the tier",
       [](const kvstore::TierStats& s) { return static_cast<double>(s.blocks); }},
      {"dapq_kv_shared_blocks",
       "Of the tier's KV blocks, the shared ones (prompt prefixes several sessions use, stored "
       "once)",
       [](const kvstore::TierStats& s) { return static_cast<double>(s.shared_blocks); }},
  };
  const std::vector<kvstore::TierStats> stats = store_->Stats();
  std::vector<prometheus::MetricFamily> out;
  for (const Gauge& g : kGauges) {
    prometheus::MetricFamily family;
    family.name = g.name;
    family.help = g.help;
    family.type = prometheus::MetricType::Gauge;
    for (const kvstore::TierStats& s : stats) {
      prometheus::ClientMetric m;
      m.label = {{"group", group_}, {"rank", rank_}, {"tier", s.name}};
      m.gauge.value = g.value(s);
      family.metric.push_back(std::move(m));
    }
    out.push_back(std::move(family));
  }
  return out;
}

KvPoolCollector::KvPoolCollector(const kvstore::BlockPool* pool, std::string group, int rank)
    : pool_(pool), group_(std::move(group)), rank_(std::to_string(rank)) {}

LeaseLossCollector::LeaseLossCollector(std::function<int64_t()> losses, std::string group, int rank)
    : losses_(std::move(losses)), group_(std::move(group)), rank_(std::to_string(rank)) {}

std::vector<prometheus::MetricFamily> LeaseLossCollector::Collect() const {
  prometheus::MetricFamily family;
  family.name = "dapq_worker_etcd_lease_lost_total";
  family.help = "Times the group's etcd registration lost its lease and registered again";
  family.type = prometheus::MetricType::Counter;
  prometheus::ClientMetric m;
  m.label = {{"group", group_}, {"rank", rank_}};
  m.counter.value = static_cast<double>(std::max<int64_t>(0, losses_()));
  family.metric.push_back(std::move(m));
  return {std::move(family)};
}

std::vector<prometheus::MetricFamily> KvPoolCollector::Collect() const {
  const std::pair<const char*, const char*> kFamilies[] = {
      {"dapq_kv_pool_used_blocks", "Blocks of the paged KV cache held by live sequences"},
      {"dapq_kv_pool_allocated_blocks", "Blocks of the paged KV cache allocated (used + free)"},
      {"dapq_kv_pool_capacity_blocks", "The pool's cap in blocks (0 = grows while memory lasts)"},
      {"dapq_kv_pool_block_bytes", "Bytes of one block (K and V)"},
      {"dapq_kv_pool_cached_blocks",
       "Blocks of the prefix cache (full prompt blocks kept for reuse; free when only it holds "
       "them)"}};
  const double values[] = {
      static_cast<double>(pool_->blocks_in_use()), static_cast<double>(pool_->blocks_allocated()),
      static_cast<double>(pool_->max_blocks()), static_cast<double>(pool_->block_bytes()),
      static_cast<double>(pool_->blocks_cached())};
  std::vector<prometheus::MetricFamily> out;
  for (size_t i = 0; i < std::size(values); ++i) {
    prometheus::MetricFamily family;
    family.name = kFamilies[i].first;
    family.help = kFamilies[i].second;
    family.type = prometheus::MetricType::Gauge;
    prometheus::ClientMetric m;
    m.label = {{"group", group_}, {"rank", rank_}};
    m.gauge.value = values[i];
    family.metric.push_back(std::move(m));
    out.push_back(std::move(family));
  }
  return out;
}

absl::Status TimedCommunicator::AllReduceSum(float* data, size_t count) {
  const auto t0 = std::chrono::steady_clock::now();
  absl::Status s = t_->AllReduceSum(data, count);
  m_->ObserveAllReduce(Since(t0));
  return s;
}

absl::Status TimedCommunicator::AllReduceSum(int64_t* data, size_t count) {
  const auto t0 = std::chrono::steady_clock::now();
  absl::Status s = t_->AllReduceSum(data, count);
  m_->ObserveAllReduce(Since(t0));
  return s;
}

}  // namespace dapq::worker::service
