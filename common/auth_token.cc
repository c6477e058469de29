// File: common/auth_token.cc
// LoadClientToken and AttachToken.
#include "common/auth_token.h"

#include <grpcpp/grpcpp.h>

#include <cstdlib>
#include <fstream>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"

namespace dapq {

absl::StatusOr<std::string> LoadClientToken(const std::string& token_file) {
  if (token_file.empty()) {
    const char* env = std::getenv(kAuthTokenEnv);
    return env == nullptr ? std::string() : std::string(absl::StripAsciiWhitespace(env));
  }
  std::ifstream in(token_file);
  if (!in)
    return absl::NotFoundError(absl::StrCat("--auth_token_file ", token_file, ": cannot open"));
  std::string line;
  while (std::getline(in, line)) {
    const std::string token(absl::StripAsciiWhitespace(line));
    if (!token.empty()) return token;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("--auth_token_file ", token_file, ": holds no token"));
}

void AttachToken(grpc::ClientContext* context, const std::string& token) {
  if (!token.empty()) context->AddMetadata(kAuthorizationMetadata, "Bearer " + token);
}

namespace {
absl::Mutex& TokenMutex() {
  static absl::Mutex mu;
  return mu;
}
std::string& ProcessToken() ABSL_EXCLUSIVE_LOCKS_REQUIRED(TokenMutex()) {
  static std::string* token = new std::string(*LoadClientToken(""));  // from the environment
  return *token;
}
}  // namespace

void SetClientToken(std::string token) {
  absl::MutexLock lock(&TokenMutex());
  ProcessToken() = std::move(token);
}

std::string ClientToken() {
  absl::MutexLock lock(&TokenMutex());
  return ProcessToken();
}

void AttachClientToken(grpc::ClientContext* context) { AttachToken(context, ClientToken()); }

}  // namespace dapq
