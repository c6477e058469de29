// File: coordinator/coordinator_metrics.h
// The coordinator's Prometheus metrics (ARCHITECTURE.md §6). Requests by code and TTFT are
// recorded as they happen (CoordinatorMetrics); admission, group health and batch figures are
// read from their owners at each scrape (CoordinatorCollector), so they always equal the state
// they describe.
// Thread-safety: thread-safe.
#ifndef DAPQ_COORDINATOR_COORDINATOR_METRICS_H_
#define DAPQ_COORDINATOR_COORDINATOR_METRICS_H_

#include <atomic>
#include <functional>

#include "coordinator/batch_store.h"
#include "coordinator/group_registry.h"
#include "coordinator/request_router.h"
#include "prometheus/collectable.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace dapq::coordinator {

class CoordinatorMetrics {
 public:
  explicit CoordinatorMetrics(prometheus::Registry& registry);
  void OnRequest(const grpc::Status& status);
  void ObserveTtft(double seconds);
  // One answer of the HTTP API (`path` is the route, e.g. /v1/completions).
  void OnHttpResponse(const std::string& path, int http_status);

 private:
  prometheus::Family<prometheus::Counter>& requests_;
  prometheus::Histogram& ttft_;
  prometheus::Family<prometheus::Counter>& http_responses_;
};

// What the collector reads besides the router, registry and store.
struct CoordinatorCounters {
  const std::atomic<int64_t>* item_failures = nullptr;  // BatchRunner::item_failures()
  const std::atomic<int64_t>* claim_errors = nullptr;   // BatchRunner::claim_errors()
  const std::atomic<int64_t>* commit_errors = nullptr;  // BatchRunner::commit_errors()
  // With --etcd: whether the watch on etcd is healthy, and the groups registered there (empty:
  // no etcd, no etcd series).
  std::function<bool()> etcd_up;
  std::function<int()> etcd_groups;
};

class CoordinatorCollector final : public prometheus::Collectable {
 public:
  CoordinatorCollector(const RequestRouter* router, const GroupRegistry* registry,
                       BatchStore* store, const CoordinatorCounters& counters)
      : router_(router), registry_(registry), store_(store), counters_(counters) {}
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  const RequestRouter* const router_;
  const GroupRegistry* const registry_;
  BatchStore* const store_;
  const CoordinatorCounters counters_;
};

// The gRPC code's name (OK, INVALID_ARGUMENT, ...).
std::string CodeName(grpc::StatusCode code);

}  // namespace dapq::coordinator

#endif  // DAPQ_COORDINATOR_COORDINATOR_METRICS_H_
