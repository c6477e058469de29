// File: worker/compress/compression_config.cc
// Names, parsing, defaults and validation of CompressionConfig.
#include "worker/compress/compression_config.h"

#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"

namespace dapq::worker::compress {
namespace {

template <typename E, size_t N>
absl::StatusOr<E> ParseEnum(absl::string_view field, absl::string_view name,
                            const std::pair<const char*, E> (&table)[N]) {
  std::vector<std::string> names;
  for (const auto& [n, e] : table) {
    if (name == n) return e;
    names.push_back(n);
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown ", field, " '", name, "'; expected one of: ", absl::StrJoin(names, ", ")));
}

constexpr std::pair<const char*, Method> kMethods[] = {
    {"full", Method::kFull},
    {"dapq", Method::kDapq},
    {"snapkv", Method::kSnapKv},
    {"h2o", Method::kH2o},
    {"streaming", Method::kStreamingLlm},
    {"tova", Method::kTova},
    {"expected_attention", Method::kExpectedAttention},
    {"random", Method::kRandom}};
constexpr std::pair<const char*, Content> kContents[] = {{"last", Content::kLast},
                                                         {"mean", Content::kMean},
                                                         {"last_token", Content::kLastToken},
                                                         {"random", Content::kRandom},
                                                         {"zero", Content::kZero}};
constexpr std::pair<const char*, Positions> kPositions[] = {{"future", Positions::kFuture},
                                                            {"actual", Positions::kActual}};
constexpr std::pair<const char*, Allocator> kAllocators[] = {{"uniform", Allocator::kUniform},
                                                             {"pyramid", Allocator::kPyramid},
                                                             {"adaptive", Allocator::kAdaptive}};
constexpr std::pair<const char*, Storage> kStorages[] = {{"shared", Storage::kShared},
                                                         {"per_head", Storage::kPerHead}};
constexpr std::pair<const char*, kernels::PoolType> kPools[] = {{"max", kernels::PoolType::kMax},
                                                                {"avg", kernels::PoolType::kAvg}};
constexpr std::pair<const char*, DapqMode> kModes[] = {{"pseudo", DapqMode::kPseudo},
                                                       {"forward", DapqMode::kForward}};

absl::Status Bad(const std::string& msg) {
  return absl::InvalidArgumentError(absl::StrCat("compression: ", msg));
}

}  // namespace

absl::StatusOr<Method> ParseMethod(absl::string_view n) { return ParseEnum("method", n, kMethods); }
absl::StatusOr<Content> ParseContent(absl::string_view n) {
  return ParseEnum("content", n, kContents);
}
absl::StatusOr<Positions> ParsePositions(absl::string_view n) {
  return ParseEnum("positions", n, kPositions);
}
absl::StatusOr<Allocator> ParseAllocator(absl::string_view n) {
  return ParseEnum("allocator", n, kAllocators);
}
absl::StatusOr<Storage> ParseStorage(absl::string_view n) {
  return ParseEnum("storage", n, kStorages);
}
absl::StatusOr<kernels::PoolType> ParsePool(absl::string_view n) {
  return ParseEnum("pool", n, kPools);
}
absl::StatusOr<DapqMode> ParseDapqMode(absl::string_view n) { return ParseEnum("mode", n, kModes); }

absl::string_view MethodName(Method m) {
  for (const auto& [n, e] : kMethods) {
    if (e == m) return n;
  }
  return "unknown";
}

absl::Status CompressionConfig::Validate() const {
  if (method == Method::kFull) return absl::OkStatus();
  const bool has_tokens = budget_tokens != 0, has_ratio = budget_ratio != 0.0;
  if (has_tokens == has_ratio) {
    return Bad(absl::StrCat("set exactly one of budget (tokens) and budget_ratio; got budget=",
                            budget_tokens, " budget_ratio=", budget_ratio));
  }
  if (has_tokens && budget_tokens < 0) {
    return Bad(absl::StrCat("budget=", budget_tokens, " must be > 0"));
  }
  if (has_ratio && !(budget_ratio > 0.0 && budget_ratio <= 1.0)) {
    return Bad(absl::StrCat("budget_ratio=", budget_ratio, " must be in (0, 1]"));
  }
  if (window < -1) return Bad(absl::StrCat("window=", window, " must be >= 0"));
  if (sinks < -1) return Bad(absl::StrCat("sinks=", sinks, " must be >= 0"));
  if (has_tokens && std::max(window, 0) + std::max(sinks, 0) > budget_tokens) {
    return Bad(absl::StrCat("window=", window, " + sinks=", std::max(sinks, 0),
                            " exceed budget=", budget_tokens));
  }
  if (pool_kernel != -1 && (pool_kernel < 1 || pool_kernel % 2 == 0)) {
    return Bad(absl::StrCat("pool_kernel=", pool_kernel, " must be odd and >= 1"));
  }
  if (query_window != -1 && query_window < 1) {
    return Bad(absl::StrCat("query_window=", query_window, " must be >= 1"));
  }
  if (stride < 1) return Bad(absl::StrCat("stride=", stride, " must be >= 1"));
  if (offset < 0) return Bad(absl::StrCat("offset=", offset, " must be >= 0"));
  if (!(gamma > 0.0f) || !std::isfinite(gamma)) {
    return Bad(absl::StrCat("gamma=", gamma, " must be > 0"));
  }
  if (mean_tokens != -1 && mean_tokens < 1) {
    return Bad(absl::StrCat("mean_tokens=", mean_tokens, " must be >= 1"));
  }
  if (expected_future < 1) {
    return Bad(absl::StrCat("expected_future=", expected_future, " must be >= 1"));
  }
  if (!(pyramid_beta > 1.0f))
    return Bad(absl::StrCat("pyramid_beta=", pyramid_beta, " must be > 1"));
  if (!(adaptive_floor >= 0.0f && adaptive_floor <= 1.0f)) {
    return Bad(absl::StrCat("adaptive_floor=", adaptive_floor, " must be in [0, 1]"));
  }
  if (allocator == Allocator::kAdaptive && storage != Storage::kPerHead) {
    return Bad("allocator=adaptive gives each head its own budget: it needs storage=per_head");
  }
  if (method == Method::kTova && storage == Storage::kPerHead) {
    return Bad("method=tova keeps one set per layer: it needs storage=shared");
  }
  return absl::OkStatus();
}

absl::StatusOr<CompressionConfig> CompressionConfig::Resolve(int n) const {
  DAPQ_RETURN_IF_ERROR(Validate());
  CompressionConfig c = *this;
  const int budget = n > 0 ? BudgetFor(n) : 0;
  const int window_cap = budget > 0 ? budget / 2 : 1 << 30;
  const int sinks_cap = budget > 0 ? budget / 4 : 1 << 30;
  const bool window_defaulted = window == -1, sinks_defaulted = sinks == -1;
  auto set = [](int& field, int value) {
    if (field == -1) field = value;
  };
  switch (method) {
    case Method::kDapq:
      // Chosen from bench/results/eval (stories260K, held-out prompts): see "Choosing DapQ's
      // defaults" there. The spec's starting point was window 8, w_p 16, kernel 7, content last.
      set(c.window, 0);
      set(c.query_window, 32);
      set(c.pool_kernel, 1);
      break;
    case Method::kSnapKv:
      set(c.window, 32);
      set(c.query_window, c.window);
      set(c.pool_kernel, 7);
      break;
    case Method::kH2o:
      set(c.window, 8);
      break;
    case Method::kStreamingLlm:
      set(c.sinks, 4);
      break;
    case Method::kExpectedAttention:
      set(c.sinks, 4);
      break;
    default:
      break;
  }
  set(c.window, 0);
  set(c.sinks, 0);
  set(c.pool_kernel, 1);
  set(c.query_window, 1);
  set(c.mean_tokens, c.query_window);
  if (window_defaulted) c.window = std::min(c.window, window_cap);
  if (sinks_defaulted) c.sinks = std::min(c.sinks, sinks_cap);
  DAPQ_RETURN_IF_ERROR(c.Validate());
  return c;
}

int CompressionConfig::BudgetFor(int n) const {
  if (method == Method::kFull) return n;
  if (budget_tokens > 0) return budget_tokens;
  return std::max(1, static_cast<int>(std::ceil(budget_ratio * n - 1e-9)));
}

std::string CompressionConfig::DebugString() const {
  std::string s = absl::StrCat("method=", MethodName(method));
  if (budget_tokens > 0) absl::StrAppend(&s, " budget=", budget_tokens);
  if (budget_ratio > 0) absl::StrAppend(&s, " budget_ratio=", budget_ratio);
  absl::StrAppend(&s, " window=", window, " sinks=", sinks,
                  " pool=", pool == kernels::PoolType::kMax ? "max" : "avg", "/", pool_kernel);
  if (method == Method::kDapq) {
    absl::StrAppend(
        &s, " w_p=", query_window, " content=", kContents[static_cast<int>(content)].first,
        " positions=", kPositions[static_cast<int>(positions)].first, " offset=", offset,
        " stride=", stride, " gamma=", gamma, mode == DapqMode::kForward ? " mode=forward" : "");
  }
  absl::StrAppend(&s, " allocator=", kAllocators[static_cast<int>(allocator)].first,
                  " storage=", kStorages[static_cast<int>(storage)].first);
  return s;
}

}  // namespace dapq::worker::compress
