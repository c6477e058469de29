// File: api/request_rules.cc
// ValidateGenerateRequest and the session id syntax.
#include "api/request_rules.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "api/compression_rules.h"

namespace dapq::api {
namespace {

absl::Status Prefixed(const absl::Status& s, absl::string_view where) {
  if (s.ok() || where.empty()) return s;
  return absl::Status(s.code(), absl::StrCat(where, s.message()));
}

absl::Status ValidateChatPrompt(const dapq::v1::ChatPrompt& chat) {
  if (chat.messages().empty()) return absl::InvalidArgumentError("prompt.chat.messages is empty");
  if (chat.messages_size() > kMaxChatMessages) {
    return absl::InvalidArgumentError(absl::StrCat("prompt.chat.messages: ", chat.messages_size(),
                                                   " messages; at most ", kMaxChatMessages));
  }
  for (int i = 0; i < chat.messages_size(); ++i) {
    const std::string& role = chat.messages(i).role();
    if (role != "system" && role != "user" && role != "assistant") {
      return absl::InvalidArgumentError(absl::StrCat("prompt.chat.messages[", i, "].role=\"",
                                                     role.substr(0, 32),
                                                     "\" must be system, user or assistant"));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateModelFree(const dapq::v1::GenerateRequest& r, int max_seq_len) {
  const size_t bytes = r.ByteSizeLong();
  if (bytes > kMaxRequestBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "request: ", bytes, " bytes exceeds the limit of ", kMaxRequestBytes, " bytes"));
  }
  size_t prompt_tokens = 0;
  switch (r.prompt_case()) {
    case dapq::v1::GenerateRequest::kText:
      if (r.text().empty()) return absl::InvalidArgumentError("prompt.text is empty");
      break;
    case dapq::v1::GenerateRequest::kTokenIds:
      if (r.token_ids().ids().empty()) {
        return absl::InvalidArgumentError("prompt.token_ids is empty");
      }
      for (int i = 0; i < r.token_ids().ids_size(); ++i) {
        if (r.token_ids().ids(i) < 0) {
          return absl::InvalidArgumentError(
              absl::StrCat("prompt.token_ids[", i, "]=", r.token_ids().ids(i), " is negative"));
        }
      }
      prompt_tokens = r.token_ids().ids_size();
      break;
    case dapq::v1::GenerateRequest::kChat:
      if (absl::Status c = ValidateChatPrompt(r.chat()); !c.ok()) return c;
      break;
    case dapq::v1::GenerateRequest::PROMPT_NOT_SET:
      return absl::InvalidArgumentError("prompt: set prompt.text, prompt.token_ids or prompt.chat");
  }
  if (r.stop_size() > kMaxStopSequences) {
    return absl::InvalidArgumentError(
        absl::StrCat("stop: ", r.stop_size(), " sequences; at most ", kMaxStopSequences));
  }
  for (int i = 0; i < r.stop_size(); ++i) {
    if (r.stop(i).empty() || r.stop(i).size() > kMaxStopSequenceBytes) {
      return absl::InvalidArgumentError(absl::StrCat(
          "stop[", i, "]: must be 1-", kMaxStopSequenceBytes, " bytes, got ", r.stop(i).size()));
    }
  }
  if (r.max_new_tokens() < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max_new_tokens=", r.max_new_tokens(), " must be >= 0 (0 = ", kDefaultMaxNewTokens, ")"));
  }
  const dapq::v1::SamplingOptions& s = r.sampling();
  if (!std::isfinite(s.temperature()) || s.temperature() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("sampling.temperature=", s.temperature(), " must be >= 0"));
  }
  if (!std::isfinite(s.top_p()) || s.top_p() < 0 || s.top_p() > 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("sampling.top_p=", s.top_p(), " must be in (0, 1] (0 = 1)"));
  }
  if (absl::Status c = ValidateCompressionOptions(r.compression()); !c.ok()) return c;
  if (!r.session_id().empty()) {
    if (absl::Status id = ValidateSessionId(r.session_id()); !id.ok()) return id;
  }
  const int new_tokens = EffectiveMaxNewTokens(r);
  if (max_seq_len > 0 && prompt_tokens + new_tokens > static_cast<size_t>(max_seq_len)) {
    return absl::OutOfRangeError(
        absl::StrCat("prompt.token_ids: ", prompt_tokens, " tokens + max_new_tokens=", new_tokens,
                     " exceed the model's context limit of ", max_seq_len, " tokens"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateSessionId(absl::string_view id, absl::string_view field) {
  if (id.empty() || id.size() > kMaxSessionIdChars) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": must be 1-", kMaxSessionIdChars, " characters, got ", id.size()));
  }
  for (char c : id) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '-';
    if (!ok) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ": '", id, "' may only hold [A-Za-z0-9_-]"));
    }
  }
  return absl::OkStatus();
}

int EffectiveMaxNewTokens(const dapq::v1::GenerateRequest& request) {
  return request.max_new_tokens() == 0 ? kDefaultMaxNewTokens : request.max_new_tokens();
}

absl::Status ValidateGenerateRequest(const dapq::v1::GenerateRequest& request, int max_seq_len,
                                     absl::string_view where) {
  return Prefixed(ValidateModelFree(request, max_seq_len), where);
}

}  // namespace dapq::api
