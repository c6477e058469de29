// File: tests/deploy/metric_contract_test.cc
// The PromQL reference checker that deploy_config_test applies to every dashboard and alert
// query: it must accept queries over the contract and reject each kind of mistake it exists
// to catch, or the deploy checks would pass vacuously.
#include "tests/deploy/metric_contract.h"

#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_join.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dapq::deploy {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

std::string Errors(const QueryRefs& r) { return absl::StrJoin(r.errors, "\n"); }

TEST(DeployMetricContractTest, NamesFollowTheConventions) {
  std::set<std::string> names;
  for (const MetricSpec& m : MetricContract()) {
    EXPECT_TRUE(names.insert(m.name).second) << "duplicate " << m.name;
    EXPECT_TRUE(absl::StartsWith(m.name, "dapq_")) << m.name;
    EXPECT_EQ(absl::EndsWith(m.name, "_total"), m.kind == MetricKind::kCounter) << m.name;
    if (m.kind == MetricKind::kHistogram) {
      // Base units: seconds, ratios, or counts of one thing per observation (tokens or
      // sequences in one engine step).
      EXPECT_TRUE(absl::EndsWith(m.name, "_seconds") || absl::EndsWith(m.name, "_ratio") ||
                  absl::EndsWith(m.name, "_tokens") || absl::EndsWith(m.name, "_sequences"))
          << m.name << ": histograms are in seconds, ratios, tokens or sequences";
    }
    for (const std::string& label : m.labels) {
      EXPECT_NE(label, "le") << m.name;
      EXPECT_NE(label, "job") << m.name;
      EXPECT_NE(label, "instance") << m.name;
    }
  }
  EXPECT_EQ(names.size(), 52u);
}

TEST(DeployMetricContractTest, AcceptsQueriesOverTheContract) {
  for (const std::string expr : {
           "sum by (tier) (dapq_kv_used_bytes) / (sum by (tier) (dapq_kv_capacity_bytes) > 0)",
           "histogram_quantile(0.99, sum by (le, direction) "
           "(rate(dapq_kv_transfer_seconds_bucket[1m])))",
           "sum by (method) (rate(dapq_compression_kept_ratio_sum{rank=\"0\"}[5m])) / sum by "
           "(method) (rate(dapq_compression_kept_ratio_count{rank=\"0\"}[5m]))",
           "up{job=\"dapq-worker\"} == 0",
           "dapq_kv_used_bytes > dapq_kv_high_watermark_bytes",
           "min by (group) (dapq_worker_group_healthy)",
           "sum(dapq_coordinator_batch_items{state=~\"succeeded|failed|cancelled\"})",
           "sum by (from, to) (rate(dapq_kv_spill_bytes_total{from=\"device\", to=\"host\"}[1m]))",
           "sum by (code) (rate(dapq_coordinator_requests_total{code!=\"OK\"}[1m]))",
           "increase(dapq_kv_failed_loads_total{cause=\"checksum\"}[5m]) > 0",
           "count by (job, version, cuda) (dapq_build_info)",
           "dapq_coordinator_in_flight / dapq_coordinator_queue_capacity > bool 0.9",
           "max_over_time(dapq_worker_queue_depth[10m:1m] offset 5m)",
       }) {
    const QueryRefs r = CheckQuery(expr);
    EXPECT_THAT(r.errors, IsEmpty()) << expr << "\n" << Errors(r);
  }
}

TEST(DeployMetricContractTest, ReportsTheMetricsAQueryUses) {
  const QueryRefs r = CheckQuery(
      "histogram_quantile(0.5, sum by (le) (rate(dapq_worker_ttft_seconds_bucket[1m]))) + "
      "on(group) group_left sum by (group) (up{job=\"dapq-worker\"})");
  EXPECT_THAT(r.series, ElementsAre("dapq_worker_ttft_seconds_bucket", "up"));
  EXPECT_THAT(r.metrics, ElementsAre("dapq_worker_ttft_seconds", "up"));
}

TEST(DeployMetricContractTest, RejectsMetricsOutsideTheContract) {
  EXPECT_THAT(Errors(CheckQuery("sum(rate(dapq_kv_spilled_bytes_total[1m]))")),
              HasSubstr("dapq_kv_spilled_bytes_total is not in the contract"));
  EXPECT_THAT(Errors(CheckQuery("rate(dapq_kv_used_bytes_bucket[1m])")),
              HasSubstr("not in the contract"));
  EXPECT_THAT(Errors(CheckQuery("{__name__=\"dapq_kv_used_bytes\"}")),
              HasSubstr("without a metric name"));
}

TEST(DeployMetricContractTest, RejectsAHistogramWithoutItsSuffix) {
  EXPECT_THAT(Errors(CheckQuery("rate(dapq_worker_ttft_seconds[1m])")),
              HasSubstr("use _bucket, _sum or _count"));
}

TEST(DeployMetricContractTest, RejectsLabelsTheMetricDoesNotHave) {
  EXPECT_THAT(Errors(CheckQuery("dapq_coordinator_in_flight{group=\"g0\"}")),
              HasSubstr("has no label group"));
  EXPECT_THAT(Errors(CheckQuery("sum by (tier) (dapq_worker_queue_depth)")),
              HasSubstr("grouping label tier"));
  EXPECT_THAT(Errors(CheckQuery("sum by (le) (rate(dapq_worker_ttft_seconds_sum[1m]))")),
              HasSubstr("grouping label le"));
}

TEST(DeployMetricContractTest, RejectsValuesOutsideAnEnumeration) {
  EXPECT_THAT(Errors(CheckQuery("dapq_kv_used_bytes{tier=\"gpu\"}")),
              HasSubstr("never takes the value \"gpu\""));
  EXPECT_THAT(Errors(CheckQuery("dapq_coordinator_batch_jobs{state=~\"queued|pending\"}")),
              HasSubstr("never takes the value \"pending\""));
  EXPECT_THAT(Errors(CheckQuery("up{job=\"worker\"}")), HasSubstr("\"worker\""));
  EXPECT_THAT(Errors(CheckQuery("dapq_worker_preemptions_total{kind=\"evict\"}")),
              HasSubstr("never takes the value \"evict\""));
  EXPECT_THAT(
      Errors(CheckQuery("rate(dapq_coordinator_batch_store_errors_total{kind=\"swap\"}[5m])")),
      HasSubstr("never takes the value \"swap\""));
  EXPECT_THAT(Errors(CheckQuery("dapq_kv_used_bytes{job=\"dapq-coordinator\"}")),
              HasSubstr("\"dapq-coordinator\""));
}

TEST(DeployMetricContractTest, RejectsGrafanaVariables) {
  EXPECT_THAT(Errors(CheckQuery("dapq_kv_used_bytes{group=\"$group\"}")),
              HasSubstr("Grafana variable"));
  EXPECT_THAT(Errors(CheckQuery("rate(dapq_kv_spill_bytes_total[$__rate_interval])")),
              HasSubstr("Grafana variable"));
}

}  // namespace
}  // namespace dapq::deploy
