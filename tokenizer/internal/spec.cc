// File: tokenizer/internal/spec.cc
// tokenizer.json file reading and typed field access with Status errors.
#include "tokenizer/internal/spec.h"

#include "absl/strings/str_cat.h"
#include "common/mapped_file.h"
#include "common/status_macros.h"

namespace dapq::tokenizer::internal {

absl::Status SpecContext::Invalid(const std::string& message) const {
  return absl::InvalidArgumentError(absl::StrCat(file, ": ", component, ": ", message));
}

absl::Status SpecContext::Unsupported(const std::string& kind, const std::string& type) const {
  return absl::UnimplementedError(
      absl::StrCat(file, ": ", component, ": unsupported ", kind, " type \"", type, "\""));
}

absl::StatusOr<Json> ParseJsonText(std::string_view text, const std::string& name) {
  try {
    return Json::parse(text.begin(), text.end());
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": malformed or truncated JSON (", text.size(), " bytes): ", e.what()));
  }
}

absl::StatusOr<Json> ParseJsonFile(const std::string& path) {
  DAPQ_ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  return ParseJsonText(text, path);
}

const Json* FindField(const Json& obj, const std::string& key) {
  if (!obj.is_object()) return nullptr;
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return nullptr;
  return &*it;
}

absl::StatusOr<std::string> GetString(const Json& obj, const std::string& key,
                                      const SpecContext& ctx) {
  const Json* v = FindField(obj, key);
  if (v == nullptr) return ctx.Invalid(absl::StrCat("missing string field \"", key, "\""));
  if (!v->is_string()) return ctx.Invalid(absl::StrCat("field \"", key, "\" is not a string"));
  return v->get<std::string>();
}

absl::StatusOr<std::optional<std::string>> GetOptionalString(const Json& obj,
                                                             const std::string& key,
                                                             const SpecContext& ctx) {
  const Json* v = FindField(obj, key);
  if (v == nullptr) return std::optional<std::string>();
  if (!v->is_string()) return ctx.Invalid(absl::StrCat("field \"", key, "\" is not a string"));
  return std::optional<std::string>(v->get<std::string>());
}

absl::StatusOr<bool> GetBool(const Json& obj, const std::string& key, bool default_value,
                             const SpecContext& ctx) {
  const Json* v = FindField(obj, key);
  if (v == nullptr) return default_value;
  if (!v->is_boolean()) return ctx.Invalid(absl::StrCat("field \"", key, "\" is not a boolean"));
  return v->get<bool>();
}

absl::StatusOr<long long> GetInt(const Json& obj, const std::string& key, long long default_value,
                                 const SpecContext& ctx) {
  const Json* v = FindField(obj, key);
  if (v == nullptr) return default_value;
  if (!v->is_number_integer()) {
    return ctx.Invalid(absl::StrCat("field \"", key, "\" is not an integer"));
  }
  return v->get<long long>();
}

absl::StatusOr<std::string> GetType(const Json& obj, const SpecContext& ctx) {
  if (!obj.is_object()) return ctx.Invalid("expected an object");
  return GetString(obj, "type", ctx);
}

absl::StatusOr<const Json*> GetArray(const Json& obj, const std::string& key,
                                     const SpecContext& ctx) {
  const Json* v = FindField(obj, key);
  if (v == nullptr || !v->is_array()) {
    return ctx.Invalid(absl::StrCat("missing or non-array field \"", key, "\""));
  }
  return v;
}

absl::StatusOr<PatternSpec> GetPattern(const Json& obj, const std::string& key,
                                       const SpecContext& ctx) {
  const Json* v = FindField(obj, key);
  if (v == nullptr || !v->is_object()) {
    return ctx.Invalid(absl::StrCat("missing or non-object pattern \"", key, "\""));
  }
  PatternSpec p;
  if (const Json* s = FindField(*v, "String"); s != nullptr && s->is_string()) {
    p.text = s->get<std::string>();
    return p;
  }
  if (const Json* r = FindField(*v, "Regex"); r != nullptr && r->is_string()) {
    p.is_regex = true;
    p.text = r->get<std::string>();
    return p;
  }
  return ctx.Invalid(absl::StrCat("pattern \"", key, "\" has neither a String nor a Regex"));
}

}  // namespace dapq::tokenizer::internal
