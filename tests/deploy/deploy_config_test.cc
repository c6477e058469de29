// File: tests/deploy/deploy_config_test.cc
// Checks the files of deploy/ without Docker, Kubernetes, Grafana or a running Prometheus:
//  - Grafana dashboards: every panel has a title, the fixed Prometheus data source (uid
//    "prometheus") and queries; every query reads only contract metrics with their real labels
//    (metric_contract.h), uses no Grafana variables, and parses with promtool; together the
//    dashboards plot every metric of the contract.
//  - Alert rules: severity and annotations on each, the alerts the runbook documents exist and
//    watch the right metrics, the Kubernetes PrometheusRule carries the same groups.
//  - Prometheus scrape configs: jobs, interval, rule file, and targets that match the
//    `dapq serve` port layout and the compose services.
//  - docker-compose.yml: etcd, PostgreSQL, several coordinators sharing them, prometheus,
//    grafana and complete worker groups that find the coordinators and each other through etcd,
//    volumes, env files and no password in a URL.
//  - Kubernetes manifests: required fields of every document, selectors that match template
//    labels, images and commands, GPUs for workers, replicas = --tp, PodDisruptionBudgets that
//    let drains proceed where they can, ServiceMonitor/PodMonitor, the coordinator Deployment
//    with etcd and PostgreSQL, etcd and PostgreSQL StatefulSets, NetworkPolicies, and references
//    between objects (volumes, ConfigMaps, Secrets).
//  - The container scripts: the worker entrypoint's rank and rendezvous rewriting, and the
//    runtime package resolution the Dockerfiles use.
//  - Flags: everything compose and Kubernetes pass to dapq-coordinator and dapq-worker is a flag
//    their mains define.
#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/deploy/metric_contract.h"
#include "tests/util/run_command.h"
#include "tests/util/test_paths.h"
#include "yaml-cpp/yaml.h"

namespace dapq::deploy {
namespace {

namespace fs = std::filesystem;
using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::IsSupersetOf;
using ::testing::Not;
using ::testing::UnorderedElementsAre;
using ::testing::UnorderedElementsAreArray;

fs::path Root() {
  const char* dir = std::getenv("DAPQ_SOURCE_DIR");
  return dir != nullptr ? fs::path(dir) : fs::current_path();
}
fs::path Deploy() { return Root() / "deploy"; }

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << "cannot read " << path;
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::vector<fs::path> FilesIn(const fs::path& dir, const std::string& extension) {
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.is_regular_file() && entry.path().extension() == extension) {
      files.push_back(entry.path());
    }
  }
  std::sort(files.begin(), files.end());
  return files;
}

std::string Str(const YAML::Node& n) {
  return n && n.IsScalar() ? n.as<std::string>() : std::string();
}

// The node with YAML merge keys (<<: *anchor) applied, recursively; yaml-cpp keeps them as
// plain "<<" keys. Keys of the node itself win over merged ones.
YAML::Node Merged(const YAML::Node& n) {
  if (n.IsSequence()) {
    YAML::Node out(YAML::NodeType::Sequence);
    for (const YAML::Node& e : n) out.push_back(Merged(e));
    return out;
  }
  if (!n.IsMap()) return YAML::Clone(n);
  YAML::Node out(YAML::NodeType::Map);
  std::set<std::string> keys;
  for (const auto& kv : n) {
    const std::string key = kv.first.as<std::string>();
    if (key == "<<") continue;
    out[key] = Merged(kv.second);
    keys.insert(key);
  }
  const YAML::Node merge = n["<<"];
  if (merge) {
    std::vector<YAML::Node> sources;
    if (merge.IsSequence()) {
      for (const YAML::Node& m : merge) sources.push_back(Merged(m));
    } else {
      sources.push_back(Merged(merge));
    }
    for (const YAML::Node& source : sources) {
      for (const auto& kv : source) {
        const std::string key = kv.first.as<std::string>();
        if (keys.insert(key).second) out[key] = kv.second;
      }
    }
  }
  return out;
}

// Every label of `selector` (a map) present with the same value in `labels`.
bool SelectorMatches(const YAML::Node& selector, const YAML::Node& labels) {
  if (!selector || !selector.IsMap() || selector.size() == 0 || !labels || !labels.IsMap()) {
    return false;
  }
  for (const auto& kv : selector) {
    const YAML::Node v = labels[kv.first.as<std::string>()];
    if (!v || v.as<std::string>() != kv.second.as<std::string>()) return false;
  }
  return true;
}

// The value after `flag` in an argument list (`--flag value` or `--flag=value`), or "".
std::string FlagValue(const std::vector<std::string>& args, const std::string& flag) {
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == flag && i + 1 < args.size()) return args[i + 1];
    if (absl::StartsWith(args[i], flag + "=")) return args[i].substr(flag.size() + 1);
  }
  return "";
}

std::vector<std::string> StringList(const YAML::Node& n) {
  std::vector<std::string> out;
  if (n && n.IsSequence()) {
    for (const YAML::Node& e : n) out.push_back(e.as<std::string>());
  } else if (n && n.IsScalar()) {
    out = absl::StrSplit(n.as<std::string>(), ' ', absl::SkipEmpty());
  }
  return out;
}

std::string PortOf(const std::string& address) { return address.substr(address.rfind(':') + 1); }
std::string HostOf(const std::string& address) { return address.substr(0, address.rfind(':')); }

// An `etcd://HOST[:PORT][,HOST[:PORT]...][/PREFIX]` URL (the --etcd and --rendezvous flags;
// cluster/etcd_url.h): endpoints get etcd's client port 2379 when they name none, the prefix
// defaults to /dapq. Plaintext only: etcds:// is not implemented.
struct EtcdUrl {
  bool ok = false;
  std::vector<std::string> endpoints;  // HOST:PORT
  std::string prefix;
};
EtcdUrl ParseEtcdUrl(const std::string& url) {
  EtcdUrl out;
  if (!absl::StartsWith(url, "etcd://")) return out;
  const std::string rest = url.substr(7);
  const size_t slash = rest.find('/');
  const std::vector<std::string> endpoints =
      absl::StrSplit(rest.substr(0, slash), ',', absl::SkipEmpty());
  for (const std::string& e : endpoints) {
    out.endpoints.push_back(e.find(':') == std::string::npos ? e + ":2379" : e);
  }
  out.prefix =
      slash == std::string::npos || slash + 1 >= rest.size() ? "/dapq" : rest.substr(slash);
  out.ok = !out.endpoints.empty();
  return out;
}

// A `postgres://USER[:PASSWORD]@HOST:PORT/DB` URL (--batch_store).
struct PostgresUrl {
  bool ok = false, has_password = false;
  std::string user, host_port, db;
};
PostgresUrl ParsePostgresUrl(const std::string& url) {
  PostgresUrl out;
  std::string rest;
  if (absl::StartsWith(url, "postgres://")) rest = url.substr(11);
  if (absl::StartsWith(url, "postgresql://")) rest = url.substr(13);
  const size_t at = rest.find('@'), slash = rest.find('/');
  if (at == std::string::npos || slash == std::string::npos || slash < at) return out;
  const std::string userinfo = rest.substr(0, at);
  out.has_password = userinfo.find(':') != std::string::npos;
  out.user = userinfo.substr(0, userinfo.find(':'));
  out.host_port = rest.substr(at + 1, slash - at - 1);
  out.db = rest.substr(slash + 1);
  out.ok = !out.user.empty() && !out.db.empty() && out.host_port.find(':') != std::string::npos;
  return out;
}

// A compose value with its `${VAR:-default}` references replaced by their defaults.
std::string ComposeDefaults(const std::string& value) {
  static const std::regex var_re("\\$\\{[A-Za-z_][A-Za-z0-9_]*:?-([^}]*)\\}");
  return std::regex_replace(value, var_re, "$1");
}

// ---------------------------------------------------------------- Grafana dashboards

struct Panel {
  std::string dashboard;
  nlohmann::json json;
};

std::vector<Panel> AllPanels() {
  std::vector<Panel> panels;
  for (const fs::path& file : FilesIn(Deploy() / "grafana/dashboards", ".json")) {
    std::ifstream in(file);
    const nlohmann::json d = nlohmann::json::parse(in);
    const nlohmann::json top = d.value("panels", nlohmann::json::array());
    std::vector<nlohmann::json> stack(top.begin(), top.end());
    while (!stack.empty()) {
      nlohmann::json p = stack.back();
      stack.pop_back();
      if (p.contains("panels")) {
        for (const auto& inner : p["panels"]) stack.push_back(inner);
      }
      if (p.value("type", "") == "row") continue;
      panels.push_back({file.filename().string(), p});
    }
  }
  return panels;
}

std::vector<std::string> DashboardQueries() {
  std::vector<std::string> exprs;
  for (const Panel& p : AllPanels()) {
    for (const auto& t : p.json.value("targets", nlohmann::json::array())) {
      exprs.push_back(t.value("expr", ""));
    }
  }
  return exprs;
}

TEST(DeployDashboardsTest, BothDashboardsExistAndAreCurrentGrafanaJson) {
  const std::vector<fs::path> files = FilesIn(Deploy() / "grafana/dashboards", ".json");
  std::set<std::string> names, uids;
  for (const fs::path& f : files) {
    names.insert(f.filename().string());
    std::ifstream in(f);
    const nlohmann::json d = nlohmann::json::parse(in);
    EXPECT_FALSE(d.value("title", "").empty()) << f;
    EXPECT_TRUE(uids.insert(d.value("uid", "")).second) << f << ": duplicate or missing uid";
    EXPECT_GE(d.value("schemaVersion", 0), 37) << f;
    // Provisioned dashboards must not carry a database id.
    EXPECT_TRUE(!d.contains("id") || d["id"].is_null()) << f;
    std::set<int> ids;
    for (const auto& p : d["panels"]) {
      EXPECT_TRUE(ids.insert(p.value("id", -1)).second) << f << ": duplicate panel id";
      const auto& g = p["gridPos"];
      EXPECT_GT(g.value("w", 0), 0) << f << " " << p.value("title", "");
      EXPECT_LE(g.value("x", 0) + g.value("w", 0), 24) << f << " " << p.value("title", "");
    }
  }
  EXPECT_THAT(names, IsSupersetOf({"dapq-cache.json", "dapq-service.json"}));
}

TEST(DeployDashboardsTest, EveryPanelHasTitleDatasourceAndQueries) {
  const std::vector<Panel> panels = AllPanels();
  ASSERT_GT(panels.size(), 20u);
  for (const Panel& p : panels) {
    const std::string where = absl::StrCat(p.dashboard, " panel ", p.json.value("id", -1), " '",
                                           p.json.value("title", ""), "'");
    EXPECT_FALSE(p.json.value("title", "").empty()) << where;
    ASSERT_TRUE(p.json.contains("datasource")) << where;
    EXPECT_EQ(p.json["datasource"].value("uid", ""), "prometheus") << where;
    EXPECT_EQ(p.json["datasource"].value("type", ""), "prometheus") << where;
    ASSERT_TRUE(p.json.contains("targets") && p.json["targets"].is_array()) << where;
    ASSERT_FALSE(p.json["targets"].empty()) << where;
    std::set<std::string> ref_ids;
    for (const auto& t : p.json["targets"]) {
      EXPECT_FALSE(t.value("expr", "").empty()) << where;
      EXPECT_TRUE(ref_ids.insert(t.value("refId", "")).second) << where << ": duplicate refId";
      if (t.contains("datasource")) {
        EXPECT_EQ(t["datasource"].value("uid", ""), "prometheus") << where;
      }
    }
  }
}

TEST(DeployDashboardsTest, QueriesReadOnlyContractMetricsWithTheirLabels) {
  for (const std::string& expr : DashboardQueries()) {
    const QueryRefs refs = CheckQuery(expr);
    EXPECT_THAT(refs.errors, IsEmpty()) << expr;
  }
}

TEST(DeployDashboardsTest, TogetherPlotEveryContractMetric) {
  std::set<std::string> plotted;
  for (const std::string& expr : DashboardQueries()) {
    const QueryRefs refs = CheckQuery(expr);
    plotted.insert(refs.metrics.begin(), refs.metrics.end());
  }
  for (const MetricSpec& m : MetricContract()) {
    EXPECT_THAT(plotted, Contains(m.name)) << "no dashboard shows " << m.name;
  }
}

TEST(DeployDashboardsTest, CacheDashboardShowsTiersPerWorkerWithCapacities) {
  std::ifstream in(Deploy() / "grafana/dashboards/dapq-cache.json");
  const std::string text = nlohmann::json::parse(in).dump();
  for (const char* tier : {"device", "host", "disk", "remote"}) {
    EXPECT_THAT(text, HasSubstr(absl::StrCat("dapq_kv_used_bytes{tier=\\\"", tier, "\\\"}")));
    EXPECT_THAT(text, HasSubstr(absl::StrCat("dapq_kv_capacity_bytes{tier=\\\"", tier, "\\\"}")));
  }
  EXPECT_THAT(text, HasSubstr("sum by (group, rank) (dapq_kv_used_bytes"));
  EXPECT_THAT(text, HasSubstr("sum by (from, to) (rate(dapq_kv_spill_bytes_total[1m]))"));
  EXPECT_THAT(text, HasSubstr("sum by (from, to) (rate(dapq_kv_restore_bytes_total[1m]))"));
  EXPECT_THAT(text, HasSubstr("dapq_kv_failed_loads_total"));
}

TEST(DeployDashboardsTest, ServiceDashboardShowsLatencyQuantiles) {
  std::ifstream in(Deploy() / "grafana/dashboards/dapq-service.json");
  const std::string text = nlohmann::json::parse(in).dump();
  for (const char* q : {"0.5", "0.99"}) {
    for (const char* h : {"dapq_coordinator_ttft_seconds_bucket", "dapq_worker_ttft_seconds_bucket",
                          "dapq_worker_time_per_output_token_seconds_bucket"}) {
      EXPECT_THAT(text, HasSubstr(absl::StrCat("histogram_quantile(", q, ", sum by (le"))) << h;
      EXPECT_THAT(text, HasSubstr(h));
    }
  }
}

// Runs every dashboard query through Prometheus' own parser: promtool checks a rules file in
// which each query is a recording rule.
TEST(DeployDashboardsTest, QueriesParseWithPromtool) {
  const std::string dir = testing::MakeTempDir("dashboard_queries");
  YAML::Emitter e;
  e << YAML::BeginMap << YAML::Key << "groups" << YAML::Value << YAML::BeginSeq << YAML::BeginMap
    << YAML::Key << "name" << YAML::Value << "dashboard_queries" << YAML::Key << "rules"
    << YAML::Value << YAML::BeginSeq;
  int n = 0;
  for (const std::string& expr : DashboardQueries()) {
    e << YAML::BeginMap << YAML::Key << "record" << YAML::Value
      << absl::StrCat("dashboard:query_", n++) << YAML::Key << "expr" << YAML::Value << expr
      << YAML::EndMap;
  }
  e << YAML::EndSeq << YAML::EndMap << YAML::EndSeq << YAML::EndMap;
  const std::string rules = dir + "/queries.yml";
  std::ofstream(rules) << e.c_str() << "\n";
  const testing::CommandResult r =
      testing::RunCommand(absl::StrCat(DAPQ_PROMTOOL, " check rules ", rules));
  EXPECT_EQ(r.exit_code, 0) << "promtool (scripts/setup.sh installs it):\n" << r.out;
  EXPECT_THAT(r.out, HasSubstr(absl::StrCat(n, " rules found")));
}

TEST(DeployGrafanaProvisioningTest, DatasourceUidAndDashboardPathMatchTheRest) {
  const YAML::Node ds =
      YAML::LoadFile((Deploy() / "grafana/provisioning/datasources/prometheus.yml").string());
  ASSERT_EQ(ds["datasources"].size(), 1u);
  EXPECT_EQ(Str(ds["datasources"][0]["uid"]), "prometheus");
  EXPECT_EQ(Str(ds["datasources"][0]["type"]), "prometheus");
  EXPECT_FALSE(Str(ds["datasources"][0]["url"]).empty());
  const YAML::Node dash =
      YAML::LoadFile((Deploy() / "grafana/provisioning/dashboards/dapq.yml").string());
  const std::string path = Str(dash["providers"][0]["options"]["path"]);
  EXPECT_FALSE(path.empty());
  // docker-compose.yml mounts the dashboards directory at that path.
  const YAML::Node compose = Merged(YAML::LoadFile((Deploy() / "docker/docker-compose.yml")));
  EXPECT_THAT(StringList(compose["services"]["grafana"]["volumes"]),
              Contains(absl::StrCat("../grafana/dashboards:", path, ":ro")));
}

// ---------------------------------------------------------------- Prometheus and alerts

YAML::Node Alerts() { return YAML::LoadFile((Deploy() / "prometheus/alerts.yml").string()); }

std::map<std::string, YAML::Node> AlertsByName() {
  std::map<std::string, YAML::Node> out;
  for (const YAML::Node& group : Alerts()["groups"]) {
    for (const YAML::Node& rule : group["rules"]) {
      const std::string name = Str(rule["alert"]);
      EXPECT_FALSE(name.empty()) << "a rule without `alert` (recording rules belong elsewhere)";
      EXPECT_TRUE(out.emplace(name, rule).second) << "duplicate alert " << name;
    }
  }
  return out;
}

TEST(DeployAlertsTest, EveryAlertHasSeverityAnnotationsAndARunbookEntry) {
  const std::string readme = ReadFile(Deploy() / "README.md");
  const auto alerts = AlertsByName();
  ASSERT_FALSE(alerts.empty());
  for (const auto& [name, rule] : alerts) {
    EXPECT_THAT((std::set<std::string>{"critical", "warning"}),
                Contains(Str(rule["labels"]["severity"])))
        << name;
    EXPECT_FALSE(Str(rule["annotations"]["summary"]).empty()) << name;
    EXPECT_FALSE(Str(rule["annotations"]["description"]).empty()) << name;
    EXPECT_EQ(Str(rule["annotations"]["runbook"]),
              absl::StrCat("deploy/README.md#", absl::AsciiStrToLower(name)))
        << name;
    EXPECT_THAT(readme, HasSubstr(absl::StrCat("### ", name, "\n"))) << name;
    const QueryRefs refs = CheckQuery(Str(rule["expr"]));
    EXPECT_THAT(refs.errors, IsEmpty()) << name;
  }
}

TEST(DeployAlertsTest, CoverTheFailureModesTheRunbookNames) {
  const auto alerts = AlertsByName();
  auto metrics = [&](const std::string& name) {
    const auto it = alerts.find(name);
    if (it == alerts.end()) {
      ADD_FAILURE() << "missing alert " << name;
      return std::set<std::string>();
    }
    return CheckQuery(Str(it->second["expr"])).metrics;
  };
  auto for_duration = [&](const std::string& name) {
    const auto it = alerts.find(name);
    return it == alerts.end() ? std::string() : Str(it->second["for"]);
  };
  EXPECT_THAT(metrics("DapqKvTierAboveHighWatermark"),
              UnorderedElementsAre("dapq_kv_used_bytes", "dapq_kv_high_watermark_bytes"));
  EXPECT_EQ(for_duration("DapqKvTierAboveHighWatermark"), "2m");
  EXPECT_THAT(metrics("DapqKvSpillFailures"), Contains("dapq_kv_spill_failures_total"));
  EXPECT_THAT(metrics("DapqKvFailedLoads"), Contains("dapq_kv_failed_loads_total"));
  EXPECT_THAT(metrics("DapqKvChecksumFailures"), Contains("dapq_kv_failed_loads_total"));
  EXPECT_THAT(metrics("DapqWorkerGroupDown"), Contains("dapq_coordinator_group_healthy"));
  EXPECT_EQ(for_duration("DapqWorkerGroupDown"), "1m");
  EXPECT_THAT(metrics("DapqWorkerDown"), Contains("up"));
  EXPECT_THAT(metrics("DapqQueueSaturated"),
              IsSupersetOf({"dapq_coordinator_in_flight", "dapq_coordinator_queue_capacity"}));
  EXPECT_EQ(for_duration("DapqQueueSaturated"), "2m");
  EXPECT_THAT(metrics("DapqRequestsRejected"), Contains("dapq_coordinator_rejections_total"));
  EXPECT_THAT(metrics("DapqBatchItemsFailing"),
              Contains("dapq_coordinator_batch_item_failures_total"));
  // Several coordinators sharing etcd and PostgreSQL.
  EXPECT_THAT(metrics("DapqEtcdDown"), ElementsAre("dapq_coordinator_etcd_up"));
  EXPECT_EQ(for_duration("DapqEtcdDown"), "1m");
  EXPECT_THAT(metrics("DapqEtcdLeaseLost"), ElementsAre("dapq_worker_etcd_lease_lost_total"));
  EXPECT_THAT(metrics("DapqCoordinatorReplicasLow"),
              UnorderedElementsAre("up", "dapq_coordinator_etcd_up"));
  EXPECT_THAT(metrics("DapqBatchStoreErrors"),
              ElementsAre("dapq_coordinator_batch_store_errors_total"));
  EXPECT_EQ(for_duration("DapqBatchStoreErrors"), "5m");
}

TEST(DeployAlertsTest, KubernetesPrometheusRuleCarriesTheSameGroups) {
  const YAML::Node rule = YAML::LoadFile((Deploy() / "k8s/prometheus-rules.yaml").string());
  EXPECT_EQ(Str(rule["kind"]), "PrometheusRule");
  YAML::Emitter from_alerts, from_k8s;
  from_alerts << Alerts()["groups"];
  from_k8s << rule["spec"]["groups"];
  EXPECT_EQ(std::string(from_k8s.c_str()), std::string(from_alerts.c_str()))
      << "regenerate deploy/k8s/prometheus-rules.yaml from alerts.yml (see its header)";
}

struct ScrapeConfig {
  std::map<std::string, std::vector<std::string>> targets;  // job -> targets
};

ScrapeConfig LoadScrapeConfig(const std::string& file) {
  const YAML::Node c = YAML::LoadFile((Deploy() / "prometheus" / file).string());
  EXPECT_EQ(Str(c["global"]["scrape_interval"]), "5s") << file;
  EXPECT_THAT(StringList(c["rule_files"]), Contains("alerts.yml")) << file;
  ScrapeConfig out;
  for (const YAML::Node& job : c["scrape_configs"]) {
    std::vector<std::string>& t = out.targets[Str(job["job_name"])];
    for (const YAML::Node& s : job["static_configs"]) {
      for (const std::string& target : StringList(s["targets"])) t.push_back(target);
    }
  }
  return out;
}

TEST(DeployPrometheusConfigTest, LocalTargetsFollowTheDapqServePortLayout) {
  const ScrapeConfig c = LoadScrapeConfig("prometheus.yml");
  ASSERT_EQ(c.targets.size(), 2u);
  EXPECT_THAT(c.targets.at("dapq-coordinator"), UnorderedElementsAre("127.0.0.1:9400"));
  // `dapq serve --groups 2 --tp 2`: 9401.. in the order g0r0, g0r1, g1r0, g1r1.
  EXPECT_THAT(c.targets.at("dapq-worker"),
              ElementsAre("127.0.0.1:9401", "127.0.0.1:9402", "127.0.0.1:9403", "127.0.0.1:9404"));
}

// ---------------------------------------------------------------- docker-compose

struct ComposeWorker {
  std::string service, group;
  int rank = -1, tp = -1;
  std::string metrics_port;
};

YAML::Node Compose() { return Merged(YAML::LoadFile((Deploy() / "docker/docker-compose.yml"))); }

std::vector<ComposeWorker> ComposeWorkers(const YAML::Node& compose) {
  std::vector<ComposeWorker> workers;
  for (const auto& kv : compose["services"]) {
    const YAML::Node s = kv.second;
    const std::vector<std::string> entrypoint = StringList(s["entrypoint"]);
    const std::vector<std::string> command = StringList(s["command"]);
    const bool is_worker = (!entrypoint.empty() && entrypoint[0] == "dapq-worker-entrypoint") ||
                           (!command.empty() && command[0] == "dapq-worker");
    if (!is_worker) continue;
    ComposeWorker w;
    w.service = kv.first.as<std::string>();
    w.group = FlagValue(command, "--group_id");
    w.rank = std::atoi(FlagValue(command, "--rank").c_str());
    w.tp = std::atoi(FlagValue(command, "--tp").c_str());
    w.metrics_port = PortOf(FlagValue(command, "--metrics_listen"));
    EXPECT_FALSE(w.group.empty()) << w.service;
    EXPECT_FALSE(w.metrics_port.empty()) << w.service << ": no --metrics_listen";
    // Workers find the coordinators in etcd, or are given one: its internal port, never the
    // public one.
    const std::string etcd = FlagValue(command, "--etcd");
    const std::string coordinator = FlagValue(command, "--coordinator");
    EXPECT_TRUE(!etcd.empty() || !coordinator.empty()) << w.service << ": finds no coordinator";
    if (!etcd.empty()) {
      EXPECT_TRUE(ParseEtcdUrl(etcd).ok) << w.service << ": --etcd " << etcd;
    }
    if (!coordinator.empty()) {
      EXPECT_EQ(PortOf(coordinator), "50052") << w.service;
    }
    EXPECT_EQ(FlagValue(command, "--advertise_host"), w.service) << w.service;
    EXPECT_EQ(FlagValue(command, "--gloo_host"), w.service) << w.service;
    // The ranks of a group meet through etcd, or through a directory on a volume they share.
    std::string rendezvous = FlagValue(command, "--rendezvous");
    if (rendezvous.empty()) rendezvous = FlagValue(command, "--rendezvous_dir");
    if (w.tp > 1 && !(rendezvous.empty() && !etcd.empty())) {
      if (absl::StartsWith(rendezvous, "etcd://")) {
        EXPECT_TRUE(ParseEtcdUrl(rendezvous).ok) << w.service << ": --rendezvous " << rendezvous;
      } else {
        EXPECT_FALSE(rendezvous.empty()) << w.service << ": no rendezvous for --tp " << w.tp;
        EXPECT_THAT(StringList(s["volumes"]), Contains(::testing::EndsWith(":" + rendezvous)))
            << w.service << ": the ranks of a group share the rendezvous volume";
      }
    }
    if (!FlagValue(command, "--kv_dir").empty()) {
      EXPECT_THAT(StringList(s["volumes"]),
                  Contains(::testing::EndsWith(absl::StrCat(":", FlagValue(command, "--kv_dir")))))
          << w.service;
    }
    EXPECT_THAT(StringList(s["ports"]), Contains(absl::StrCat(w.metrics_port, ":", w.metrics_port)))
        << w.service;
    workers.push_back(w);
  }
  return workers;
}

TEST(DeployComposeTest, HasCoordinatorMonitoringAndCompleteWorkerGroups) {
  const YAML::Node compose = Compose();
  for (const char* s : {"coordinator", "prometheus", "grafana"}) {
    EXPECT_TRUE(compose["services"][s]) << "service " << s;
  }
  const std::vector<ComposeWorker> workers = ComposeWorkers(compose);
  EXPECT_GE(workers.size(), 2u);
  std::map<std::string, std::set<int>> ranks;
  std::map<std::string, int> tp;
  std::set<std::string> metrics_ports;
  for (const ComposeWorker& w : workers) {
    EXPECT_TRUE(ranks[w.group].insert(w.rank).second)
        << "two services for " << w.group << " rank " << w.rank;
    if (tp.count(w.group)) {
      EXPECT_EQ(tp[w.group], w.tp) << w.service;
    }
    tp[w.group] = w.tp;
    EXPECT_TRUE(metrics_ports.insert(w.metrics_port).second) << w.service;
  }
  EXPECT_GE(ranks.size(), 2u) << "two worker groups";
  for (const auto& [group, r] : ranks) {
    std::set<int> expected;
    for (int i = 0; i < tp[group]; ++i) expected.insert(i);
    EXPECT_EQ(r, expected) << "group " << group << " must have ranks 0.." << tp[group] - 1;
  }
  const std::vector<std::string> coordinator =
      StringList(compose["services"]["coordinator"]["command"]);
  EXPECT_EQ(coordinator.at(0), "dapq-coordinator");
  EXPECT_EQ(PortOf(FlagValue(coordinator, "--metrics_listen")), "9400");
  EXPECT_EQ(FlagValue(coordinator, "--listen"), "0.0.0.0:50051");
  EXPECT_EQ(FlagValue(coordinator, "--internal_listen"), "0.0.0.0:50052");
  EXPECT_FALSE(FlagValue(coordinator, "--auth_token_file").empty());
  EXPECT_TRUE(!FlagValue(coordinator, "--db").empty() ||
              !FlagValue(coordinator, "--batch_store").empty());
}

// The services running dapq-coordinator.
std::vector<std::string> ComposeCoordinators(const YAML::Node& compose) {
  std::vector<std::string> out;
  for (const auto& kv : compose["services"]) {
    const std::vector<std::string> command = StringList(kv.second["command"]);
    if (!command.empty() && command[0] == "dapq-coordinator") {
      out.push_back(kv.first.as<std::string>());
    }
  }
  return out;
}

std::vector<std::string> EnvFiles(const YAML::Node& service) {
  std::vector<std::string> files;
  for (const std::string& f : StringList(service["env_file"])) {
    files.push_back(ComposeDefaults(f));
  }
  return files;
}

// Several coordinators: they share etcd (discovery) and PostgreSQL (batch jobs), each advertises
// its own internal address, the workers use the same etcd, the password stays out of URLs and
// out of the compose file, and one published port leads to every coordinator.
TEST(DeployComposeTest, SeveralCoordinatorsShareEtcdAndPostgres) {
  const YAML::Node compose = Compose();
  const YAML::Node services = compose["services"];
  const std::vector<std::string> coordinators = ComposeCoordinators(compose);
  ASSERT_GE(coordinators.size(), 2u);

  ASSERT_TRUE(services["etcd"]);
  EXPECT_THAT(Str(services["etcd"]["image"]), HasSubstr("etcd:v3."));
  EXPECT_THAT(StringList(services["etcd"]["healthcheck"]["test"]), Contains("etcdctl"));
  EXPECT_THAT(StringList(services["etcd"]["volumes"]), Not(IsEmpty()));
  EXPECT_FALSE(services["etcd"]["ports"]) << "etcd is plaintext: keep it off the host";
  ASSERT_TRUE(services["postgres"]);
  EXPECT_TRUE(absl::StartsWith(Str(services["postgres"]["image"]), "postgres:"));
  EXPECT_THAT(StringList(services["postgres"]["healthcheck"]["test"]), Contains("pg_isready"));
  EXPECT_THAT(StringList(services["postgres"]["volumes"]), Not(IsEmpty()));
  EXPECT_FALSE(services["postgres"]["environment"]["POSTGRES_PASSWORD"])
      << "the password comes from an env file, not the compose file";

  std::set<std::string> etcd_urls, batch_stores, advertised;
  for (const std::string& name : coordinators) {
    const YAML::Node s = services[name];
    const std::vector<std::string> c = StringList(s["command"]);
    EXPECT_EQ(FlagValue(c, "--listen"), "0.0.0.0:50051") << name;
    EXPECT_EQ(FlagValue(c, "--internal_listen"), "0.0.0.0:50052") << name;
    // Where workers reach this coordinator: its own service name, not 0.0.0.0.
    EXPECT_EQ(FlagValue(c, "--advertise_internal"), name + ":50052") << name;
    advertised.insert(FlagValue(c, "--advertise_internal"));
    const EtcdUrl etcd = ParseEtcdUrl(FlagValue(c, "--etcd"));
    EXPECT_TRUE(etcd.ok) << name << ": --etcd";
    for (const std::string& e : etcd.endpoints) {
      EXPECT_TRUE(services[HostOf(e)]) << name << ": etcd endpoint " << e << " is no service";
    }
    etcd_urls.insert(FlagValue(c, "--etcd"));
    EXPECT_TRUE(FlagValue(c, "--db").empty()) << name << ": SQLite is one coordinator's";
    const PostgresUrl pg = ParsePostgresUrl(FlagValue(c, "--batch_store"));
    EXPECT_TRUE(pg.ok) << name << ": --batch_store " << FlagValue(c, "--batch_store");
    EXPECT_FALSE(pg.has_password) << name << ": the password belongs in PGPASSWORD";
    EXPECT_EQ(HostOf(pg.host_port), "postgres") << name;
    batch_stores.insert(FlagValue(c, "--batch_store"));
    // PGPASSWORD from an env file (a placeholder committed, like tokens.example).
    bool pgpassword = false;
    for (const std::string& f : EnvFiles(s)) {
      pgpassword |= absl::StrContains(ReadFile(Deploy() / "docker" / f), "\nPGPASSWORD=");
    }
    EXPECT_TRUE(pgpassword) << name << ": PGPASSWORD from env_file";
    for (const char* dep : {"etcd", "postgres"}) {
      EXPECT_EQ(Str(s["depends_on"][dep]["condition"]), "service_healthy") << name << " " << dep;
    }
  }
  EXPECT_EQ(etcd_urls.size(), 1u) << "the coordinators share one etcd prefix";
  EXPECT_EQ(batch_stores.size(), 1u) << "the coordinators share one batch store";
  EXPECT_EQ(advertised.size(), coordinators.size());
  bool postgres_password = false;
  for (const std::string& f : EnvFiles(services["postgres"])) {
    postgres_password |=
        absl::StrContains(ReadFile(Deploy() / "docker" / f), "\nPOSTGRES_PASSWORD=");
  }
  EXPECT_TRUE(postgres_password);

  // Workers: the coordinators' etcd; ranks of a group meet there, no shared volume.
  for (const ComposeWorker& w : ComposeWorkers(compose)) {
    const std::vector<std::string> c = StringList(services[w.service]["command"]);
    EXPECT_THAT(etcd_urls, Contains(FlagValue(c, "--etcd"))) << w.service;
    EXPECT_TRUE(absl::StartsWith(FlagValue(c, "--rendezvous"), "etcd://")) << w.service;
    EXPECT_TRUE(FlagValue(c, "--rendezvous_dir").empty()) << w.service;
  }

  // The public ports: published once, by a load balancer in front of every coordinator.
  std::vector<std::string> publishers;
  for (const auto& kv : services) {
    const std::vector<std::string> ports = StringList(kv.second["ports"]);
    if (std::find(ports.begin(), ports.end(), "50051:50051") != ports.end()) {
      publishers.push_back(kv.first.as<std::string>());
    }
  }
  ASSERT_EQ(publishers.size(), 1u);
  const YAML::Node lb = services[publishers[0]];
  EXPECT_THAT(StringList(lb["ports"]), Contains("8000:8000"));
  ASSERT_TRUE(absl::StartsWith(Str(lb["image"]), "haproxy:")) << publishers[0];
  std::string cfg;
  for (const std::string& v : StringList(lb["volumes"])) {
    if (absl::StrContains(v, ":/usr/local/etc/haproxy/haproxy.cfg")) {
      cfg = ReadFile(Deploy() / "docker" / v.substr(0, v.find(':')));
    }
  }
  for (const std::string& name : coordinators) {
    EXPECT_THAT(cfg, HasSubstr(absl::StrCat(" ", name, ":50051 check"))) << name;
    EXPECT_THAT(cfg, HasSubstr(absl::StrCat(" ", name, ":8000 check"))) << name;
  }
}

TEST(DeployComposeTest, PrometheusScrapesEveryComposeProcess) {
  const YAML::Node compose = Compose();
  const ScrapeConfig c = LoadScrapeConfig("prometheus-compose.yml");
  std::vector<std::string> expected;
  for (const ComposeWorker& w : ComposeWorkers(compose)) {
    expected.push_back(absl::StrCat(w.service, ":", w.metrics_port));
  }
  EXPECT_THAT(c.targets.at("dapq-worker"), UnorderedElementsAreArray(expected));
  std::vector<std::string> coordinators;
  for (const std::string& name : ComposeCoordinators(compose)) {
    const std::vector<std::string> command = StringList(compose["services"][name]["command"]);
    coordinators.push_back(absl::StrCat(name, ":", PortOf(FlagValue(command, "--metrics_listen"))));
  }
  EXPECT_THAT(c.targets.at("dapq-coordinator"), UnorderedElementsAreArray(coordinators));
  const std::vector<std::string> prometheus =
      StringList(compose["services"]["prometheus"]["command"]);
  EXPECT_THAT(prometheus, Contains("--config.file=/etc/prometheus/prometheus-compose.yml"));
  EXPECT_THAT(StringList(compose["services"]["prometheus"]["volumes"]),
              Contains("../prometheus:/etc/prometheus:ro"));
}

TEST(DeployComposeTest, VolumesAndBuildFilesExist) {
  const YAML::Node compose = Compose();
  std::set<std::string> declared;
  for (const auto& kv : compose["volumes"]) declared.insert(kv.first.as<std::string>());
  for (const auto& kv : compose["services"]) {
    const std::string service = kv.first.as<std::string>();
    for (const std::string& v : StringList(kv.second["volumes"])) {
      const std::string source = v.substr(0, v.find(':'));
      if (absl::StrContains(source, "$")) continue;  // set from the environment
      if (absl::StartsWith(source, ".") || absl::StartsWith(source, "/")) {
        EXPECT_TRUE(fs::exists(Deploy() / "docker" / source)) << service << ": " << source;
      } else {
        EXPECT_TRUE(declared.count(source)) << service << ": undeclared volume " << source;
      }
    }
    for (const std::string& f : EnvFiles(kv.second)) {
      EXPECT_TRUE(fs::exists(Deploy() / "docker" / f)) << service << ": env_file " << f;
    }
    if (kv.second["build"]) {
      const fs::path context = Deploy() / "docker" / Str(kv.second["build"]["context"]);
      EXPECT_TRUE(fs::exists(context / Str(kv.second["build"]["dockerfile"]))) << service;
    }
  }
}

// ---------------------------------------------------------------- Dockerfiles and scripts

TEST(DeployDockerfilesTest, BuildWithTheProjectScriptsAndShipTheEntrypoint) {
  const std::string cpu = ReadFile(Deploy() / "docker/Dockerfile.cpu");
  EXPECT_THAT(cpu, HasSubstr("ARG BUILD_IMAGE=debian:12\n"));
  EXPECT_THAT(cpu, HasSubstr("bash scripts/setup.sh"));
  EXPECT_THAT(cpu, HasSubstr("bash scripts/build.sh cpu"));
  const std::string cuda = ReadFile(Deploy() / "docker/Dockerfile.cuda");
  EXPECT_THAT(cuda, HasSubstr("FROM nvidia/cuda:${CUDA_VERSION}-devel-"));
  EXPECT_THAT(cuda, HasSubstr("FROM nvidia/cuda:${CUDA_VERSION}-runtime-"));
  EXPECT_THAT(cuda, HasSubstr("bash scripts/build.sh cuda"));
  for (const std::string* d : {&cpu, &cuda}) {
    EXPECT_THAT(*d, HasSubstr("deploy/docker/runtime-packages.sh"));
    EXPECT_THAT(*d, HasSubstr("/usr/local/bin/dapq-worker-entrypoint"));
    for (const char* binary : {"cli/dapq ", "cli/dapq-coordinator ", "cli/dapq-worker "}) {
      EXPECT_THAT(*d, HasSubstr(binary));
    }
  }
  EXPECT_TRUE(fs::exists(Deploy() / "docker/Dockerfile.cpu.dockerignore"));
  EXPECT_TRUE(fs::exists(Deploy() / "docker/Dockerfile.cuda.dockerignore"));
}

TEST(DeployDockerScriptsTest, RuntimePackagesNamesTheOwnersOfLinkedLibraries) {
  const testing::CommandResult r =
      testing::RunCommand("bash " + (Deploy() / "docker/runtime-packages.sh").string() + " /bin/ls",
                          /*merge_stderr=*/false);
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const std::vector<std::string> packages = absl::StrSplit(r.out, '\n', absl::SkipEmpty());
  EXPECT_THAT(packages, Contains("libc6"));
  for (const std::string& p : packages) EXPECT_THAT(p, Not(HasSubstr(":"))) << p;
}

class DeployWorkerEntrypointTest : public ::testing::Test {
 protected:
  // Runs the entrypoint with `echo` in place of dapq-worker: the output is the rewritten flags.
  testing::CommandResult Run(const std::string& env, const std::string& flags) {
    return testing::RunCommand(
        absl::StrCat("DAPQ_WORKER_BIN=echo DAPQ_RENDEZVOUS_WAIT_S=1 ", env, " bash ",
                     (Deploy() / "docker/dapq-worker-entrypoint.sh").string(), " ", flags),
        /*merge_stderr=*/false);
  }
  const std::string dir_ = testing::MakeTempDir("entrypoint");
};

TEST_F(DeployWorkerEntrypointTest, GivesEachStartOfAGroupAFreshRendezvousDirectory) {
  const std::string flags =
      absl::StrCat("--tp 2 --rank auto --group_id g0 --rendezvous_dir ", dir_, " --x y");
  // Rank 1 before rank 0 started the group: waits, then gives up (DAPQ_RENDEZVOUS_WAIT_S=1).
  EXPECT_EQ(Run("POD_NAME=dapq-worker-g0-1", flags).exit_code, 1);

  const testing::CommandResult rank0 = Run("POD_NAME=dapq-worker-g0-0", flags);
  ASSERT_EQ(rank0.exit_code, 0);
  const std::regex gen_re("--rendezvous_dir (" + dir_ + "/g0/gen-[0-9a-z-]+) --x y\n");
  std::smatch m;
  ASSERT_TRUE(std::regex_search(rank0.out, m, gen_re)) << rank0.out;
  const std::string generation = m[1];
  EXPECT_THAT(rank0.out, HasSubstr("--tp 2 --rank 0 --group_id g0"));

  const testing::CommandResult rank1 = Run("POD_NAME=dapq-worker-g0-1", flags);
  ASSERT_EQ(rank1.exit_code, 0);
  EXPECT_EQ(rank1.out, absl::StrCat("--tp 2 --rank 1 --group_id g0 --rendezvous_dir ", generation,
                                    " --x y\n"));
  // Rank 1 never joins the same generation twice: a restarted rank waits for a new one.
  EXPECT_EQ(Run("POD_NAME=dapq-worker-g0-1", flags).exit_code, 1);

  // A restart of rank 0 starts a new generation and removes the old one.
  const testing::CommandResult again = Run("", absl::StrCat("--tp=2 --rank=0 --group_id=g0 "
                                                            "--rendezvous_dir=",
                                                            dir_));
  ASSERT_EQ(again.exit_code, 0);
  EXPECT_THAT(again.out, Not(HasSubstr(generation)));
  EXPECT_FALSE(fs::exists(generation));
  const testing::CommandResult rank1_again =
      Run("", absl::StrCat("--tp 2 --rank 1 --group_id g0 --rendezvous_dir ", dir_));
  ASSERT_EQ(rank1_again.exit_code, 0);
  EXPECT_THAT(again.out, HasSubstr(rank1_again.out.substr(rank1_again.out.find(dir_))));
}

// --rendezvous takes an etcd URL (passed on as it is: the worker separates the starts of a group
// in etcd) or a directory (rewritten like --rendezvous_dir).
TEST_F(DeployWorkerEntrypointTest, PassesAnEtcdRendezvousThroughAndRewritesADirectory) {
  const testing::CommandResult etcd = Run("POD_NAME=dapq-worker-g0-1",
                                          "--tp 2 --rank auto --group_id g0 --etcd etcd://e:2379/p "
                                          "--rendezvous etcd://e:2379/p --x y");
  ASSERT_EQ(etcd.exit_code, 0);
  EXPECT_EQ(etcd.out,
            "--tp 2 --rank 1 --group_id g0 --etcd etcd://e:2379/p --rendezvous etcd://e:2379/p "
            "--x y\n");
  const testing::CommandResult etcd_eq =
      Run("", "--tp=2 --rank=1 --group_id=g1 --rendezvous=etcd://e:2379/p");
  ASSERT_EQ(etcd_eq.exit_code, 0);
  EXPECT_EQ(etcd_eq.out, "--tp=2 --rank 1 --group_id=g1 --rendezvous etcd://e:2379/p\n");

  const testing::CommandResult rank0 =
      Run("POD_NAME=dapq-worker-g0-0", absl::StrCat("--tp 2 --rank auto --group_id g0 "
                                                    "--rendezvous ",
                                                    dir_));
  ASSERT_EQ(rank0.exit_code, 0);
  EXPECT_THAT(rank0.out,
              ::testing::MatchesRegex(absl::StrCat("--tp 2 --rank 0 --group_id g0 --rendezvous ",
                                                   dir_, "/g0/gen-[0-9a-z-]+\n")));
  const testing::CommandResult rank1 =
      Run("POD_NAME=dapq-worker-g0-1",
          absl::StrCat("--tp=2 --rank=auto --group_id=g0 --rendezvous=", dir_));
  ASSERT_EQ(rank1.exit_code, 0);
  EXPECT_EQ(rank1.out.substr(rank1.out.find(dir_)), rank0.out.substr(rank0.out.find(dir_)));
}

TEST_F(DeployWorkerEntrypointTest, PassesFlagsThroughWithoutTensorParallelism) {
  const testing::CommandResult r =
      Run("", absl::StrCat("--model m --rank 0 --rendezvous_dir ", dir_));
  ASSERT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.out, absl::StrCat("--model m --rank 0 --rendezvous_dir ", dir_, "\n"));
  EXPECT_EQ(Run("POD_NAME=worker", "--rank auto").exit_code, 2);
}

// ---------------------------------------------------------------- flags

// The flags a binary defines, read from its main (CLI11 add_option/add_flag).
// The flags a binary's main file registers, including those of the flag helpers it calls
// (common/tls_flags.h's AddServerTlsFlags).
std::set<std::string> DefinedFlags(const std::string& main_file) {
  std::string source = ReadFile(Root() / main_file);
  if (source.find("AddServerTlsFlags(") != std::string::npos) {
    source += ReadFile(Root() / "common/tls_flags.h");
  }
  const std::regex flag_re("add_(option|flag)\\(\"(--[a-z0-9_]+)\"");
  std::set<std::string> flags;
  for (std::sregex_iterator it(source.begin(), source.end(), flag_re), end; it != end; ++it) {
    flags.insert((*it)[2]);
  }
  return flags;
}

void ExpectFlagsDefined(const std::vector<std::string>& args, const std::set<std::string>& flags,
                        const std::string& where) {
  for (const std::string& a : args) {
    if (!absl::StartsWith(a, "--")) continue;
    EXPECT_TRUE(flags.count(a.substr(0, a.find('=')))) << where << ": unknown flag " << a;
  }
}

TEST(DeployFlagsTest, EveryFlagPassedToABinaryExists) {
  const std::set<std::string> coordinator = DefinedFlags("coordinator/coordinator_main.cc");
  const std::set<std::string> worker = DefinedFlags("worker/service/worker_main.cc");
  ASSERT_TRUE(coordinator.count("--metrics_listen"));
  ASSERT_TRUE(worker.count("--metrics_listen"));
  int checked = 0;
  const YAML::Node compose = Compose();
  for (const auto& kv : compose["services"]) {
    const std::vector<std::string> entrypoint = StringList(kv.second["entrypoint"]);
    const std::vector<std::string> command = StringList(kv.second["command"]);
    const std::string where = "compose service " + kv.first.as<std::string>();
    if (!entrypoint.empty() && entrypoint[0] == "dapq-worker-entrypoint") {
      ExpectFlagsDefined(command, worker, where);
      ++checked;
    } else if (!command.empty() && command[0] == "dapq-coordinator") {
      ExpectFlagsDefined(command, coordinator, where);
      ++checked;
    }
  }
  for (const fs::path& f : FilesIn(Deploy() / "k8s", ".yaml")) {
    for (const YAML::Node& doc : YAML::LoadAllFromFile(f.string())) {
      if (!doc.IsMap() || !doc["spec"] || !doc["spec"]["template"]) continue;
      for (const YAML::Node& c : doc["spec"]["template"]["spec"]["containers"]) {
        const std::vector<std::string> command = StringList(c["command"]);
        const std::string where = f.filename().string() + " " + Str(doc["metadata"]["name"]);
        if (command.empty()) continue;
        if (command[0] == "dapq-worker-entrypoint" || command[0] == "dapq-worker") {
          ExpectFlagsDefined(StringList(c["args"]), worker, where);
          ++checked;
        } else if (command[0] == "dapq-coordinator") {
          ExpectFlagsDefined(StringList(c["args"]), coordinator, where);
          ++checked;
        }
      }
    }
  }
  EXPECT_GE(checked, 8);
}

// ---------------------------------------------------------------- Kubernetes

struct K8sObject {
  std::string file;
  YAML::Node doc;
  std::string kind() const { return Str(doc["kind"]); }
  std::string name() const { return Str(doc["metadata"]["name"]); }
};

std::vector<K8sObject> K8sObjects() {
  std::vector<K8sObject> objects;
  for (const fs::path& f : FilesIn(Deploy() / "k8s", ".yaml")) {
    if (f.filename() == "kustomization.yaml") continue;
    for (const YAML::Node& doc : YAML::LoadAllFromFile(f.string())) {
      if (doc.IsNull()) continue;
      objects.push_back({f.filename().string(), doc});
    }
  }
  return objects;
}

std::vector<K8sObject> OfKind(const std::vector<K8sObject>& all, const std::string& kind) {
  std::vector<K8sObject> out;
  for (const K8sObject& o : all) {
    if (o.kind() == kind) out.push_back(o);
  }
  return out;
}

YAML::Node PodLabels(const K8sObject& workload) {
  return workload.doc["spec"]["template"]["metadata"]["labels"];
}
std::string AppName(const K8sObject& workload) {
  return Str(PodLabels(workload)["app.kubernetes.io/name"]);
}
bool IsWorkerSet(const K8sObject& o) {
  return o.kind() == "StatefulSet" && AppName(o) == "dapq-worker";
}
bool IsDapqImage(const YAML::Node& container) {
  return absl::StartsWith(Str(container["image"]), "dapq-serve:");
}

// The data of the ConfigMap dapq-config (the $(VARS) of the DapQ containers).
std::map<std::string, std::string> DapqConfig(const std::vector<K8sObject>& all) {
  std::map<std::string, std::string> out;
  for (const K8sObject& o : OfKind(all, "ConfigMap")) {
    if (o.name() != "dapq-config") continue;
    for (const auto& kv : o.doc["data"]) out[kv.first.as<std::string>()] = Str(kv.second);
  }
  return out;
}

// `value` with its $(VARS) replaced from the ConfigMap.
std::string Resolve(const std::string& value, const std::map<std::string, std::string>& config) {
  std::string out = value;
  for (const auto& [k, v] : config) {
    out = absl::StrReplaceAll(out, {{absl::StrCat("$(", k, ")"), v}});
  }
  return out;
}

// The one workload of `kind` whose pods carry app.kubernetes.io/name `app`.
const K8sObject* Workload(const std::vector<K8sObject>& all, const std::string& kind,
                          const std::string& app) {
  for (const K8sObject& o : all) {
    if (o.kind() == kind && AppName(o) == app) return &o;
  }
  return nullptr;
}

// The Service named `name`, if it selects the pods of `workload` and exposes `port`.
bool ServiceReaches(const std::vector<K8sObject>& all, const std::string& name,
                    const K8sObject& workload, const std::string& port) {
  for (const K8sObject& s : OfKind(all, "Service")) {
    if (s.name() != name || !SelectorMatches(s.doc["spec"]["selector"], PodLabels(workload))) {
      continue;
    }
    for (const YAML::Node& p : s.doc["spec"]["ports"]) {
      if (Str(p["port"]) == port) return true;
    }
  }
  return false;
}

// Whether the NetworkPolicies that select pods labelled `to` admit pods labelled `from` on
// `port` (no policy selecting them: everything is admitted, which the caller rules out).
bool PolicyAdmits(const std::vector<K8sObject>& all, const YAML::Node& to, const YAML::Node& from,
                  const std::string& port) {
  for (const K8sObject& np : OfKind(all, "NetworkPolicy")) {
    if (!SelectorMatches(np.doc["spec"]["podSelector"]["matchLabels"], to)) continue;
    for (const YAML::Node& rule : np.doc["spec"]["ingress"]) {
      bool peer = !rule["from"] || rule["from"].size() == 0;
      for (const YAML::Node& f : rule["from"]) {
        peer |= f["podSelector"] && SelectorMatches(f["podSelector"]["matchLabels"], from);
      }
      bool port_ok = !rule["ports"] || rule["ports"].size() == 0;
      for (const YAML::Node& p : rule["ports"]) port_ok |= Str(p["port"]) == port;
      if (peer && port_ok) return true;
    }
  }
  return false;
}

bool SomePolicySelects(const std::vector<K8sObject>& all, const YAML::Node& labels) {
  for (const K8sObject& np : OfKind(all, "NetworkPolicy")) {
    if (SelectorMatches(np.doc["spec"]["podSelector"]["matchLabels"], labels)) return true;
  }
  return false;
}

TEST(DeployKubernetesTest, EveryDocumentHasApiVersionKindAndName) {
  const std::vector<K8sObject> objects = K8sObjects();
  ASSERT_GT(objects.size(), 10u);
  std::set<std::string> seen;
  for (const K8sObject& o : objects) {
    EXPECT_FALSE(Str(o.doc["apiVersion"]).empty()) << o.file;
    EXPECT_FALSE(o.kind().empty()) << o.file;
    EXPECT_FALSE(o.name().empty()) << o.file << " " << o.kind();
    EXPECT_TRUE(seen.insert(o.kind() + "/" + o.name()).second)
        << "duplicate " << o.kind() << "/" << o.name();
  }
}

TEST(DeployKubernetesTest, KustomizationListsEveryManifest) {
  const YAML::Node k = YAML::LoadFile((Deploy() / "k8s/kustomization.yaml").string());
  std::vector<std::string> files;
  for (const fs::path& f : FilesIn(Deploy() / "k8s", ".yaml")) {
    if (f.filename() != "kustomization.yaml") files.push_back(f.filename().string());
  }
  EXPECT_THAT(StringList(k["resources"]), UnorderedElementsAreArray(files));
}

TEST(DeployKubernetesTest, WorkloadsAreCompleteAndConsistent) {
  const std::vector<K8sObject> all = K8sObjects();
  std::set<std::string> claims, config_maps;
  std::map<std::string, YAML::Node> config_data;
  std::map<std::string, std::set<std::string>> secret_keys;
  for (const K8sObject& o : OfKind(all, "PersistentVolumeClaim")) claims.insert(o.name());
  for (const K8sObject& o : OfKind(all, "ConfigMap")) config_data[o.name()] = o.doc["data"];
  for (const K8sObject& o : OfKind(all, "Secret")) {
    for (const char* field : {"stringData", "data"}) {
      for (const auto& kv : o.doc[field]) secret_keys[o.name()].insert(kv.first.as<std::string>());
    }
  }
  int workloads = 0;
  for (const std::string kind : {"Deployment", "StatefulSet"}) {
    for (const K8sObject& o : OfKind(all, kind)) {
      ++workloads;
      const std::string where = kind + "/" + o.name();
      const YAML::Node spec = o.doc["spec"];
      ASSERT_TRUE(
          SelectorMatches(spec["selector"]["matchLabels"], spec["template"]["metadata"]["labels"]))
          << where << ": spec.selector must match the template labels";
      const YAML::Node pod = spec["template"]["spec"];
      ASSERT_TRUE(pod["containers"] && pod["containers"].size() > 0) << where;
      std::set<std::string> volumes;
      for (const YAML::Node& t : spec["volumeClaimTemplates"]) {
        volumes.insert(Str(t["metadata"]["name"]));
      }
      for (const YAML::Node& v : pod["volumes"]) {
        volumes.insert(Str(v["name"]));
        if (v["persistentVolumeClaim"]) {
          EXPECT_TRUE(claims.count(Str(v["persistentVolumeClaim"]["claimName"]))) << where;
        }
      }
      for (const YAML::Node& c : pod["containers"]) {
        EXPECT_FALSE(Str(c["image"]).empty()) << where;
        EXPECT_TRUE(!StringList(c["command"]).empty() || !StringList(c["args"]).empty()) << where;
        std::set<std::string> ports, env = {};
        for (const YAML::Node& p : c["ports"]) ports.insert(Str(p["name"]));
        for (const char* probe : {"readinessProbe", "livenessProbe"}) {
          if (c[probe] && c[probe]["tcpSocket"]) {
            EXPECT_TRUE(ports.count(Str(c[probe]["tcpSocket"]["port"]))) << where << " " << probe;
          }
        }
        for (const YAML::Node& m : c["volumeMounts"]) {
          EXPECT_TRUE(volumes.count(Str(m["name"]))) << where << ": mount " << Str(m["name"]);
        }
        for (const YAML::Node& e : c["env"]) {
          env.insert(Str(e["name"]));
          if (e["valueFrom"] && e["valueFrom"]["secretKeyRef"]) {
            // Secrets the manifests create (dapq-tls is created by hand: make-certs.sh).
            const YAML::Node ref = e["valueFrom"]["secretKeyRef"];
            EXPECT_TRUE(secret_keys[Str(ref["name"])].count(Str(ref["key"])))
                << where << ": env " << Str(e["name"]) << " from Secret " << Str(ref["name"])
                << " key " << Str(ref["key"]);
          }
        }
        for (const YAML::Node& e : c["envFrom"]) {
          const std::string cm = Str(e["configMapRef"]["name"]);
          ASSERT_TRUE(config_data.count(cm)) << where << ": ConfigMap " << cm;
          for (const auto& kv : config_data[cm]) env.insert(kv.first.as<std::string>());
        }
        // Every $(VAR) in command/args must be defined, or Kubernetes passes it literally.
        const std::regex var_re("\\$\\(([A-Za-z_][A-Za-z0-9_]*)\\)");
        for (const std::string& arg : StringList(c["args"])) {
          for (std::sregex_iterator it(arg.begin(), arg.end(), var_re), end; it != end; ++it) {
            EXPECT_TRUE(env.count((*it)[1])) << where << ": undefined $(" << (*it)[1] << ")";
          }
        }
        if (!IsDapqImage(c)) continue;  // etcd, PostgreSQL
        const std::vector<std::string> args = StringList(c["args"]);
        EXPECT_FALSE(FlagValue(args, "--metrics_listen").empty()) << where;
        EXPECT_TRUE(ports.count("metrics")) << where;
      }
    }
  }
  EXPECT_GE(workloads, 5);
}

TEST(DeployKubernetesTest, WorkerGroupsAreStatefulSetsOfOneGpuPerRank) {
  const std::vector<K8sObject> all = K8sObjects();
  const std::map<std::string, std::string> config = DapqConfig(all);
  std::vector<K8sObject> sets;
  for (const K8sObject& o : OfKind(all, "StatefulSet")) {
    if (IsWorkerSet(o)) sets.push_back(o);
  }
  ASSERT_GE(sets.size(), 2u) << "a StatefulSet per worker group";
  std::set<std::string> groups;
  for (const K8sObject& o : sets) {
    const YAML::Node spec = o.doc["spec"];
    const YAML::Node c = spec["template"]["spec"]["containers"][0];
    const std::vector<std::string> args = StringList(c["args"]);
    EXPECT_EQ(StringList(c["command"]), std::vector<std::string>{"dapq-worker-entrypoint"});
    EXPECT_EQ(FlagValue(args, "--tp"), Str(spec["replicas"])) << o.name() << ": replicas = --tp";
    EXPECT_EQ(FlagValue(args, "--rank"), "auto") << o.name() << ": rank = pod ordinal";
    const std::string group = FlagValue(args, "--group_id");
    EXPECT_TRUE(groups.insert(group).second) << "two StatefulSets for group " << group;
    EXPECT_EQ(Str(spec["template"]["metadata"]["labels"]["dapq.io/group"]), group);
    EXPECT_EQ(FlagValue(args, "--advertise_host"), "$(POD_IP)");
    EXPECT_EQ(FlagValue(args, "--gloo_host"), "$(POD_IP)");
    EXPECT_EQ(FlagValue(args, "--listen"), "0.0.0.0:50061");
    // The group registers in etcd and finds every coordinator there.
    EXPECT_EQ(FlagValue(args, "--etcd"), "$(DAPQ_ETCD)") << o.name();
    EXPECT_TRUE(ParseEtcdUrl(Resolve(FlagValue(args, "--etcd"), config)).ok) << o.name();
    EXPECT_EQ(Str(spec["podManagementPolicy"]), "Parallel") << o.name();
    EXPECT_EQ(Str(c["resources"]["requests"]["nvidia.com/gpu"]), "1") << o.name();
    EXPECT_EQ(Str(c["resources"]["limits"]["nvidia.com/gpu"]), "1") << o.name();
    // The CUDA path: the pod's one GPU, NCCL all-reduces, a device KV pool needs its cap.
    EXPECT_EQ(FlagValue(args, "--device"), "cuda:0") << o.name();
    EXPECT_EQ(FlagValue(args, "--comm"), "nccl") << o.name();
    EXPECT_GT(std::atol(Resolve(FlagValue(args, "--kv_pool_blocks"), config).c_str()), 0)
        << o.name() << ": a device KV pool needs --kv_pool_blocks";
    // The ranks of a group meet through etcd: they may land on different nodes, so no shared
    // rendezvous volume.
    EXPECT_TRUE(ParseEtcdUrl(Resolve(FlagValue(args, "--rendezvous"), config)).ok)
        << o.name() << ": --rendezvous etcd://...";
    EXPECT_TRUE(FlagValue(args, "--rendezvous_dir").empty()) << o.name();
    if (!FlagValue(args, "--kv_dir").empty()) {
      bool kv_mounted = false;
      for (const YAML::Node& m : c["volumeMounts"]) {
        kv_mounted |= Str(m["mountPath"]) == FlagValue(args, "--kv_dir");
      }
      EXPECT_TRUE(kv_mounted) << o.name() << ": --kv_dir must be a mounted volume";
    }
    // serviceName names a headless Service selecting these pods.
    bool headless = false;
    for (const K8sObject& s : OfKind(all, "Service")) {
      if (s.name() == Str(spec["serviceName"])) {
        headless =
            Str(s.doc["spec"]["clusterIP"]) == "None" &&
            SelectorMatches(s.doc["spec"]["selector"], spec["template"]["metadata"]["labels"]);
      }
    }
    EXPECT_TRUE(headless) << o.name() << ": serviceName must be a headless Service of its pods";
  }
}

TEST(DeployKubernetesTest, DisruptionBudgetsProtectEveryWorkload) {
  const std::vector<K8sObject> all = K8sObjects();
  const std::vector<K8sObject> budgets = OfKind(all, "PodDisruptionBudget");
  ASSERT_FALSE(budgets.empty());
  for (const std::string kind : {"Deployment", "StatefulSet"}) {
    for (const K8sObject& o : OfKind(all, kind)) {
      const YAML::Node labels = o.doc["spec"]["template"]["metadata"]["labels"];
      const int replicas = o.doc["spec"]["replicas"] ? o.doc["spec"]["replicas"].as<int>() : 1;
      int covering = 0;
      for (const K8sObject& b : budgets) {
        if (!SelectorMatches(b.doc["spec"]["selector"]["matchLabels"], labels)) continue;
        ++covering;
        if (IsWorkerSet(o)) {
          EXPECT_EQ(Str(b.doc["spec"]["maxUnavailable"]), "0")
              << b.name() << ": a tensor-parallel group cannot lose a rank";
          continue;
        }
        // Everything else lets a node drain proceed: at least one pod may be evicted.
        const YAML::Node max_unavailable = b.doc["spec"]["maxUnavailable"];
        const YAML::Node min_available = b.doc["spec"]["minAvailable"];
        ASSERT_TRUE(max_unavailable || min_available) << b.name();
        const int allowed =
            max_unavailable ? max_unavailable.as<int>() : replicas - min_available.as<int>();
        EXPECT_GE(allowed, 1) << b.name() << ": a drain must be able to evict a pod";
        if (AppName(o) == "dapq-etcd") {
          EXPECT_LE(allowed, (replicas - 1) / 2) << b.name() << ": etcd keeps its quorum";
        }
      }
      EXPECT_EQ(covering, 1) << kind << "/" << o.name() << " needs exactly one PDB";
    }
  }
}

TEST(DeployKubernetesTest, MonitorsScrapeCoordinatorAndWorkersAsTheirJobs) {
  const std::vector<K8sObject> all = K8sObjects();
  const std::vector<K8sObject> service_monitors = OfKind(all, "ServiceMonitor");
  const std::vector<K8sObject> pod_monitors = OfKind(all, "PodMonitor");
  ASSERT_EQ(service_monitors.size(), 1u);
  ASSERT_EQ(pod_monitors.size(), 1u);
  for (const K8sObject& m : {service_monitors[0], pod_monitors[0]}) {
    EXPECT_EQ(Str(m.doc["apiVersion"]), "monitoring.coreos.com/v1");
  }
  // The ServiceMonitor selects the coordinator Service by a label whose value is the job name.
  const YAML::Node sm = service_monitors[0].doc["spec"];
  const std::string sm_job_label = Str(sm["jobLabel"]);
  bool coordinator_found = false;
  for (const K8sObject& s : OfKind(all, "Service")) {
    if (!SelectorMatches(sm["selector"]["matchLabels"], s.doc["metadata"]["labels"])) continue;
    coordinator_found = true;
    EXPECT_EQ(Str(s.doc["metadata"]["labels"][sm_job_label]), "dapq-coordinator");
    std::set<std::string> ports;
    for (const YAML::Node& p : s.doc["spec"]["ports"]) ports.insert(Str(p["name"]));
    for (const YAML::Node& e : sm["endpoints"]) EXPECT_TRUE(ports.count(Str(e["port"])));
  }
  EXPECT_TRUE(coordinator_found);
  // The PodMonitor selects every worker pod (the worker StatefulSets), as job dapq-worker.
  const YAML::Node pm = pod_monitors[0].doc["spec"];
  for (const K8sObject& o : OfKind(all, "StatefulSet")) {
    const YAML::Node labels = o.doc["spec"]["template"]["metadata"]["labels"];
    if (!IsWorkerSet(o)) {
      EXPECT_FALSE(SelectorMatches(pm["selector"]["matchLabels"], labels))
          << o.name() << " must not be scraped as a worker";
      continue;
    }
    EXPECT_TRUE(SelectorMatches(pm["selector"]["matchLabels"], labels)) << o.name();
    EXPECT_EQ(Str(labels[Str(pm["jobLabel"])]), "dapq-worker") << o.name();
  }
  for (const K8sObject& o : OfKind(all, "Deployment")) {
    EXPECT_FALSE(SelectorMatches(pm["selector"]["matchLabels"],
                                 o.doc["spec"]["template"]["metadata"]["labels"]))
        << o.name() << " must not be scraped as a worker";
  }
}

TEST(DeployKubernetesTest, CoordinatorServiceExposesGrpcAndMetrics) {
  const std::vector<K8sObject> all = K8sObjects();
  bool found = false;
  for (const K8sObject& s : OfKind(all, "Service")) {
    if (s.name() != "dapq-coordinator") continue;
    found = true;
    std::map<std::string, std::string> ports;
    for (const YAML::Node& p : s.doc["spec"]["ports"]) ports[Str(p["name"])] = Str(p["port"]);
    EXPECT_EQ(ports["grpc"], "50051");
    EXPECT_EQ(ports["metrics"], "9400");
    bool selects = false;
    for (const K8sObject& d : OfKind(all, "Deployment")) {
      selects |= SelectorMatches(s.doc["spec"]["selector"],
                                 d.doc["spec"]["template"]["metadata"]["labels"]);
    }
    EXPECT_TRUE(selects);
  }
  EXPECT_TRUE(found);
}

// Several coordinators: a Deployment of 3 spread over nodes, registered in etcd at their pod IPs,
// sharing one PostgreSQL batch store whose password comes from a Secret, never the URL.
TEST(DeployKubernetesTest, CoordinatorsAreReplicatedAndShareEtcdAndPostgres) {
  const std::vector<K8sObject> all = K8sObjects();
  const std::map<std::string, std::string> config = DapqConfig(all);
  const K8sObject* d = Workload(all, "Deployment", "dapq-coordinator");
  ASSERT_NE(d, nullptr);
  const YAML::Node spec = d->doc["spec"];
  EXPECT_GE(spec["replicas"].as<int>(), 3);
  EXPECT_NE(Str(spec["strategy"]["type"]), "Recreate");
  const YAML::Node pod = spec["template"]["spec"];
  bool spread = false;
  for (const YAML::Node& t :
       pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]) {
    spread |= Str(t["podAffinityTerm"]["topologyKey"]) == "kubernetes.io/hostname" &&
              SelectorMatches(t["podAffinityTerm"]["labelSelector"]["matchLabels"], PodLabels(*d));
  }
  EXPECT_TRUE(spread) << "preferred anti-affinity across nodes";
  for (const YAML::Node& v : pod["volumes"]) {
    EXPECT_FALSE(v["persistentVolumeClaim"]) << "coordinators keep no state of their own";
  }
  const YAML::Node c = pod["containers"][0];
  const std::vector<std::string> args = StringList(c["args"]);
  EXPECT_TRUE(FlagValue(args, "--db").empty());
  EXPECT_TRUE(ParseEtcdUrl(Resolve(FlagValue(args, "--etcd"), config)).ok)
      << Resolve(FlagValue(args, "--etcd"), config);
  EXPECT_EQ(FlagValue(args, "--advertise_internal"),
            absl::StrCat("$(POD_IP):", PortOf(FlagValue(args, "--internal_listen"))));
  std::map<std::string, YAML::Node> env;
  for (const YAML::Node& e : c["env"]) env[Str(e["name"])] = e;
  EXPECT_EQ(Str(env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"]), "status.podIP");
  const PostgresUrl pg = ParsePostgresUrl(Resolve(FlagValue(args, "--batch_store"), config));
  ASSERT_TRUE(pg.ok) << Resolve(FlagValue(args, "--batch_store"), config);
  EXPECT_FALSE(pg.has_password) << "the password comes from PGPASSWORD (a Secret)";
  const YAML::Node pgpassword = env["PGPASSWORD"]["valueFrom"]["secretKeyRef"];
  ASSERT_TRUE(pgpassword) << "PGPASSWORD from a Secret";

  // etcd: an odd number of members that know each other, on volumes of their own.
  const K8sObject* etcd = Workload(all, "StatefulSet", "dapq-etcd");
  ASSERT_NE(etcd, nullptr);
  const int members = etcd->doc["spec"]["replicas"].as<int>();
  EXPECT_EQ(members, 3);
  EXPECT_FALSE(etcd->doc["spec"]["volumeClaimTemplates"].size() == 0);
  bool headless = false;
  for (const K8sObject& s : OfKind(all, "Service")) {
    if (s.name() != Str(etcd->doc["spec"]["serviceName"])) continue;
    headless = Str(s.doc["spec"]["clusterIP"]) == "None" &&
               Str(s.doc["spec"]["publishNotReadyAddresses"]) == "true" &&
               SelectorMatches(s.doc["spec"]["selector"], PodLabels(*etcd));
  }
  EXPECT_TRUE(headless) << "etcd members find each other through a headless Service";
  const std::vector<std::string> etcd_args =
      StringList(etcd->doc["spec"]["template"]["spec"]["containers"][0]["args"]);
  std::string initial_cluster;
  for (const std::string& a : etcd_args) {
    if (absl::StartsWith(a, "--initial-cluster=")) initial_cluster = a.substr(18);
  }
  const std::vector<std::string> peers = absl::StrSplit(initial_cluster, ',');
  ASSERT_EQ(peers.size(), static_cast<size_t>(members)) << initial_cluster;
  for (int i = 0; i < members; ++i) {
    EXPECT_TRUE(absl::StartsWith(
        peers[i], absl::StrCat(etcd->name(), "-", i, "=http://", etcd->name(), "-", i, ".",
                               Str(etcd->doc["spec"]["serviceName"]), ":2380")))
        << peers[i];
  }
  // Every endpoint coordinators and workers use is a Service of the etcd pods.
  for (const std::string& e : ParseEtcdUrl(config.at("DAPQ_ETCD")).endpoints) {
    // SERVICE:PORT or POD.SERVICE:PORT (a member by its name).
    const std::vector<std::string> parts = absl::StrSplit(HostOf(e), '.');
    const std::string service = parts.size() > 1 ? parts[1] : parts[0];
    EXPECT_TRUE(ServiceReaches(all, service, *etcd, PortOf(e))) << e;
  }

  // PostgreSQL: one replica on a volume, reached by the batch store URL, with the password the
  // coordinators use.
  const K8sObject* postgres = Workload(all, "StatefulSet", "dapq-postgres");
  ASSERT_NE(postgres, nullptr);
  EXPECT_EQ(Str(postgres->doc["spec"]["replicas"]), "1");
  EXPECT_FALSE(postgres->doc["spec"]["volumeClaimTemplates"].size() == 0);
  EXPECT_TRUE(ServiceReaches(all, HostOf(pg.host_port), *postgres, PortOf(pg.host_port)))
      << pg.host_port;
  const YAML::Node pc = postgres->doc["spec"]["template"]["spec"]["containers"][0];
  EXPECT_TRUE(absl::StartsWith(Str(pc["image"]), "postgres:"));
  EXPECT_THAT(StringList(pc["readinessProbe"]["exec"]["command"]), Contains("pg_isready"));
  std::map<std::string, YAML::Node> pg_env;
  for (const YAML::Node& e : pc["env"]) pg_env[Str(e["name"])] = e;
  EXPECT_EQ(Str(pg_env["POSTGRES_USER"]["value"]), pg.user);
  EXPECT_EQ(Str(pg_env["POSTGRES_DB"]["value"]), pg.db);
  const YAML::Node pg_secret = pg_env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"];
  EXPECT_EQ(Str(pg_secret["name"]), Str(pgpassword["name"]));
  EXPECT_EQ(Str(pg_secret["key"]), Str(pgpassword["key"]));
}

TEST(DeployKubernetesTest, NetworkPoliciesAdmitEtcdAndPostgresClients) {
  const std::vector<K8sObject> all = K8sObjects();
  const K8sObject* coordinator = Workload(all, "Deployment", "dapq-coordinator");
  const K8sObject* etcd = Workload(all, "StatefulSet", "dapq-etcd");
  const K8sObject* postgres = Workload(all, "StatefulSet", "dapq-postgres");
  ASSERT_TRUE(coordinator && etcd && postgres);
  std::vector<const K8sObject*> workers;
  for (const K8sObject& o : all) {
    if (IsWorkerSet(o)) workers.push_back(&o);
  }
  ASSERT_FALSE(workers.empty());
  ASSERT_TRUE(SomePolicySelects(all, PodLabels(*etcd)));
  ASSERT_TRUE(SomePolicySelects(all, PodLabels(*postgres)));
  EXPECT_TRUE(PolicyAdmits(all, PodLabels(*etcd), PodLabels(*coordinator), "2379"));
  EXPECT_TRUE(PolicyAdmits(all, PodLabels(*etcd), PodLabels(*etcd), "2380"));
  for (const K8sObject* w : workers) {
    EXPECT_TRUE(PolicyAdmits(all, PodLabels(*etcd), PodLabels(*w), "2379")) << w->name();
    EXPECT_FALSE(PolicyAdmits(all, PodLabels(*postgres), PodLabels(*w), "5432")) << w->name();
    // Workers heartbeat to each coordinator's internal port.
    EXPECT_TRUE(PolicyAdmits(all, PodLabels(*coordinator), PodLabels(*w), "50052")) << w->name();
  }
  EXPECT_TRUE(PolicyAdmits(all, PodLabels(*postgres), PodLabels(*coordinator), "5432"));
}

}  // namespace
}  // namespace dapq::deploy
