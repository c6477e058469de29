// File: api/compression_rules.cc
// Names, ranges and combinations of the compression options.
#include "api/compression_rules.h"

#include <algorithm>
#include <cmath>
#include <tuple>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace dapq::api {
namespace {

absl::Status Bad(absl::string_view field, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(field, what));
}

}  // namespace

absl::StatusOr<int> FindName(absl::string_view field, absl::string_view name,
                             std::span<const absl::string_view> names) {
  for (size_t i = 0; i < names.size(); ++i) {
    if (names[i] == name) return static_cast<int>(i);
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown ", field, " '", name, "'; expected one of: ", absl::StrJoin(names, ", ")));
}

absl::Status CheckCompressionNumbers(const CompressionNumbers& c, const CompressionFieldNames& n) {
  const bool has_tokens = c.budget_tokens != 0, has_ratio = c.budget_ratio != 0.0;
  if (has_tokens == has_ratio) {
    return absl::InvalidArgumentError(absl::StrCat("set exactly one of ", n.budget_tokens,
                                                   " (tokens kept per layer and KV head) "
                                                   "and ",
                                                   n.budget_ratio, " (a share of the prompt); got ",
                                                   n.budget_tokens, "=", c.budget_tokens, " ",
                                                   n.budget_ratio, "=", c.budget_ratio));
  }
  if (has_tokens && c.budget_tokens < 0) {
    return Bad(n.budget_tokens, absl::StrCat("=", c.budget_tokens, " must be > 0"));
  }
  if (has_ratio &&
      !(std::isfinite(c.budget_ratio) && c.budget_ratio > 0.0 && c.budget_ratio <= 1.0)) {
    return Bad(n.budget_ratio, absl::StrCat("=", c.budget_ratio, " must be in (0, 1]"));
  }
  if (c.window < -1) return Bad(n.window, absl::StrCat("=", c.window, " must be >= 0"));
  if (c.sinks < -1) return Bad(n.sinks, absl::StrCat("=", c.sinks, " must be >= 0"));
  const int64_t window = std::max<int64_t>(c.window, 0), sinks = std::max<int64_t>(c.sinks, 0);
  if (has_tokens && window + sinks > c.budget_tokens) {
    return Bad(n.window, absl::StrCat("=", c.window, " + ", n.sinks, "=", sinks, " exceed ",
                                      n.budget_tokens, "=", c.budget_tokens));
  }
  if (c.pool_kernel != -1 && (c.pool_kernel < 1 || c.pool_kernel % 2 == 0)) {
    return Bad(n.pool_kernel, absl::StrCat("=", c.pool_kernel, " must be odd and >= 1"));
  }
  if (c.query_window != -1 && c.query_window < 1) {
    return Bad(n.query_window, absl::StrCat("=", c.query_window, " must be >= 1"));
  }
  if (c.streaming_chunk < 0 || c.streaming_chunk > kMaxStreamingChunk) {
    return Bad(n.streaming_chunk, absl::StrCat("=", c.streaming_chunk, " must be in [0, ",
                                               kMaxStreamingChunk, "] (0: compress once)"));
  }
  return absl::OkStatus();
}

absl::Status CheckCompressionCombination(absl::string_view method, absl::string_view allocator,
                                         absl::string_view storage) {
  const bool per_head = storage == "per_head";
  if (allocator == "adaptive" && !per_head) {
    return absl::InvalidArgumentError(
        "allocator=adaptive gives each head its own budget: it needs storage=per_head");
  }
  if (method == "tova" && per_head) {
    return absl::InvalidArgumentError(
        "method=tova keeps one set per layer: it needs storage=shared");
  }
  return absl::OkStatus();
}

absl::Status ValidateCompressionOptions(const dapq::v1::CompressionOptions& o) {
  auto check_name = [](absl::string_view field, const std::string& name,
                       std::span<const absl::string_view> names) -> absl::Status {
    if (name.empty()) return absl::OkStatus();
    absl::StatusOr<int> found = FindName(field, name, names);
    if (found.ok()) return absl::OkStatus();
    return absl::InvalidArgumentError(
        absl::StrCat("compression.", field, ": ", found.status().message()));
  };
  if (absl::Status s = check_name("method", o.method(), kMethodNames); !s.ok()) return s;
  if (o.method().empty() || o.method() == "full") return absl::OkStatus();
  struct Named {
    absl::string_view field;
    const std::string& value;
    std::span<const absl::string_view> names;
  };
  const Named named[] = {
      {"content", o.content(), kContentNames}, {"positions", o.positions(), kPositionsNames},
      {"pool", o.pool(), kPoolNames},          {"allocator", o.allocator(), kAllocatorNames},
      {"storage", o.storage(), kStorageNames}, {"mode", o.mode(), kDapqModeNames}};
  for (const Named& n : named) {
    if (absl::Status s = check_name(n.field, n.value, n.names); !s.ok()) return s;
  }
  // Optional fields that are set hold explicit values: -1 (a config's "method default") is out
  // of range here.
  const std::tuple<absl::string_view, bool, int32_t> optional_fields[] = {
      {kRequestFieldNames.window, o.has_window(), o.window()},
      {kRequestFieldNames.sinks, o.has_sinks(), o.sinks()},
      {kRequestFieldNames.pool_kernel, o.has_pool_kernel(), o.pool_kernel()},
      {kRequestFieldNames.query_window, o.has_query_window(), o.query_window()}};
  for (const auto& [field, set, value] : optional_fields) {
    if (set && value < 0) return Bad(field, absl::StrCat("=", value, " must be >= 0"));
  }
  CompressionNumbers numbers;
  numbers.budget_tokens = o.budget_tokens();
  numbers.budget_ratio = o.budget_ratio();
  if (o.has_window()) numbers.window = o.window();
  if (o.has_sinks()) numbers.sinks = o.sinks();
  if (o.has_pool_kernel()) numbers.pool_kernel = o.pool_kernel();
  if (o.has_query_window()) numbers.query_window = o.query_window();
  numbers.streaming_chunk = o.streaming_chunk();
  if (absl::Status s = CheckCompressionNumbers(numbers, kRequestFieldNames); !s.ok()) return s;
  if (absl::Status s = CheckCompressionCombination(o.method(), o.allocator(), o.storage());
      !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("compression: ", s.message()));
  }
  return absl::OkStatus();
}

}  // namespace dapq::api
