// File: tests/util/metric_values.h
// MetricValue: one series' value out of collected prometheus-cpp families, for tests that check
// what a component counted (a registry's Collect(), or a collector's).
// Header-only; thread-compatible.
#ifndef DAPQ_TESTS_UTIL_METRIC_VALUES_H_
#define DAPQ_TESTS_UTIL_METRIC_VALUES_H_

#include <map>
#include <string>
#include <vector>

#include "prometheus/metric_family.h"

namespace dapq::testing {

// The value of `name`'s first series carrying these labels (others may be there too): a
// counter's or a gauge's; -1 when there is none.
inline double MetricValue(const std::vector<prometheus::MetricFamily>& families,
                          const std::string& name,
                          const std::map<std::string, std::string>& labels = {}) {
  for (const auto& f : families) {
    if (f.name != name) continue;
    for (const auto& m : f.metric) {
      bool match = true;
      for (const auto& [k, v] : labels) {
        bool found = false;
        for (const auto& l : m.label) found = found || (l.name == k && l.value == v);
        match = match && found;
      }
      if (!match) continue;
      return f.type == prometheus::MetricType::Counter ? m.counter.value : m.gauge.value;
    }
  }
  return -1;
}

}  // namespace dapq::testing

#endif  // DAPQ_TESTS_UTIL_METRIC_VALUES_H_
