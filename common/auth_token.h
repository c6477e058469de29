// File: common/auth_token.h
// The bearer token a client sends to DapQ Serve's public APIs: read from a file (its first
// non-empty line) or from $DAPQ_AUTH_TOKEN, and attached to gRPC calls as the
// `authorization: Bearer <token>` metadata that the coordinator checks (coordinator/tenant_auth.h).
// Thread-safe.
#ifndef DAPQ_COMMON_AUTH_TOKEN_H_
#define DAPQ_COMMON_AUTH_TOKEN_H_

#include <string>

#include "absl/status/statusor.h"

namespace grpc {
class ClientContext;
}

namespace dapq {

inline constexpr char kAuthorizationMetadata[] = "authorization";
inline constexpr char kAuthTokenEnv[] = "DAPQ_AUTH_TOKEN";

// `token_file`'s first non-empty line (surrounding whitespace removed) when set; else
// $DAPQ_AUTH_TOKEN; else "" (send no token). NotFound / InvalidArgument naming the file.
absl::StatusOr<std::string> LoadClientToken(const std::string& token_file);

// Adds the token to a call (nothing for "").
void AttachToken(grpc::ClientContext* context, const std::string& token);

// The token this process's clients send (the CLI's --auth_token_file, the launcher's own calls):
// $DAPQ_AUTH_TOKEN until SetClientToken replaces it. AttachClientToken adds it to a call.
void SetClientToken(std::string token);
std::string ClientToken();
void AttachClientToken(grpc::ClientContext* context);

}  // namespace dapq

#endif  // DAPQ_COMMON_AUTH_TOKEN_H_
