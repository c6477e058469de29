// File: tests/deploy/metric_contract.h
// The metric contract of DapQ Serve (deploy/README.md "Metrics"; ARCHITECTURE.md §6) as data,
// and a small PromQL reader that checks a query against it: every series selector names a
// metric of the contract (histograms only through _bucket/_sum/_count), every label in a
// matcher or in by/without/on/ignoring exists on the metrics of the query, and matcher values of
// enumerated labels (tier, cause, state, ...) are among the allowed values. It is no full PromQL
// parser: syntax is promtool's job (deploy_config_test runs promtool on every query too).
// Thread-safety: the functions are pure; the contract is immutable static data.
#ifndef DAPQ_TESTS_DEPLOY_METRIC_CONTRACT_H_
#define DAPQ_TESTS_DEPLOY_METRIC_CONTRACT_H_

#include <set>
#include <string>
#include <vector>

namespace dapq::deploy {

enum class MetricKind { kCounter, kGauge, kHistogram };

struct MetricSpec {
  std::string name;  // exposed name (counters end in _total)
  MetricKind kind;
  std::vector<std::string> labels;  // labels the process sets (never job/instance/le)
};

// Every metric of the contract, worker and coordinator. `up` (Prometheus' own) is not in it.
const std::vector<MetricSpec>& MetricContract();

// The values a label may take where the contract enumerates them (empty: any value).
std::set<std::string> AllowedLabelValues(const std::string& metric, const std::string& label);

// What a PromQL expression refers to.
struct QueryRefs {
  std::set<std::string> series;     // series names as written (dapq_x_bucket, up, ...)
  std::set<std::string> metrics;    // contract metric names they resolve to
  std::vector<std::string> errors;  // contract violations and unreadable input, human readable
};

// Reads `expr` and checks it against the contract as described above. Expressions must not
// contain Grafana variables ($...): they are run as they are against Prometheus.
QueryRefs CheckQuery(const std::string& expr);

}  // namespace dapq::deploy

#endif  // DAPQ_TESTS_DEPLOY_METRIC_CONTRACT_H_
