// File: tokenizer/internal/spec.h
// Reading tokenizer.json: the file itself (NotFound / InvalidArgument naming the path) and typed
// field access that turns a missing or mistyped field into an InvalidArgument naming the file,
// the component and the field, instead of a nlohmann::json exception.
// Thread-safety: stateless functions; a SpecContext is a value.
#ifndef DAPQ_TOKENIZER_INTERNAL_SPEC_H_
#define DAPQ_TOKENIZER_INTERNAL_SPEC_H_

#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace dapq::tokenizer::internal {

using Json = nlohmann::json;

// The largest token id a tokenizer.json may use (vocabulary and added tokens). The tokenizer
// keeps per-id tables sized by the largest id, so an id near 2^30 in a 60-byte file asked for tens
// of gigabytes (found by tests/fuzz/hf_tokenizer_json_fuzzer); real vocabularies stay far below
// (Llama-3: 128,256; Qwen2: 151,665; Gemma: 262,144).
inline constexpr long long kMaxTokenId = (1 << 21) - 1;

// Where a component sits: the file name and the JSON path ("normalizer.normalizers[1]").
struct SpecContext {
  std::string file;
  std::string component;

  SpecContext Child(const std::string& suffix) const { return {file, component + suffix}; }
  // "<file>: <component>: <message>".
  absl::Status Invalid(const std::string& message) const;
  // Unimplemented "<file>: <component>: unsupported <kind> type "<type>"".
  absl::Status Unsupported(const std::string& kind, const std::string& type) const;
};

// Reads and parses a JSON file: NotFound when it is missing, InvalidArgument (with the parser's
// position) when it is malformed or truncated.
absl::StatusOr<Json> ParseJsonFile(const std::string& path);
// Parses JSON text; `name` labels errors.
absl::StatusOr<Json> ParseJsonText(std::string_view text, const std::string& name);

// Field access on an object. A missing key or JSON null gives the default (or nullopt).
const Json* FindField(const Json& obj, const std::string& key);  // nullptr: absent or null
absl::StatusOr<std::string> GetString(const Json& obj, const std::string& key,
                                      const SpecContext& ctx);  // required
absl::StatusOr<std::optional<std::string>> GetOptionalString(const Json& obj,
                                                             const std::string& key,
                                                             const SpecContext& ctx);
absl::StatusOr<bool> GetBool(const Json& obj, const std::string& key, bool default_value,
                             const SpecContext& ctx);
absl::StatusOr<long long> GetInt(const Json& obj, const std::string& key, long long default_value,
                                 const SpecContext& ctx);
// The "type" field of a component object.
absl::StatusOr<std::string> GetType(const Json& obj, const SpecContext& ctx);
// A required array field.
absl::StatusOr<const Json*> GetArray(const Json& obj, const std::string& key,
                                     const SpecContext& ctx);

// A tokenizer.json pattern object: {"String": "..."} or {"Regex": "..."}.
struct PatternSpec {
  bool is_regex = false;
  std::string text;
};
absl::StatusOr<PatternSpec> GetPattern(const Json& obj, const std::string& key,
                                       const SpecContext& ctx);

}  // namespace dapq::tokenizer::internal

#endif  // DAPQ_TOKENIZER_INTERNAL_SPEC_H_
