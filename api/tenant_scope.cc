// File: api/tenant_scope.cc
// ScopedSessionId: XXH64 of the tenant, XXH3-128 of an over-long id.
#include "api/tenant_scope.h"

#include <xxhash.h>

#include "absl/strings/str_format.h"
#include "api/request_rules.h"

namespace dapq::api {

std::string ScopedSessionId(absl::string_view tenant, absl::string_view session_id) {
  if (tenant.empty() || session_id.empty()) return std::string(session_id);
  const std::string prefix =
      absl::StrFormat("t%016x-", XXH64(tenant.data(), tenant.size(), /*seed=*/0x7e4a47));
  if (prefix.size() + session_id.size() <= kMaxSessionIdChars) {
    return prefix + std::string(session_id);
  }
  const XXH128_hash_t h = XXH3_128bits(session_id.data(), session_id.size());
  return absl::StrFormat("%sh%016x%016x", prefix, h.high64, h.low64);
}

}  // namespace dapq::api
