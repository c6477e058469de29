// File: api/compression_rules.h
// The rules of KV-cache compression options, written once for every entry point: the names
// each option accepts (methods, DapQ content and positions, pooling, allocators, storage, DapQ
// mode), the numeric ranges of budgets, windows, sinks, pooling kernels and query windows, and
// the combinations that are not allowed. The worker's CompressionConfig (its parsing and
// Validate()), the coordinator's request validation and the CLI's flags all use these, so a
// request gets the same verdict wherever it is checked.
// Errors are InvalidArgument naming the field as the caller spells it (a request field such as
// "compression.budget_tokens", or a CLI/config name such as "budget").
// Thread-safe (pure functions and constants).
#ifndef DAPQ_API_COMPRESSION_RULES_H_
#define DAPQ_API_COMPRESSION_RULES_H_

#include <array>
#include <cstdint>
#include <span>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "dapq/v1/inference.pb.h"

namespace dapq::api {

// Accepted names, in the order of the worker's enums (index = enum value).
inline constexpr std::array<absl::string_view, 8> kMethodNames = {
    "full", "dapq", "snapkv", "h2o", "streaming", "tova", "expected_attention", "random"};
inline constexpr std::array<absl::string_view, 5> kContentNames = {"last", "mean", "last_token",
                                                                   "random", "zero"};
inline constexpr std::array<absl::string_view, 2> kPositionsNames = {"future", "actual"};
inline constexpr std::array<absl::string_view, 2> kPoolNames = {"max", "avg"};
inline constexpr std::array<absl::string_view, 3> kAllocatorNames = {"uniform", "pyramid",
                                                                     "adaptive"};
inline constexpr std::array<absl::string_view, 2> kStorageNames = {"shared", "per_head"};
inline constexpr std::array<absl::string_view, 2> kDapqModeNames = {"pseudo", "forward"};

// The index of `name` in `names`; InvalidArgument "unknown <field> '<name>'; expected one of:
// ..." otherwise.
absl::StatusOr<int> FindName(absl::string_view field, absl::string_view name,
                             std::span<const absl::string_view> names);

// How the numeric fields are called where they are checked.
struct CompressionFieldNames {
  absl::string_view budget_tokens, budget_ratio, window, sinks, pool_kernel, query_window,
      streaming_chunk;
};
// dapq.v1.CompressionOptions fields of a request.
inline constexpr CompressionFieldNames kRequestFieldNames = {
    "compression.budget_tokens",  "compression.budget_ratio", "compression.window",
    "compression.sinks",          "compression.pool_kernel",  "compression.query_window",
    "compression.streaming_chunk"};
// `dapq` flags and CompressionConfig fields.
inline constexpr CompressionFieldNames kConfigFieldNames = {
    "budget", "budget_ratio", "window", "sinks", "pool_kernel", "query_window", "streaming_chunk"};

// The numeric options of a compression method other than full; -1 = the method's default for
// window, sinks, pool_kernel and query_window.
struct CompressionNumbers {
  int64_t budget_tokens = 0;    // > 0, or 0 when the budget is a ratio
  double budget_ratio = 0.0;    // in (0, 1], or 0 when the budget is in tokens
  int64_t window = -1;          // >= 0
  int64_t sinks = -1;           // >= 0; window + sinks <= budget_tokens
  int64_t pool_kernel = -1;     // odd, >= 1
  int64_t query_window = -1;    // >= 1
  int64_t streaming_chunk = 0;  // >= 0 (0: one-shot), at most kMaxStreamingChunk
};
inline constexpr int64_t kMaxStreamingChunk = 1 << 24;

// Exactly one budget form, and every range above.
absl::Status CheckCompressionNumbers(const CompressionNumbers& numbers,
                                     const CompressionFieldNames& names);

// Combinations no method supports: allocator=adaptive needs storage=per_head; method=tova
// keeps one set per layer and needs storage=shared. Empty names are the defaults.
absl::Status CheckCompressionCombination(absl::string_view method, absl::string_view allocator,
                                         absl::string_view storage);

// Every rule above on a request's options (field names "compression.*"). An empty method is
// full (no compression; the other fields are then ignored).
absl::Status ValidateCompressionOptions(const dapq::v1::CompressionOptions& options);

}  // namespace dapq::api

#endif  // DAPQ_API_COMPRESSION_RULES_H_
