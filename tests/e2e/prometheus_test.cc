// File: tests/e2e/prometheus_test.cc
// Observability end to end: a local cluster (coordinator + two TP=2 groups with small KV tiers)
// scraped by a real Prometheus server (Debian's `prometheus`) loading deploy/prometheus/
// alerts.yml. Traffic compresses, spills and restores; then every PromQL expression of the
// Grafana dashboards must return series with plausible values, every alert rule must load and
// stay quiet on a healthy cluster, and killing a group makes the group-down alert's expression
// fire.
#include <signal.h>
#include <yaml-cpp/yaml.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>
#include <thread>

#include "dapq/v1/batch.grpc.pb.h"
#include "dapq/v1/inference.grpc.pb.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "launcher/child_process.h"
#include "launcher/local_cluster.h"
#include "nlohmann/json.hpp"
#include "tests/util/batch_client.h"
#include "tests/util/run_command.h"
#include "tests/util/test_paths.h"

namespace dapq {
namespace {

std::string Source(const std::string& path) { return std::string(DAPQ_SOURCE_DIR) + "/" + path; }

void CollectExprs(const nlohmann::json& j, std::vector<std::string>& out) {
  if (j.is_object()) {
    for (const auto& [key, value] : j.items()) {
      if (key == "expr" && value.is_string() && !value.get<std::string>().empty()) {
        out.push_back(value.get<std::string>());
      } else {
        CollectExprs(value, out);
      }
    }
  } else if (j.is_array()) {
    for (const auto& v : j) CollectExprs(v, out);
  }
}

std::vector<std::string> DashboardExprs() {
  std::vector<std::string> exprs;
  for (const auto& f : std::filesystem::directory_iterator(Source("deploy/grafana/dashboards"))) {
    if (f.path().extension() != ".json") continue;
    std::ifstream in(f.path());
    CollectExprs(nlohmann::json::parse(in), exprs);
  }
  return exprs;
}

std::map<std::string, std::string> AlertExprs() {
  std::map<std::string, std::string> alerts;
  const YAML::Node root = YAML::LoadFile(Source("deploy/prometheus/alerts.yml"));
  for (const auto& group : root["groups"]) {
    for (const auto& rule : group["rules"]) {
      if (rule["alert"]) alerts[rule["alert"].as<std::string>()] = rule["expr"].as<std::string>();
    }
  }
  return alerts;
}

// Prometheus' HTTP API: an instant query's JSON answer.
nlohmann::json Query(int port, const std::string& expr) {
  std::string quoted;
  for (char c : expr) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  const testing::CommandResult r =
      testing::RunCommand("curl -s --get --data-urlencode 'query=" + quoted +
                              "' http://127.0.0.1:" + std::to_string(port) + "/api/v1/query",
                          /*merge_stderr=*/false);
  return nlohmann::json::parse(r.out, nullptr, false);
}

// Polls an expression until it returns a series with a value > 0 (Prometheus scrapes every
// second) or the deadline passes.
bool WaitPositive(int port, const std::string& expr) {
  for (int i = 0; i < 120; ++i) {
    const nlohmann::json j = Query(port, expr);
    if (j.is_object() && j.value("status", "") == "success") {
      for (const auto& r : j["data"]["result"]) {
        if (std::stod(r["value"][1].get<std::string>()) > 0) return true;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(250));  // next scrape
  }
  return false;
}

TEST(PrometheusTest, DashboardsAndAlertsQueryARealPrometheusScrapingACluster) {
  const std::string dir = testing::MakeTempDir("prometheus_e2e");
  launcher::LocalClusterOptions o;
  o.bin_dir = launcher::ProgramDir() + "/../cli";
  o.model = testing::Stories260KPath();
  o.tokenizer = testing::Tok512Path();
  o.groups = 2;
  o.tp = 2;
  o.work_dir = dir + "/cluster";
  o.heartbeat_ms = 100;
  o.kv_device_kib = 96;
  o.kv_host_kib = 128;
  o.kv_resident_kib = 0;  // sessions come back from the store: restores to chart
  auto cluster = *launcher::LocalCluster::Start(o);
  ASSERT_TRUE(cluster->WaitReady(std::chrono::seconds(60)).ok());

  // Prometheus scraping every process every second, with the alert rules.
  std::string workers;
  for (int g = 0; g < o.groups; ++g) {
    for (int r = 0; r < o.tp; ++r) {
      workers += (workers.empty() ? "'" : ", '") + std::string("127.0.0.1:") +
                 std::to_string(cluster->worker_metrics_port(g, r)) + "'";
    }
  }
  {
    std::ofstream cfg(dir + "/prometheus.yml");
    cfg << "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        << "rule_files:\n  - " << Source("deploy/prometheus/alerts.yml") << "\n"
        << "scrape_configs:\n"
        << "  - job_name: dapq-coordinator\n    static_configs:\n      - targets: ['127.0.0.1:"
        << cluster->coordinator_metrics_port() << "']\n"
        << "  - job_name: dapq-worker\n    static_configs:\n      - targets: [" << workers << "]\n";
  }
  // Prometheus on a free port; another process may take the port between our probe and its
  // bind, so a start that exits is retried on a new port.
  int port = 0;
  std::optional<launcher::ChildProcess> prometheus;
  for (int attempt = 0; attempt < 3 && !prometheus; ++attempt) {
    port = *launcher::FreeLoopbackPort();
    auto started = launcher::ChildProcess::Start(
        {"/usr/bin/prometheus", "--config.file=" + dir + "/prometheus.yml",
         "--storage.tsdb.path=" + dir + "/tsdb",
         "--web.listen-address=127.0.0.1:" + std::to_string(port)},
        dir + "/prometheus.log");
    ASSERT_TRUE(started.ok()) << started.status();
    for (int i = 0; i < 200; ++i) {
      if (!started->running()) break;
      const testing::CommandResult ready = testing::RunCommand(
          "curl -sf http://127.0.0.1:" + std::to_string(port) + "/-/ready", false);
      if (ready.exit_code == 0) {
        prometheus = std::move(*started);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));  // Prometheus starting up
    }
  }
  ASSERT_TRUE(prometheus.has_value())
      << "Prometheus did not start; see " << dir << "/prometheus.log";
  // Every process scraped once before the traffic, so rates see it grow.
  ASSERT_TRUE(WaitPositive(port, "count(up == 1) >= 5")) << "Prometheus did not scrape the cluster";

  // Traffic: compressed requests, sessions that spill to disk and come back, a batch job and a
  // bad request.
  auto channel = grpc::CreateChannel(cluster->address(), grpc::InsecureChannelCredentials());
  auto inference = dapq::v1::Inference::NewStub(channel);
  for (int turn = 0; turn < 3; ++turn) {
    for (int s = 0; s < 6; ++s) {
      dapq::v1::GenerateRequest r;
      r.set_text(turn == 0 ? "Once upon a time, there was a little girl named Lily. She loved to "
                             "play outside in the park with her friends every day"
                           : " Then they went home.");
      r.set_max_new_tokens(24);
      r.set_session_id("s" + std::to_string(s));
      r.mutable_compression()->set_method(s % 2 ? "dapq" : "snapkv");
      r.mutable_compression()->set_budget_tokens(12);
      grpc::ClientContext context;
      dapq::v1::CompleteResponse response;
      ASSERT_TRUE(inference->Complete(&context, r, &response).ok());
    }
  }
  {
    grpc::ClientContext context;
    dapq::v1::GenerateRequest bad;
    dapq::v1::CompleteResponse response;
    EXPECT_FALSE(inference->Complete(&context, bad, &response).ok());
  }
  auto batch = dapq::v1::Batch::NewStub(channel);
  dapq::v1::SubmitBatchRequest submit;
  for (int i = 0; i < 6; ++i) {
    auto* item = submit.add_items();
    item->mutable_token_ids()->add_ids(1);
    item->mutable_token_ids()->add_ids(50 + i);
    item->set_max_new_tokens(16);
  }
  const std::string job = testing::SubmitBatch(*batch, submit);
  ASSERT_FALSE(job.empty());
  ASSERT_TRUE(testing::FollowBatch(*batch, job).status.ok());

  // Wait until Prometheus has scraped the traffic's effects.
  ASSERT_TRUE(WaitPositive(port, "sum(dapq_kv_spill_bytes_total)")) << "no spill scraped";
  ASSERT_TRUE(WaitPositive(port, "sum(dapq_kv_restore_bytes_total)"));
  ASSERT_TRUE(WaitPositive(port, "sum(dapq_coordinator_batch_items{state=\"succeeded\"})"));
  ASSERT_TRUE(WaitPositive(port, "sum(rate(dapq_worker_decode_tokens_total[1m]))"));
  EXPECT_TRUE(WaitPositive(port, "sum(dapq_kv_used_bytes{tier=~\"host|disk\"})"));
  EXPECT_TRUE(WaitPositive(port, "sum(dapq_compression_tokens_evicted_total{method=\"dapq\"})"));

  // Every dashboard expression returns series with finite, non-negative values.
  const std::vector<std::string> exprs = DashboardExprs();
  ASSERT_GT(exprs.size(), 10u);
  for (const std::string& expr : exprs) {
    const nlohmann::json j = Query(port, expr);
    ASSERT_TRUE(j.is_object()) << expr;
    EXPECT_EQ(j.value("status", ""), "success") << expr << ": " << j.dump();
    const auto& result = j["data"]["result"];
    // The local cluster has no remote tier (gRPC peer or Redis) and no etcd (one coordinator,
    // the file rendezvous): their panels stay empty.
    const bool remote_tier = expr.find("tier=\"remote\"") != std::string::npos;
    const bool etcd = expr.find("etcd") != std::string::npos;
    EXPECT_TRUE(!result.empty() || remote_tier || etcd)
        << "no series for dashboard query: " << expr;
    for (const auto& r : result) {
      const std::string v = r["value"][1].get<std::string>();
      if (v == "NaN") continue;  // a quantile or ratio over an idle window
      const double x = std::stod(v);
      EXPECT_TRUE(std::isfinite(x) && x >= 0) << expr << " = " << v;
    }
  }

  // Every alert rule loaded and evaluates; a healthy cluster fires none of them.
  const std::map<std::string, std::string> alerts = AlertExprs();
  ASSERT_GT(alerts.size(), 5u);
  for (const auto& [name, expr] : alerts) {
    const nlohmann::json j = Query(port, expr);
    EXPECT_EQ(j.value("status", ""), "success") << name << ": " << expr;
    EXPECT_TRUE(j["data"]["result"].empty()) << name << " fires on a healthy cluster: " << j.dump();
  }
  const testing::CommandResult rules = testing::RunCommand(
      "curl -s http://127.0.0.1:" + std::to_string(port) + "/api/v1/rules", false);
  const nlohmann::json loaded = nlohmann::json::parse(rules.out, nullptr, false);
  std::set<std::string> loaded_names;
  for (const auto& g : loaded["data"]["groups"]) {
    for (const auto& r : g["rules"]) {
      EXPECT_EQ(r.value("health", ""), "ok") << r.dump();
      loaded_names.insert(r.value("name", ""));
    }
  }
  for (const auto& [name, expr] : alerts) EXPECT_TRUE(loaded_names.count(name)) << name;

  // A group going down: the coordinator's health gauge shows it, the alert's expression fires.
  cluster->worker(1, 1).Signal(SIGKILL);
  cluster->worker(1, 0).Signal(SIGKILL);
  EXPECT_TRUE(WaitPositive(port, "count(dapq_coordinator_group_healthy == 0)"));
  EXPECT_TRUE(WaitPositive(port, "count(up{job=\"dapq-worker\"} == 0)"));
  prometheus->Stop(std::chrono::seconds(10));
}

}  // namespace
}  // namespace dapq
