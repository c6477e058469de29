// File: common/tls.cc
// PEM loading, loopback detection and gRPC credentials.
#include "common/tls.h"

#include <arpa/inet.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/security/server_credentials.h>

#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"

namespace dapq {
namespace {

absl::StatusOr<std::string> ReadPem(const std::string& path, const char* flag) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(flag, " ", path, ": cannot open"));
  std::ostringstream text;
  text << in.rdbuf();
  if (!absl::StrContains(text.str(), "-----BEGIN ")) {
    return absl::InvalidArgumentError(absl::StrCat(flag, " ", path, ": no PEM block"));
  }
  return text.str();
}

absl::Mutex& ClientMutex() {
  static absl::Mutex mu;
  return mu;
}
std::shared_ptr<grpc::ChannelCredentials>& ClientCredentials()
    ABSL_EXCLUSIVE_LOCKS_REQUIRED(ClientMutex()) {
  static auto* creds =
      new std::shared_ptr<grpc::ChannelCredentials>(grpc::InsecureChannelCredentials());
  return *creds;
}
std::string& ClientServerName() ABSL_EXCLUSIVE_LOCKS_REQUIRED(ClientMutex()) {
  static auto* name = new std::string();
  return *name;
}

}  // namespace

absl::StatusOr<TlsPem> LoadTlsPem(const TlsFiles& files) {
  if (files.cert.empty() || files.key.empty() || files.ca.empty()) {
    return absl::InvalidArgumentError(
        "TLS needs all of --tls_cert, --tls_key and --tls_ca (or none of them)");
  }
  TlsPem pem;
  auto cert = ReadPem(files.cert, "--tls_cert");
  if (!cert.ok()) return cert.status();
  auto key = ReadPem(files.key, "--tls_key");
  if (!key.ok()) return key.status();
  auto ca = ReadPem(files.ca, "--tls_ca");
  if (!ca.ok()) return ca.status();
  pem.cert = *std::move(cert);
  pem.key = *std::move(key);
  pem.ca = *std::move(ca);
  return pem;
}

bool IsLoopbackAddress(absl::string_view address) {
  absl::string_view host = address;
  if (absl::StartsWith(host, "[")) {  // [v6]:port
    const size_t close = host.find(']');
    host = host.substr(1, close == absl::string_view::npos ? host.size() - 1 : close - 1);
  } else if (const size_t colon = host.rfind(':');
             colon != absl::string_view::npos && host.find(':') == colon) {
    host = host.substr(0, colon);  // host:port (one colon)
  }
  if (host == "localhost") return true;
  const std::string h(host);
  in_addr v4;
  if (inet_pton(AF_INET, h.c_str(), &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
  in6_addr v6;
  if (inet_pton(AF_INET6, h.c_str(), &v6) == 1) return IN6_IS_ADDR_LOOPBACK(&v6);
  return false;
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const TlsFiles& files, bool require_client_cert, absl::string_view listen_address,
    bool allow_plaintext) {
  if (!files.enabled()) {
    if (!allow_plaintext && !IsLoopbackAddress(listen_address)) {
      return absl::FailedPreconditionError(
          absl::StrCat("plaintext gRPC on ", listen_address,
                       " (not a loopback address): give --tls_cert, --tls_key and --tls_ca, or "
                       "--allow_plaintext on a network you trust"));
    }
    return grpc::InsecureServerCredentials();
  }
  absl::StatusOr<TlsPem> pem = LoadTlsPem(files);
  if (!pem.ok()) return pem.status();
  grpc::SslServerCredentialsOptions options(
      require_client_cert ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
                          : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  options.pem_root_certs = pem->ca;
  options.pem_key_cert_pairs.push_back({pem->key, pem->cert});
  return grpc::SslServerCredentials(options);
}

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> MakeChannelCredentials(
    const TlsFiles& files) {
  if (!files.enabled()) return grpc::InsecureChannelCredentials();
  if (files.ca.empty() || files.cert.empty() != files.key.empty()) {
    return absl::InvalidArgumentError(
        "a TLS client needs --tls_ca, and --tls_cert with --tls_key to present a certificate");
  }
  grpc::SslCredentialsOptions options;
  absl::StatusOr<std::string> ca = ReadPem(files.ca, "--tls_ca");
  if (!ca.ok()) return ca.status();
  options.pem_root_certs = *std::move(ca);
  if (!files.cert.empty()) {
    absl::StatusOr<std::string> cert = ReadPem(files.cert, "--tls_cert");
    if (!cert.ok()) return cert.status();
    absl::StatusOr<std::string> key = ReadPem(files.key, "--tls_key");
    if (!key.ok()) return key.status();
    options.pem_cert_chain = *std::move(cert);
    options.pem_private_key = *std::move(key);
  }
  return grpc::SslCredentials(options);
}

absl::Status SetClientTls(const TlsFiles& files) {
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> creds = MakeChannelCredentials(files);
  if (!creds.ok()) return creds.status();
  absl::MutexLock lock(&ClientMutex());
  ClientCredentials() = *std::move(creds);
  ClientServerName() = files.enabled() ? files.server_name : "";
  return absl::OkStatus();
}

std::shared_ptr<grpc::Channel> ClientChannel(const std::string& address) {
  return ClientChannel(address, grpc::ChannelArguments());
}

std::shared_ptr<grpc::Channel> ClientChannel(const std::string& address,
                                             const grpc::ChannelArguments& args) {
  std::shared_ptr<grpc::ChannelCredentials> creds;
  std::string server_name;
  {
    absl::MutexLock lock(&ClientMutex());
    creds = ClientCredentials();
    server_name = ClientServerName();
  }
  if (server_name.empty()) return grpc::CreateCustomChannel(address, creds, args);
  grpc::ChannelArguments with_name = args;
  with_name.SetSslTargetNameOverride(server_name);
  return grpc::CreateCustomChannel(address, creds, with_name);
}

}  // namespace dapq
