// File: api/batch_items.cc
// The JSONL item parser (nlohmann-json for the line, protobuf's JSON mapping for the nested
// option messages).
#include "api/batch_items.h"

#include <google/protobuf/util/json_util.h>

#include <limits>
#include <string>

#include "absl/strings/str_cat.h"
#include "api/request_rules.h"
#include "nlohmann/json.hpp"

namespace dapq::api {
namespace {

constexpr absl::string_view kFields =
    "prompt, token_ids, max_new_tokens, session_id, sampling, compression, ignore_stop_tokens";

absl::Status Bad(absl::string_view where, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(where, ": ", what));
}

bool IsInt32(const nlohmann::json& v) {
  if (!v.is_number_integer()) return false;
  if (v.is_number_unsigned()) return v.get<uint64_t>() <= std::numeric_limits<int32_t>::max();
  const int64_t x = v.get<int64_t>();
  return x >= std::numeric_limits<int32_t>::min() && x <= std::numeric_limits<int32_t>::max();
}

// A nested options object through protobuf's JSON mapping (unknown fields rejected).
absl::Status ParseMessage(const nlohmann::json& value, absl::string_view where,
                          absl::string_view key, google::protobuf::Message* message) {
  if (!value.is_object()) return Bad(where, absl::StrCat("\"", key, "\" must be an object"));
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = false;
  const auto status = google::protobuf::util::JsonStringToMessage(value.dump(), message, options);
  if (!status.ok()) {
    return Bad(where, absl::StrCat("\"", key, "\": ", status.ToString()));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<dapq::v1::GenerateRequest> ParseBatchItem(absl::string_view line,
                                                         absl::string_view where) {
  const nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return Bad(where, "not valid JSON");
  if (!j.is_object()) return Bad(where, "not a JSON object");
  if (j.contains("prompt") && j.contains("token_ids")) {
    return Bad(where, "set \"prompt\" or \"token_ids\", not both");
  }
  dapq::v1::GenerateRequest r;
  for (const auto& [key, value] : j.items()) {
    if (key == "prompt" && value.is_string()) {
      r.set_text(value.get<std::string>());
    } else if (key == "token_ids" && value.is_array()) {
      dapq::v1::TokenIds* ids = r.mutable_token_ids();
      for (const auto& id : value) {
        if (!IsInt32(id)) return Bad(where, "token_ids must hold 32-bit integers");
        ids->add_ids(id.get<int32_t>());
      }
    } else if (key == "max_new_tokens" && IsInt32(value)) {
      r.set_max_new_tokens(value.get<int32_t>());
    } else if (key == "session_id" && value.is_string()) {
      r.set_session_id(value.get<std::string>());
    } else if (key == "ignore_stop_tokens" && value.is_boolean()) {
      r.set_ignore_stop_tokens(value.get<bool>());
    } else if (key == "sampling") {
      if (absl::Status s = ParseMessage(value, where, key, r.mutable_sampling()); !s.ok()) return s;
    } else if (key == "compression") {
      if (absl::Status s = ParseMessage(value, where, key, r.mutable_compression()); !s.ok()) {
        return s;
      }
    } else {
      return Bad(where,
                 absl::StrCat("unknown or mistyped field \"", key, "\" (expected ", kFields, ")"));
    }
  }
  return r;
}

absl::StatusOr<std::vector<dapq::v1::GenerateRequest>> ReadBatchItems(std::istream& in,
                                                                      absl::string_view source) {
  std::vector<dapq::v1::GenerateRequest> items;
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    if (static_cast<int>(items.size()) >= kMaxBatchItems) {
      return absl::InvalidArgumentError(
          absl::StrCat(source, ": more than ", kMaxBatchItems, " items"));
    }
    absl::StatusOr<dapq::v1::GenerateRequest> item =
        ParseBatchItem(line, absl::StrCat(source, " line ", n));
    if (!item.ok()) return item.status();
    items.push_back(std::move(*item));
  }
  return items;
}

absl::Status ApplyBatchDefaults(const dapq::v1::GenerateRequest& defaults, int max_seq_len,
                                const std::function<std::string(size_t)>& where,
                                std::vector<dapq::v1::GenerateRequest>& items) {
  if (defaults.prompt_case() != dapq::v1::GenerateRequest::PROMPT_NOT_SET) {
    return absl::InvalidArgumentError("defaults.prompt: defaults may not carry a prompt");
  }
  if (items.size() > static_cast<size_t>(kMaxBatchItems)) {
    return absl::InvalidArgumentError(
        absl::StrCat("items: ", items.size(), " items exceed the limit of ", kMaxBatchItems));
  }
  for (size_t i = 0; i < items.size(); ++i) {
    dapq::v1::GenerateRequest merged = defaults;
    merged.MergeFrom(items[i]);
    items[i] = std::move(merged);
    if (absl::Status s = ValidateGenerateRequest(items[i], max_seq_len, where(i)); !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

}  // namespace dapq::api
