// File: common/metrics.h
// Prometheus metrics (prometheus-cpp): every process serves one /metrics endpoint
// (MetricsServer) for the registries its components fill. Components receive a
// prometheus::Registry& (no global registry); names follow dapq_<component>_<what>_<unit>, base
// units, counters end in _total, labels are bounded (tier, method, group, rank, code, state).
// Thread-safety: prometheus-cpp metrics are thread-safe; MetricsServer is thread-compatible.
#ifndef DAPQ_COMMON_METRICS_H_
#define DAPQ_COMMON_METRICS_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "prometheus/collectable.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace prometheus {
class Exposer;
}

namespace dapq {

class MetricsServer {
 public:
  // Serves GET /metrics on `address` ("host:port"; port 0 = any free port). Unavailable naming
  // the address when it cannot listen.
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(const std::string& address);
  ~MetricsServer();
  int port() const { return port_; }
  // The collectable must outlive the server (or be unregistered by expiring).
  void Register(const std::weak_ptr<prometheus::Collectable>& collectable);

 private:
  MetricsServer(std::unique_ptr<prometheus::Exposer> exposer, int port);
  std::unique_ptr<prometheus::Exposer> exposer_;
  int port_ = 0;
};

// dapq_build_info{version, cuda} = 1, in `registry`.
void AddBuildInfo(prometheus::Registry& registry);

// Bucket presets: latencies from 0.1 ms to 60 s; ratios in (0, 1].
prometheus::Histogram::BucketBoundaries LatencyBuckets();
prometheus::Histogram::BucketBoundaries RatioBuckets();

}  // namespace dapq

#endif  // DAPQ_COMMON_METRICS_H_
