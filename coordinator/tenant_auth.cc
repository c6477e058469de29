// File: coordinator/tenant_auth.cc
// TenantAuth: the token file and constant-time lookup.
#include "coordinator/tenant_auth.h"

#include <grpcpp/grpcpp.h>

#include <fstream>
#include <set>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace dapq::coordinator {
namespace {

bool ValidTenant(absl::string_view t) {
  if (t.empty() || t.size() > 64) return false;
  for (char c : t) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '-') return false;
  }
  return true;
}

// Equal contents, in time that depends only on the lengths.
bool ConstantTimeEquals(absl::string_view a, absl::string_view b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  const size_t n = std::min(a.size(), b.size());
  for (size_t i = 0; i < n; ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

}  // namespace

absl::StatusOr<std::unique_ptr<TenantAuth>> TenantAuth::Load(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("--auth_token_file ", path, ": cannot open"));
  std::ostringstream text;
  text << in.rdbuf();
  return Parse(text.str(), absl::StrCat("--auth_token_file ", path));
}

absl::StatusOr<std::unique_ptr<TenantAuth>> TenantAuth::Parse(absl::string_view text,
                                                              absl::string_view where) {
  auto auth = std::unique_ptr<TenantAuth>(new TenantAuth());
  std::set<std::string> tokens;
  int line_no = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_no;
    if (const size_t hash = line.find('#'); hash != absl::string_view::npos) {
      line = line.substr(0, hash);
    }
    line = absl::StripAsciiWhitespace(line);
    if (line.empty()) continue;
    const std::vector<absl::string_view> fields =
        absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    if (fields.size() != 2) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, " line ", line_no, ": expected \"TENANT TOKEN\""));
    }
    if (!ValidTenant(fields[0])) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, " line ", line_no, ": tenant must be 1-64 characters of [A-Za-z0-9_-]"));
    }
    if (fields[1].size() < kMinTokenChars) {
      return absl::InvalidArgumentError(absl::StrCat(where, " line ", line_no, ": token of ",
                                                     fields[1].size(), " characters; at least ",
                                                     kMinTokenChars));
    }
    if (!tokens.insert(std::string(fields[1])).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, " line ", line_no, ": this token is already given"));
    }
    auth->entries_.push_back({std::string(fields[0]), std::string(fields[1])});
  }
  if (auth->entries_.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": no \"TENANT TOKEN\" line"));
  }
  return auth;
}

absl::StatusOr<std::string> TenantAuth::Authenticate(absl::string_view authorization) const {
  absl::string_view token = absl::StripAsciiWhitespace(authorization);
  if (token.empty()) {
    return absl::UnauthenticatedError(
        "missing credentials: send the header \"authorization: Bearer <token>\"");
  }
  if (!absl::ConsumePrefix(&token, "Bearer ") && !absl::ConsumePrefix(&token, "bearer ")) {
    return absl::UnauthenticatedError("authorization: expected \"Bearer <token>\"");
  }
  token = absl::StripAsciiWhitespace(token);
  const std::string* tenant = nullptr;
  for (const Entry& e : entries_) {  // every entry, so the time does not tell which matched
    if (ConstantTimeEquals(token, e.token)) tenant = &e.tenant;
  }
  if (tenant == nullptr) return absl::UnauthenticatedError("invalid token");
  return *tenant;
}

int TenantAuth::tenants() const {
  std::set<std::string> names;
  for (const Entry& e : entries_) names.insert(e.tenant);
  return static_cast<int>(names.size());
}

absl::StatusOr<std::string> CallTenant(const TenantAuth* auth, const grpc::ServerContext& context) {
  if (auth == nullptr) return std::string();
  const auto& metadata = context.client_metadata();
  const auto it = metadata.find("authorization");
  return auth->Authenticate(it == metadata.end()
                                ? absl::string_view()
                                : absl::string_view(it->second.data(), it->second.size()));
}

}  // namespace dapq::coordinator
