// File: common/metrics.cc
// MetricsServer (prometheus-cpp Exposer behind absl::Status), build info and bucket presets.
#include "common/metrics.h"

#include <exception>

#include "absl/strings/str_cat.h"
#include "prometheus/exposer.h"
#include "prometheus/gauge.h"

namespace dapq {

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(const std::string& address) {
  std::unique_ptr<prometheus::Exposer> exposer;
  try {
    exposer = std::make_unique<prometheus::Exposer>(address, /*num_threads=*/1);
  } catch (const std::exception& e) {
    return absl::UnavailableError(
        absl::StrCat("metrics: cannot listen on ", address, ": ", e.what()));
  }
  const std::vector<int> ports = exposer->GetListeningPorts();
  const int port = ports.empty() ? 0 : ports[0];
  return std::unique_ptr<MetricsServer>(new MetricsServer(std::move(exposer), port));
}

MetricsServer::MetricsServer(std::unique_ptr<prometheus::Exposer> exposer, int port)
    : exposer_(std::move(exposer)), port_(port) {}

MetricsServer::~MetricsServer() = default;

void MetricsServer::Register(const std::weak_ptr<prometheus::Collectable>& collectable) {
  exposer_->RegisterCollectable(collectable);
}

void AddBuildInfo(prometheus::Registry& registry) {
  prometheus::BuildGauge()
      .Name("dapq_build_info")
      .Help("Build of this process (always 1)")
      .Register(registry)
      .Add({{"version", "0.5.0"}, {"cuda", DAPQ_HAVE_CUDA ? "1" : "0"}})
      .Set(1);
}

prometheus::Histogram::BucketBoundaries LatencyBuckets() {
  return {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
          0.1,    0.25,    0.5,    1,     2.5,    5,     10,   30,    60};
}

prometheus::Histogram::BucketBoundaries RatioBuckets() {
  return {0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 0.9, 1.0};
}

}  // namespace dapq
