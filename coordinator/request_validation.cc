// File: coordinator/request_validation.cc
// ValidateGenerateRequest.
#include "coordinator/request_validation.h"

#include <cmath>

#include "absl/strings/str_cat.h"

namespace dapq::coordinator {
namespace {
constexpr int kDefaultMaxNewTokens = 64;  // as the worker's
}  // namespace

absl::Status ValidateSessionId(const std::string& id, const std::string& field) {
  if (id.size() > 128) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": must be 1-128 characters, got ", id.size()));
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

absl::Status ValidateGenerateRequest(const dapq::v1::GenerateRequest& r, int max_seq_len,
                                     const std::string& where) {
  const size_t bytes = r.ByteSizeLong();
  if (bytes > kMaxRequestBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, "request: ", bytes, " bytes exceeds the limit of ", kMaxRequestBytes, " bytes"));
  }
  size_t prompt_tokens = 0;
  switch (r.prompt_case()) {
    case dapq::v1::GenerateRequest::kText:
      if (r.text().empty()) return absl::InvalidArgumentError(where + "prompt.text is empty");
      break;
    case dapq::v1::GenerateRequest::kTokenIds:
      if (r.token_ids().ids().empty()) {
        return absl::InvalidArgumentError(where + "prompt.token_ids is empty");
      }
      for (int i = 0; i < r.token_ids().ids_size(); ++i) {
        if (r.token_ids().ids(i) < 0) {
          return absl::InvalidArgumentError(absl::StrCat(
              where, "prompt.token_ids[", i, "]=", r.token_ids().ids(i), " is negative"));
        }
      }
      prompt_tokens = r.token_ids().ids_size();
      break;
    case dapq::v1::GenerateRequest::PROMPT_NOT_SET:
      return absl::InvalidArgumentError(where + "prompt: set prompt.text or prompt.token_ids");
  }
  if (r.max_new_tokens() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, "max_new_tokens=", r.max_new_tokens(), " must be >= 0"));
  }
  const dapq::v1::SamplingOptions& s = r.sampling();
  if (!std::isfinite(s.temperature()) || s.temperature() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, "sampling.temperature=", s.temperature(), " must be >= 0"));
  }
  if (!std::isfinite(s.top_p()) || s.top_p() < 0 || s.top_p() > 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, "sampling.top_p=", s.top_p(), " must be in (0, 1]"));
  }
  const dapq::v1::CompressionOptions& c = r.compression();
  if (c.budget_tokens() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, "compression.budget_tokens=", c.budget_tokens(), " must be > 0"));
  }
  if (!std::isfinite(c.budget_ratio()) || c.budget_ratio() < 0 || c.budget_ratio() > 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, "compression.budget_ratio=", c.budget_ratio(), " must be in (0, 1]"));
  }
  if (!r.session_id().empty()) {
    if (absl::Status st = ValidateSessionId(r.session_id(), where + "session_id"); !st.ok()) {
      return st;
    }
  }
  const int new_tokens = r.max_new_tokens() == 0 ? kDefaultMaxNewTokens : r.max_new_tokens();
  if (max_seq_len > 0 && prompt_tokens + new_tokens > static_cast<size_t>(max_seq_len)) {
    return absl::OutOfRangeError(absl::StrCat(
        where, "prompt.token_ids: ", prompt_tokens, " tokens + max_new_tokens=", new_tokens,
        " exceed the model's context limit of ", max_seq_len, " tokens"));
  }
  return absl::OkStatus();
}

}  // namespace dapq::coordinator
