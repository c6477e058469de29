// File: coordinator/tenant_auth.h
// Who is calling the public APIs: a bearer token (`authorization: Bearer <token>`, gRPC metadata
// or HTTP header) looked up in the coordinator's --auth_token_file, which holds one
// `TENANT TOKEN` pair per line ('#' starts a comment). The tenant names the caller's sessions
// and batch jobs (api/tenant_scope.h), so another token cannot read, continue or evict them.
// Without a token file every caller is the anonymous tenant "" (the coordinator says so at
// start).
// Thread-safety: immutable after Load.
#ifndef DAPQ_COORDINATOR_TENANT_AUTH_H_
#define DAPQ_COORDINATOR_TENANT_AUTH_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace grpc {
class ServerContext;
}

namespace dapq::coordinator {

// Tokens shorter than this are refused when the file is loaded (guessable).
inline constexpr size_t kMinTokenChars = 16;

class TenantAuth {
 public:
  // InvalidArgument naming the file and line for a malformed line, a tenant name outside
  // [A-Za-z0-9_-]{1,64}, a short token or a token given twice; NotFound for a missing file.
  static absl::StatusOr<std::unique_ptr<TenantAuth>> Load(const std::string& path);
  static absl::StatusOr<std::unique_ptr<TenantAuth>> Parse(absl::string_view text,
                                                           absl::string_view where);

  // The tenant of an `authorization` value ("Bearer <token>"); Unauthenticated otherwise. Every
  // token is compared in constant time.
  absl::StatusOr<std::string> Authenticate(absl::string_view authorization) const;

  int tenants() const;

 private:
  struct Entry {
    std::string tenant, token;
  };
  std::vector<Entry> entries_;
};

// The tenant of a gRPC call: "" when `auth` is null (authentication off), else
// Authenticate(the call's authorization metadata).
absl::StatusOr<std::string> CallTenant(const TenantAuth* auth, const grpc::ServerContext& context);

}  // namespace dapq::coordinator

#endif  // DAPQ_COORDINATOR_TENANT_AUTH_H_
