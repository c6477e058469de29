// File: worker/compress/compression_config.cc
// Names, parsing, defaults and validation of CompressionConfig.
#include "worker/compress/compression_config.h"

#include <array>
#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "api/compression_rules.h"
#include "common/status_macros.h"

namespace dapq::worker::compress {
namespace {

// The names live in api/compression_rules.h, in enum order.
template <typename E, size_t N>
absl::StatusOr<E> ParseEnum(absl::string_view field, absl::string_view name,
                            const std::array<absl::string_view, N>& names) {
  DAPQ_ASSIGN_OR_RETURN(const int index, api::FindName(field, name, names));
  return static_cast<E>(index);
}

template <typename E, size_t N>
absl::string_view NameOf(E value, const std::array<absl::string_view, N>& names) {
  const size_t i = static_cast<size_t>(value);
  return i < N ? names[i] : absl::string_view("unknown");
}

static_assert(static_cast<int>(Method::kRandom) + 1 == api::kMethodNames.size());
static_assert(static_cast<int>(Content::kZero) + 1 == api::kContentNames.size());
static_assert(static_cast<int>(Positions::kActual) + 1 == api::kPositionsNames.size());
static_assert(static_cast<int>(Allocator::kAdaptive) + 1 == api::kAllocatorNames.size());
static_assert(static_cast<int>(Storage::kPerHead) + 1 == api::kStorageNames.size());
static_assert(static_cast<int>(DapqMode::kForward) + 1 == api::kDapqModeNames.size());
static_assert(static_cast<int>(kernels::PoolType::kMax) == 0 &&
              static_cast<int>(kernels::PoolType::kAvg) == 1);

absl::Status Bad(const std::string& msg) {
  return absl::InvalidArgumentError(absl::StrCat("compression: ", msg));
}

}  // namespace

absl::StatusOr<Method> ParseMethod(absl::string_view n) {
  return ParseEnum<Method>("method", n, api::kMethodNames);
}
absl::StatusOr<Content> ParseContent(absl::string_view n) {
  return ParseEnum<Content>("content", n, api::kContentNames);
}
absl::StatusOr<Positions> ParsePositions(absl::string_view n) {
  return ParseEnum<Positions>("positions", n, api::kPositionsNames);
}
absl::StatusOr<Allocator> ParseAllocator(absl::string_view n) {
  return ParseEnum<Allocator>("allocator", n, api::kAllocatorNames);
}
absl::StatusOr<Storage> ParseStorage(absl::string_view n) {
  return ParseEnum<Storage>("storage", n, api::kStorageNames);
}
absl::StatusOr<kernels::PoolType> ParsePool(absl::string_view n) {
  return ParseEnum<kernels::PoolType>("pool", n, api::kPoolNames);
}
absl::StatusOr<DapqMode> ParseDapqMode(absl::string_view n) {
  return ParseEnum<DapqMode>("mode", n, api::kDapqModeNames);
}

absl::string_view MethodName(Method m) { return NameOf(m, api::kMethodNames); }

absl::Status CompressionConfig::Validate() const {
  if (method == Method::kFull) return absl::OkStatus();
  // The ranges every entry point shares (api/compression_rules.h), under the flag names.
  api::CompressionNumbers numbers;
  numbers.budget_tokens = budget_tokens;
  numbers.budget_ratio = budget_ratio;
  numbers.window = window;
  numbers.sinks = sinks;
  numbers.pool_kernel = pool_kernel;
  numbers.query_window = query_window;
  numbers.streaming_chunk = streaming_chunk;
  if (absl::Status s = api::CheckCompressionNumbers(numbers, api::kConfigFieldNames); !s.ok()) {
    return Bad(std::string(s.message()));
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
  if (absl::Status s = api::CheckCompressionCombination(NameOf(method, api::kMethodNames),
                                                        NameOf(allocator, api::kAllocatorNames),
                                                        NameOf(storage, api::kStorageNames));
      !s.ok()) {
    return Bad(std::string(s.message()));
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
    absl::StrAppend(&s, " w_p=", query_window, " content=", NameOf(content, api::kContentNames),
                    " positions=", NameOf(positions, api::kPositionsNames), " offset=", offset,
                    " stride=", stride, " gamma=", gamma,
                    mode == DapqMode::kForward ? " mode=forward" : "");
  }
  absl::StrAppend(&s, " allocator=", NameOf(allocator, api::kAllocatorNames),
                  " storage=", NameOf(storage, api::kStorageNames));
  if (streaming_chunk > 0) absl::StrAppend(&s, " streaming_chunk=", streaming_chunk);
  if (every_turn) absl::StrAppend(&s, " every_turn");
  return s;
}

}  // namespace dapq::worker::compress
