// File: api/tenant_scope.h
// Sessions belong to a tenant: the coordinator replaces a request's client-chosen session id by
// one scoped to the caller's tenant before routing, so the same id from another tenant names
// another session (it cannot read, continue or evict this one). The scoped id keeps the session
// id syntax and length limit (api/request_rules.h), so workers, the KV store and its files see
// an ordinary id: "t<16 hex of the tenant's hash>-<id>", or, when that would be too long,
// "t<16 hex>-h<32 hex of the id's 128-bit hash>". The anonymous tenant "" keeps ids as they are.
// Thread-safe (pure function).
#ifndef DAPQ_API_TENANT_SCOPE_H_
#define DAPQ_API_TENANT_SCOPE_H_

#include <string>

#include "absl/strings/string_view.h"

namespace dapq::api {

std::string ScopedSessionId(absl::string_view tenant, absl::string_view session_id);

}  // namespace dapq::api

#endif  // DAPQ_API_TENANT_SCOPE_H_
