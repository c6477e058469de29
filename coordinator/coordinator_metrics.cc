// File: coordinator/coordinator_metrics.cc
// CoordinatorMetrics and CoordinatorCollector.
#include "coordinator/coordinator_metrics.h"

#include "api/status_names.h"
#include "common/metrics.h"

namespace dapq::coordinator {
namespace {

prometheus::MetricFamily Family(const char* name, const char* help, prometheus::MetricType type) {
  prometheus::MetricFamily f;
  f.name = name;
  f.help = help;
  f.type = type;
  return f;
}

void AddValue(prometheus::MetricFamily& f, prometheus::ClientMetric::Label* label, double v) {
  prometheus::ClientMetric m;
  if (label != nullptr) m.label.push_back(*label);
  if (f.type == prometheus::MetricType::Counter) {
    m.counter.value = v;
  } else {
    m.gauge.value = v;
  }
  f.metric.push_back(std::move(m));
}

}  // namespace

std::string CodeName(grpc::StatusCode code) {
  return std::string(api::StatusCodeName(static_cast<int>(code)));
}

CoordinatorMetrics::CoordinatorMetrics(prometheus::Registry& r)
    : requests_(prometheus::BuildCounter()
                    .Name("dapq_coordinator_requests_total")
                    .Help("Inference requests answered, by gRPC code")
                    .Register(r)),
      ttft_(prometheus::BuildHistogram()
                .Name("dapq_coordinator_ttft_seconds")
                .Help("Request arrival at the coordinator to its first streamed token")
                .Register(r)
                .Add({}, LatencyBuckets())),
      http_responses_(prometheus::BuildCounter()
                          .Name("dapq_coordinator_http_responses_total")
                          .Help("OpenAI HTTP API responses, by path and HTTP status")
                          .Register(r)) {
  requests_.Add({{"code", "OK"}});
}

void CoordinatorMetrics::OnHttpResponse(const std::string& path, int http_status) {
  http_responses_.Add({{"path", path}, {"status", std::to_string(http_status)}}).Increment();
}

void CoordinatorMetrics::OnRequest(const grpc::Status& status) {
  requests_.Add({{"code", CodeName(status.error_code())}}).Increment();
}

void CoordinatorMetrics::ObserveTtft(double seconds) { ttft_.Observe(seconds); }

std::vector<prometheus::MetricFamily> CoordinatorCollector::Collect() const {
  using prometheus::MetricType;
  std::vector<prometheus::MetricFamily> out;
  auto in_flight =
      Family("dapq_coordinator_in_flight",
             "Requests admitted and not finished (streams and batch items)", MetricType::Gauge);
  AddValue(in_flight, nullptr, router_->in_flight());
  out.push_back(std::move(in_flight));
  auto capacity = Family("dapq_coordinator_queue_capacity",
                         "Requests the coordinator admits at once", MetricType::Gauge);
  AddValue(capacity, nullptr, router_->capacity());
  out.push_back(std::move(capacity));
  auto rejections = Family("dapq_coordinator_rejections_total",
                           "Requests refused with RESOURCE_EXHAUSTED", MetricType::Counter);
  AddValue(rejections, nullptr, static_cast<double>(router_->rejected_total()));
  out.push_back(std::move(rejections));
  auto healthy = Family("dapq_coordinator_group_healthy",
                        "1 while the worker group is healthy, else 0", MetricType::Gauge);
  for (const auto& g : registry_->Snapshot()) {
    prometheus::ClientMetric::Label label{"group", g.group_id()};
    AddValue(healthy, &label, g.healthy() ? 1 : 0);
  }
  out.push_back(std::move(healthy));
  auto failures = Family("dapq_coordinator_batch_item_failures_total",
                         "Batch item attempts that failed (retried or final)", MetricType::Counter);
  AddValue(failures, nullptr, static_cast<double>(counters_.item_failures->load()));
  out.push_back(std::move(failures));
  auto store_errors =
      Family("dapq_coordinator_batch_store_errors_total",
             "Batch store calls that failed: claiming items, committing an attempt's end",
             MetricType::Counter);
  for (const auto& [kind, counter] :
       {std::pair{"claim", counters_.claim_errors}, std::pair{"commit", counters_.commit_errors}}) {
    prometheus::ClientMetric::Label label{"kind", kind};
    AddValue(store_errors, &label, static_cast<double>(counter->load()));
  }
  out.push_back(std::move(store_errors));
  if (counters_.etcd_up) {
    auto up =
        Family("dapq_coordinator_etcd_up",
               "1 while the coordinator's watch on etcd is healthy, else 0", MetricType::Gauge);
    AddValue(up, nullptr, counters_.etcd_up() ? 1 : 0);
    out.push_back(std::move(up));
    auto groups = Family("dapq_coordinator_etcd_groups", "Worker groups holding a lease in etcd",
                         MetricType::Gauge);
    AddValue(groups, nullptr, counters_.etcd_groups());
    out.push_back(std::move(groups));
  }

  auto jobs = Family("dapq_coordinator_batch_jobs", "Batch jobs by state", MetricType::Gauge);
  auto items = Family("dapq_coordinator_batch_items", "Batch items by state", MetricType::Gauge);
  int job_counts[5] = {0, 0, 0, 0, 0};
  int item_counts[5] = {0, 0, 0, 0, 0};
  if (absl::StatusOr<std::vector<JobInfo>> list = store_->ListJobs(100000); list.ok()) {
    for (const JobInfo& j : *list) {
      ++job_counts[static_cast<int>(j.state)];
      item_counts[0] += j.pending;
      item_counts[1] += j.running;
      item_counts[2] += j.succeeded;
      item_counts[3] += j.failed;
      item_counts[4] += j.cancelled;
    }
  }
  for (int i = 0; i < 5; ++i) {
    prometheus::ClientMetric::Label job{"state",
                                        std::string(JobStateName(static_cast<JobState>(i)))};
    AddValue(jobs, &job, job_counts[i]);
    prometheus::ClientMetric::Label item{"state",
                                         std::string(ItemStateName(static_cast<ItemState>(i)))};
    AddValue(items, &item, item_counts[i]);
  }
  out.push_back(std::move(jobs));
  out.push_back(std::move(items));
  return out;
}

}  // namespace dapq::coordinator
