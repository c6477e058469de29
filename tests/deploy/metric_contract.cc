// File: tests/deploy/metric_contract.cc
// The metric contract and the PromQL reference checker (see metric_contract.h).
#include "tests/deploy/metric_contract.h"

#include <cctype>
#include <map>
#include <set>
#include <string_view>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "api/status_names.h"

namespace dapq::deploy {
namespace {

using K = MetricKind;

std::vector<std::string> Worker(std::vector<std::string> extra) {
  std::vector<std::string> labels = {"group", "rank"};
  labels.insert(labels.end(), extra.begin(), extra.end());
  return labels;
}

const std::set<std::string>& Tiers() {
  static const auto* tiers = new std::set<std::string>{"device", "host", "disk", "remote"};
  return *tiers;
}

bool IsWorkerSide(const std::string& metric) {
  return absl::StartsWith(metric, "dapq_worker_") || absl::StartsWith(metric, "dapq_kv_") ||
         absl::StartsWith(metric, "dapq_compression_");
}

// ---- A PromQL tokenizer: enough to find selectors, matchers and grouping clauses.
struct Token {
  enum Kind { kIdent, kString, kNumber, kPunct } kind;
  std::string text;
};

bool IsIdentStart(char c) { return std::isalpha(static_cast<unsigned char>(c)) || c == '_'; }
bool IsIdentChar(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == ':';
}

std::vector<Token> Lex(const std::string& s, std::vector<std::string>* errors) {
  std::vector<Token> out;
  size_t i = 0;
  while (i < s.size()) {
    const char c = s[i];
    if (std::isspace(static_cast<unsigned char>(c))) {
      ++i;
    } else if (c == '#') {  // comment to the end of the line
      while (i < s.size() && s[i] != '\n') ++i;
    } else if (IsIdentStart(c)) {
      size_t j = i;
      while (j < s.size() && IsIdentChar(s[j])) ++j;
      out.push_back({Token::kIdent, s.substr(i, j - i)});
      i = j;
    } else if (std::isdigit(static_cast<unsigned char>(c)) || c == '.') {
      // Numbers and durations (0.99, 1e3, 5m, 1h30m): digits, letters and dots.
      size_t j = i;
      while (j < s.size() && (std::isalnum(static_cast<unsigned char>(s[j])) || s[j] == '.')) ++j;
      out.push_back({Token::kNumber, s.substr(i, j - i)});
      i = j;
    } else if (c == '"' || c == '\'' || c == '`') {
      std::string value;
      size_t j = i + 1;
      while (j < s.size() && s[j] != c) {
        if (s[j] == '\\' && c != '`' && j + 1 < s.size()) ++j;
        value += s[j++];
      }
      if (j >= s.size()) {
        errors->push_back(absl::StrCat("unterminated string in: ", s));
        return out;
      }
      out.push_back({Token::kString, value});
      i = j + 1;
    } else {
      static const char* kTwoChar[] = {"=~", "!~", "!=", "==", ">=", "<="};
      std::string op(1, c);
      for (const char* two : kTwoChar) {
        if (s.compare(i, 2, two) == 0) op = two;
      }
      out.push_back({Token::kPunct, op});
      i += op.size();
    }
  }
  return out;
}

bool IsPunct(const std::vector<Token>& t, size_t i, std::string_view p) {
  return i < t.size() && t[i].kind == Token::kPunct && t[i].text == p;
}

struct Matcher {
  std::string series, label, op, value;
};

struct Resolved {
  const MetricSpec* spec = nullptr;  // null for `up`
  std::string metric;                // contract name, or "up"
  bool bucket = false;
};

}  // namespace

const std::vector<MetricSpec>& MetricContract() {
  static const auto* contract = new std::vector<MetricSpec>{
      // Both processes (the worker adds group and rank).
      {"dapq_build_info", K::kGauge, {"version", "cuda", "group", "rank"}},
      // Worker ranks.
      {"dapq_worker_requests_total", K::kCounter, Worker({"outcome"})},
      {"dapq_worker_prefill_tokens_total", K::kCounter, Worker({})},
      {"dapq_worker_decode_tokens_total", K::kCounter, Worker({})},
      {"dapq_worker_ttft_seconds", K::kHistogram, Worker({})},
      {"dapq_worker_time_per_output_token_seconds", K::kHistogram, Worker({})},
      {"dapq_worker_queue_depth", K::kGauge, Worker({})},
      {"dapq_worker_queue_rejections_total", K::kCounter, Worker({})},
      {"dapq_worker_group_healthy", K::kGauge, Worker({})},
      {"dapq_worker_allreduce_seconds", K::kHistogram, Worker({})},
      {"dapq_worker_step_sequences", K::kHistogram, Worker({})},
      {"dapq_worker_step_tokens", K::kHistogram, Worker({})},
      {"dapq_worker_running_sequences", K::kGauge, Worker({})},
      {"dapq_worker_waiting_sequences", K::kGauge, Worker({})},
      {"dapq_worker_preemptions_total", K::kCounter, Worker({"kind"})},
      {"dapq_worker_session_turns_total", K::kCounter, Worker({"source"})},
      {"dapq_worker_sessions_evicted_total", K::kCounter, Worker({})},
      {"dapq_worker_prefix_reused_tokens_total", K::kCounter, Worker({})},
      {"dapq_compression_tokens_kept_total", K::kCounter, Worker({"method"})},
      {"dapq_compression_tokens_evicted_total", K::kCounter, Worker({"method"})},
      {"dapq_compression_kept_ratio", K::kHistogram, Worker({"method"})},
      {"dapq_compression_layer_kept_ratio", K::kHistogram, Worker({"method"})},
      {"dapq_kv_used_bytes", K::kGauge, Worker({"tier"})},
      {"dapq_kv_capacity_bytes", K::kGauge, Worker({"tier"})},
      {"dapq_kv_high_watermark_bytes", K::kGauge, Worker({"tier"})},
      {"dapq_kv_used_blocks", K::kGauge, Worker({"tier"})},
      {"dapq_kv_shared_blocks", K::kGauge, Worker({"tier"})},
      {"dapq_kv_pool_used_blocks", K::kGauge, Worker({})},
      {"dapq_kv_pool_allocated_blocks", K::kGauge, Worker({})},
      {"dapq_kv_pool_capacity_blocks", K::kGauge, Worker({})},
      {"dapq_kv_pool_block_bytes", K::kGauge, Worker({})},
      {"dapq_kv_pool_cached_blocks", K::kGauge, Worker({})},
      {"dapq_kv_spill_bytes_total", K::kCounter, Worker({"from", "to"})},
      {"dapq_kv_spill_blocks_total", K::kCounter, Worker({"from", "to"})},
      {"dapq_kv_restore_bytes_total", K::kCounter, Worker({"from", "to"})},
      {"dapq_kv_restore_blocks_total", K::kCounter, Worker({"from", "to"})},
      {"dapq_kv_spill_failures_total", K::kCounter, Worker({"tier"})},
      {"dapq_kv_failed_loads_total", K::kCounter, Worker({"cause"})},
      {"dapq_kv_transfer_seconds", K::kHistogram, Worker({"direction"})},
      {"dapq_worker_etcd_lease_lost_total", K::kCounter, Worker({})},
      // Coordinator.
      {"dapq_coordinator_requests_total", K::kCounter, {"code"}},
      {"dapq_coordinator_in_flight", K::kGauge, {}},
      {"dapq_coordinator_queue_capacity", K::kGauge, {}},
      {"dapq_coordinator_rejections_total", K::kCounter, {}},
      {"dapq_coordinator_ttft_seconds", K::kHistogram, {}},
      {"dapq_coordinator_group_healthy", K::kGauge, {"group"}},
      {"dapq_coordinator_batch_jobs", K::kGauge, {"state"}},
      {"dapq_coordinator_batch_items", K::kGauge, {"state"}},
      {"dapq_coordinator_batch_item_failures_total", K::kCounter, {}},
      // Coordinators that share etcd (--etcd) and a batch store (--batch_store).
      {"dapq_coordinator_etcd_up", K::kGauge, {}},
      {"dapq_coordinator_etcd_groups", K::kGauge, {}},
      {"dapq_coordinator_batch_store_errors_total", K::kCounter, {"kind"}},
  };
  return *contract;
}

std::set<std::string> AllowedLabelValues(const std::string& metric, const std::string& label) {
  if (label == "job") {
    if (metric == "up" || metric == "dapq_build_info") return {"dapq-coordinator", "dapq-worker"};
    return {IsWorkerSide(metric) ? "dapq-worker" : "dapq-coordinator"};
  }
  if (label == "tier" || label == "from" || label == "to") return Tiers();
  if (label == "outcome") return {"ok", "error", "cancelled"};
  if (label == "cause") return {"checksum", "missing", "unavailable"};
  if (label == "direction") return {"spill", "restore"};
  if (label == "kind" && metric == "dapq_worker_preemptions_total") return {"recompute", "swap"};
  if (label == "source") return {"pool", "store", "replay"};
  if (label == "kind" && metric == "dapq_coordinator_batch_store_errors_total") {
    return {"claim", "commit"};
  }
  if (label == "state" && metric == "dapq_coordinator_batch_jobs") {
    return {"queued", "running", "succeeded", "failed", "cancelled"};
  }
  if (label == "state" && metric == "dapq_coordinator_batch_items") {
    return {"pending", "running", "succeeded", "failed", "cancelled"};
  }
  if (label == "code") {
    std::set<std::string> codes;
    for (int c = 0; c <= 16; ++c) codes.emplace(api::StatusCodeName(c));
    return codes;
  }
  return {};
}

QueryRefs CheckQuery(const std::string& expr) {
  QueryRefs refs;
  auto& errors = refs.errors;
  if (absl::StrContains(expr, "$")) {
    errors.push_back(absl::StrCat("Grafana variable ($...) in a query Prometheus runs: ", expr));
  }
  const std::vector<Token> t = Lex(expr, &errors);
  static const std::set<std::string> kAggregations = {
      "sum",    "min",   "max",          "avg",     "group", "stddev",
      "stdvar", "count", "count_values", "bottomk", "topk",  "quantile"};
  static const std::set<std::string> kGrouping = {"by",       "without",    "on",
                                                  "ignoring", "group_left", "group_right"};
  static const std::set<std::string> kKeywords = {"and", "or",  "unless", "bool", "offset",
                                                  "inf", "nan", "Inf",    "NaN"};
  std::vector<Matcher> matchers;
  std::set<std::string> grouping_labels;

  // Reads {label op "value", ...} starting at t[i] == "{"; returns the index after "}".
  auto read_matchers = [&](size_t i, const std::string& series) {
    ++i;
    while (i < t.size() && !IsPunct(t, i, "}")) {
      if (IsPunct(t, i, ",")) {
        ++i;
        continue;
      }
      if (i + 2 >= t.size() || t[i].kind != Token::kIdent || t[i + 1].kind != Token::kPunct ||
          t[i + 2].kind != Token::kString) {
        errors.push_back(absl::StrCat("unreadable label matcher in: ", expr));
        return t.size();
      }
      matchers.push_back({series, t[i].text, t[i + 1].text, t[i + 2].text});
      i += 3;
    }
    return i + 1;
  };

  for (size_t i = 0; i < t.size();) {
    const Token& tok = t[i];
    if (tok.kind == Token::kIdent && kGrouping.count(tok.text) && IsPunct(t, i + 1, "(")) {
      size_t j = i + 2;
      for (; j < t.size() && !IsPunct(t, j, ")"); ++j) {
        if (t[j].kind == Token::kIdent) {
          grouping_labels.insert(t[j].text);
        } else if (!IsPunct(t, j, ",")) {
          errors.push_back(absl::StrCat("unreadable ", tok.text, "(...) in: ", expr));
        }
      }
      i = j + 1;
    } else if (tok.kind == Token::kIdent &&
               (kAggregations.count(tok.text) || kGrouping.count(tok.text) ||
                kKeywords.count(tok.text) || IsPunct(t, i + 1, "("))) {
      ++i;  // an operator or a function
    } else if (tok.kind == Token::kIdent) {
      refs.series.insert(tok.text);
      i = IsPunct(t, i + 1, "{") ? read_matchers(i + 1, tok.text) : i + 1;
    } else if (IsPunct(t, i, "{")) {
      errors.push_back(absl::StrCat("selector without a metric name in: ", expr));
      i = read_matchers(i, "");
    } else if (IsPunct(t, i, "[")) {
      while (i < t.size() && !IsPunct(t, i, "]")) ++i;  // range or subquery: durations only
      ++i;
    } else {
      ++i;
    }
  }

  // Resolve series names to contract metrics.
  std::map<std::string, Resolved> by_series;
  std::set<std::string> known_labels = {"job", "instance"};
  for (const std::string& series : refs.series) {
    Resolved r;
    if (series == "up") {
      r.metric = "up";
    }
    for (const MetricSpec& m : MetricContract()) {
      if (series == m.name && m.kind == K::kHistogram) {
        errors.push_back(absl::StrCat("histogram ", series,
                                      " has no series of that name (use _bucket, _sum or "
                                      "_count), in: ",
                                      expr));
        r.metric = "-";
      } else if (series == m.name) {
        r = {&m, m.name, false};
      }
      for (const char* suffix : {"_bucket", "_sum", "_count"}) {
        if (m.kind == K::kHistogram && series == m.name + suffix) {
          r = {&m, m.name, std::string_view(suffix) == "_bucket"};
        }
      }
    }
    if (r.metric.empty()) {
      errors.push_back(absl::StrCat("metric ", series, " is not in the contract, in: ", expr));
    }
    if (r.metric.empty() || r.metric == "-") continue;
    refs.metrics.insert(r.metric);
    if (r.spec != nullptr) known_labels.insert(r.spec->labels.begin(), r.spec->labels.end());
    if (r.bucket) known_labels.insert("le");
    by_series[series] = r;
  }

  for (const Matcher& m : matchers) {
    const auto it = by_series.find(m.series);
    if (it == by_series.end()) continue;
    const Resolved& r = it->second;
    std::set<std::string> allowed = {"job", "instance"};
    if (r.spec != nullptr) allowed.insert(r.spec->labels.begin(), r.spec->labels.end());
    if (r.bucket) allowed.insert("le");
    if (!allowed.count(m.label)) {
      errors.push_back(absl::StrCat(m.series, " has no label ", m.label, " (it has ",
                                    absl::StrJoin(allowed, ", "), "), in: ", expr));
      continue;
    }
    const std::set<std::string> values = AllowedLabelValues(r.metric, m.label);
    if (values.empty()) continue;
    std::vector<std::string> alternatives = {m.value};
    if (m.op == "=~" || m.op == "!~") {
      if (m.value.find_first_of(".*+?[](){}^$\\") != std::string::npos) continue;
      alternatives = absl::StrSplit(m.value, '|');
    }
    for (const std::string& v : alternatives) {
      if (!values.count(v)) {
        errors.push_back(absl::StrCat(m.series, "{", m.label, "} never takes the value \"", v,
                                      "\" (one of ", absl::StrJoin(values, ", "), "), in: ", expr));
      }
    }
  }
  for (const std::string& label : grouping_labels) {
    if (!known_labels.count(label)) {
      errors.push_back(
          absl::StrCat("grouping label ", label, " is on none of the metrics of: ", expr));
    }
  }
  if (refs.series.empty()) errors.push_back(absl::StrCat("no metric in: ", expr));
  return refs;
}

}  // namespace dapq::deploy
