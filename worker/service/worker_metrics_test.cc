// File: worker/service/worker_metrics_test.cc
// The KV metrics agree with the store they describe: after a seeded sequence of puts, spills,
// reads (promotions) and prefetches over device/host/disk tiers, the per-tier gauges equal the
// store's own accounting and the transfer counters balance every tier's bytes.
#include "worker/service/worker_metrics.h"

#include <map>
#include <random>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/util/kv_blocks.h"
#include "tests/util/metric_values.h"
#include "tests/util/test_paths.h"

namespace dapq::worker::service {
namespace {

using ::dapq::testing::MetricValue;

TEST(WorkerMetricsTest, KvGaugesEqualTheStoreAndTransfersBalanceEveryTier) {
  prometheus::Registry registry;
  WorkerMetrics metrics(registry, "g0", 1);
  kvstore::KvStoreOptions o;
  o.device.capacity_bytes = 8 << 10;
  o.host.capacity_bytes = 16 << 10;
  o.disk_dir = testing::MakeTempDir("worker_metrics_kv");
  o.background = false;
  o.observer = &metrics;
  auto store = *kvstore::KvStore::Open(o);
  std::vector<std::string> names;
  for (const auto& t : store->Stats()) names.push_back(t.name);
  metrics.SetTierNames(names);
  KvStoreCollector collector(store.get(), "g0", 1);

  std::mt19937_64 rng(7);
  size_t put_bytes = 0;
  std::vector<std::string> keys;
  for (int op = 0; op < 300; ++op) {
    const int kind = static_cast<int>(rng() % 4);
    if (kind <= 1 || keys.empty()) {
      const std::string session = "s" + std::to_string(rng() % 6);
      const std::string key = session + ".b" + std::to_string(keys.size());
      std::string block = testing::TestBlock(rng(), 4 + static_cast<int>(rng() % 8));
      put_bytes += block.size();
      ASSERT_TRUE(store->Put(session, key, std::move(block)).ok());
      store->SetActive(session, rng() % 2 == 0);
      keys.push_back(key);
    } else if (kind == 2) {
      ASSERT_TRUE(store->Spill().ok());
    } else {
      ASSERT_TRUE(store->Get(keys[rng() % keys.size()]).ok());
    }
  }
  ASSERT_TRUE(store->Flush().ok());

  const std::vector<prometheus::MetricFamily> gauges = collector.Collect();
  const std::vector<prometheus::MetricFamily> counters = registry.Collect();
  const std::vector<kvstore::TierStats> stats = store->Stats();
  size_t moved_total = 0;
  for (size_t t = 0; t < stats.size(); ++t) {
    const std::map<std::string, std::string> tier = {{"tier", stats[t].name}, {"rank", "1"}};
    EXPECT_EQ(MetricValue(gauges, "dapq_kv_used_bytes", tier), stats[t].used_bytes);
    EXPECT_EQ(MetricValue(gauges, "dapq_kv_capacity_bytes", tier), stats[t].capacity_bytes);
    EXPECT_EQ(MetricValue(gauges, "dapq_kv_used_blocks", tier), stats[t].blocks);
    // Bytes on a tier = bytes put there + bytes moved in - bytes moved out.
    double in = 0, out = 0;
    for (size_t u = 0; u < stats.size(); ++u) {
      if (u == t) continue;
      const auto& name = t < u ? "dapq_kv_spill_bytes_total" : "dapq_kv_restore_bytes_total";
      const auto& back = t < u ? "dapq_kv_restore_bytes_total" : "dapq_kv_spill_bytes_total";
      out += std::max(
          0.0, MetricValue(counters, name, {{"from", stats[t].name}, {"to", stats[u].name}}));
      in += std::max(0.0,
                     MetricValue(counters, back, {{"from", stats[u].name}, {"to", stats[t].name}}));
    }
    moved_total += static_cast<size_t>(in);
    const double put_here = t == 0 ? static_cast<double>(put_bytes) : 0.0;
    EXPECT_EQ(put_here + in - out, static_cast<double>(stats[t].used_bytes)) << stats[t].name;
  }
  EXPECT_GT(moved_total, 0u) << "the sequence should have spilled and restored";
  EXPECT_EQ(MetricValue(counters, "dapq_kv_failed_loads_total", {{"cause", "checksum"}}), 0);
}

}  // namespace
}  // namespace dapq::worker::service
