// File: worker/service/worker_metrics.h
// The Prometheus metrics of one worker rank (ARCHITECTURE.md §6): requests, prefill/decode
// tokens, TTFT and time per output token, queue depth and rejections, group health, all-reduce
// time, compression (tokens kept/evicted and the kept ratio per request and per layer, by
// method), session turns by where their KV came from and idle sessions taken out of the pool,
// and the KV store (bytes/blocks/capacity per tier read from the store at scrape time,
// spill/restore bytes, blocks and latency per tier pair, failed loads by cause). Every series
// carries group and rank labels.
// Thread-safety: thread-safe (prometheus-cpp metrics; the store collector locks the store).
#ifndef DAPQ_WORKER_SERVICE_WORKER_METRICS_H_
#define DAPQ_WORKER_SERVICE_WORKER_METRICS_H_

#include <functional>
#include <string>
#include <vector>

#include "kvstore/kv_store.h"
#include "prometheus/collectable.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "worker/comm/communicator.h"
#include "worker/compress/compressor.h"
#include "worker/kv_cache.h"

namespace dapq::worker::service {

class WorkerMetrics final : public kvstore::KvStoreObserver {
 public:
  WorkerMetrics(prometheus::Registry& registry, const std::string& group, int rank);

  void OnRequest(const std::string& outcome);  // ok, error, cancelled
  // prefill: prompt tokens run through the model; reused: taken from the prefix cache instead.
  void OnTokens(int prefill, int decode, int reused = 0);
  void ObserveLatency(double ttft_seconds, double time_per_output_token_seconds);
  void SetQueueDepth(int depth);
  void OnRejected();
  void SetHealthy(bool healthy);
  void ObserveAllReduce(double seconds);
  // Continuous batching: one engine step's sequences and tokens, the scheduler's running and
  // waiting sequences after it, and preemptions (kind: recompute).
  void ObserveStep(int sequences, int tokens);
  void SetBatchState(int running, int waiting);
  void OnPreemptions(const std::string& kind, int64_t count);
  // A session turn found its sequence: "pool" (kept there since its last turn), "store"
  // (restored), "replay" (recomputed: the stored KV failed to load); and idle sessions taken
  // out of the pool (GroupDriverOptions::resident_session_bytes).
  void OnSessionTurn(const std::string& source);
  void OnSessionEvicted();
  // A request's compression (nothing when the prompt was not compressed).
  void OnCompression(const compress::CompressionStats& stats, const std::string& method);
  // Names of the store's tiers, for the transfer labels (call before traffic).
  void SetTierNames(std::vector<std::string> names);

  // kvstore::KvStoreObserver.
  void OnTransfer(int from, int to, size_t bytes, double seconds,
                  const absl::Status& status) override;
  void OnFailedLoad(int tier, const absl::Status& status) override;

 private:
  prometheus::Labels With(prometheus::Labels extra) const;
  std::string TierName(int tier) const;

  const std::string group_, rank_;
  std::vector<std::string> tiers_;
  prometheus::Family<prometheus::Counter>& requests_;
  prometheus::Counter& prefill_tokens_;
  prometheus::Counter& reused_tokens_;
  prometheus::Counter& decode_tokens_;
  prometheus::Histogram& ttft_;
  prometheus::Histogram& tpot_;
  prometheus::Gauge& queue_depth_;
  prometheus::Counter& rejections_;
  prometheus::Gauge& healthy_;
  prometheus::Histogram& allreduce_;
  prometheus::Histogram& step_sequences_;
  prometheus::Histogram& step_tokens_;
  prometheus::Gauge& running_;
  prometheus::Gauge& waiting_;
  prometheus::Family<prometheus::Counter>& preemptions_;
  prometheus::Family<prometheus::Counter>& session_turns_;
  prometheus::Counter& sessions_evicted_;
  prometheus::Family<prometheus::Counter>& kept_;
  prometheus::Family<prometheus::Counter>& evicted_;
  prometheus::Family<prometheus::Histogram>& kept_ratio_;
  prometheus::Family<prometheus::Histogram>& layer_kept_ratio_;
  prometheus::Family<prometheus::Counter>& spill_bytes_;
  prometheus::Family<prometheus::Counter>& spill_blocks_;
  prometheus::Family<prometheus::Counter>& restore_bytes_;
  prometheus::Family<prometheus::Counter>& restore_blocks_;
  prometheus::Family<prometheus::Counter>& spill_failures_;
  prometheus::Family<prometheus::Counter>& failed_loads_;
  prometheus::Family<prometheus::Histogram>& transfer_seconds_;
};

// The store's per-tier gauges (dapq_kv_used_bytes, _capacity_bytes, _high_watermark_bytes,
// _used_blocks), read from KvStore::Stats() at each scrape so they always equal the store's own
// accounting. The store must outlive the collector's registration.
class KvStoreCollector final : public prometheus::Collectable {
 public:
  KvStoreCollector(const kvstore::KvStore* store, std::string group, int rank);
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  const kvstore::KvStore* const store_;
  const std::string group_, rank_;
};

// The engine's paged KV pool of this rank (dapq_kv_pool_used_blocks, _allocated_blocks,
// _capacity_blocks (0 = uncapped), _block_bytes), read at each scrape. The pool must outlive the
// collector's registration.
class KvPoolCollector final : public prometheus::Collectable {
 public:
  KvPoolCollector(const kvstore::BlockPool* pool, std::string group, int rank);
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  const kvstore::BlockPool* const pool_;
  const std::string group_, rank_;
};

// dapq_worker_etcd_lease_lost_total: how often the group's etcd registration lost its lease and
// registered again (an etcd outage longer than the TTL, or etcd restarted without its data),
// read at each scrape from `losses`.
class LeaseLossCollector final : public prometheus::Collectable {
 public:
  LeaseLossCollector(std::function<int64_t()> losses, std::string group, int rank);
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  const std::function<int64_t()> losses_;
  const std::string group_, rank_;
};

// A Communicator that times its all-reduces into WorkerMetrics. Stream-ordered all-reduces pass
// through untimed: the call returns once the collective is enqueued, so its time says nothing.
class TimedCommunicator final : public Communicator {
 public:
  TimedCommunicator(Communicator* target, WorkerMetrics* metrics) : t_(target), m_(metrics) {}
  int rank() const override { return t_->rank(); }
  int size() const override { return t_->size(); }
  absl::Status AllReduceSum(float* data, size_t count) override;
  absl::Status AllReduceSum(int64_t* data, size_t count) override;
  absl::Status Broadcast(void* data, size_t bytes, int root) override {
    return t_->Broadcast(data, bytes, root);
  }
  absl::Status Barrier() override { return t_->Barrier(); }
  void Abort() override { t_->Abort(); }
  bool TakesDeviceBuffers() const override { return t_->TakesDeviceBuffers(); }
  absl::Status AsyncError() override { return t_->AsyncError(); }
  absl::Status AllReduceSumOnStream(float* device_data, size_t count,
                                    kernels::Stream stream) override {
    return t_->AllReduceSumOnStream(device_data, count, stream);
  }

 private:
  Communicator* const t_;
  WorkerMetrics* const m_;
};

}  // namespace dapq::worker::service

#endif  // DAPQ_WORKER_SERVICE_WORKER_METRICS_H_
