// File: common/tls.h
// TLS for every gRPC connection of DapQ Serve, with gRPC's own credentials and PEM files
// (--tls_cert, --tls_key, --tls_ca on every binary). Public listeners use server TLS (clients
// prove who they are with bearer tokens); the internal surfaces (the coordinator's Registry, a
// worker group's API, KvPeer) use mutual TLS: a peer must present a certificate that the
// cluster CA (--tls_ca) signed. Without TLS files a listener is plaintext, which is allowed on
// loopback addresses only unless --allow_plaintext says otherwise.
// Thread-safety: the process-wide client configuration is guarded; the rest are pure functions.
#ifndef DAPQ_COMMON_TLS_H_
#define DAPQ_COMMON_TLS_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace grpc {
class Channel;
class ChannelArguments;
class ChannelCredentials;
class ServerCredentials;
}  // namespace grpc

namespace dapq {

// PEM file paths; all three or none. `server_name`: the name clients check servers'
// certificates against instead of the address they dial ("" = the address's host); one
// cluster certificate for that name then serves every process whatever its address (pod IPs).
struct TlsFiles {
  std::string cert, key, ca;
  std::string server_name;
  bool enabled() const { return !cert.empty() || !key.empty() || !ca.empty(); }
};

// The PEM contents of TlsFiles. InvalidArgument unless all three paths are given; NotFound
// naming an unreadable file; InvalidArgument for a file that holds no PEM block.
struct TlsPem {
  std::string cert, key, ca;
};
absl::StatusOr<TlsPem> LoadTlsPem(const TlsFiles& files);

// True for 127.0.0.0/8, ::1 and localhost (the host part of "host:port").
bool IsLoopbackAddress(absl::string_view address);

// Credentials for a listener on `listen_address`: TLS with `files` (mutual when
// `require_client_cert`: clients must present a certificate signed by files.ca), or plaintext
// when `files` is empty, which needs a loopback address or `allow_plaintext`
// (FailedPrecondition naming the address otherwise).
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const TlsFiles& files, bool require_client_cert, absl::string_view listen_address,
    bool allow_plaintext);

// Credentials that verify the server against files.ca and present files.cert when given (a
// client of the public port may give the CA alone); plaintext when `files` is empty.
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> MakeChannelCredentials(
    const TlsFiles& files);

// The process's client TLS (the CLI's, the launcher's, a worker's towards the coordinator):
// plaintext until SetClientTls. ClientChannel opens a channel with it.
absl::Status SetClientTls(const TlsFiles& files);
std::shared_ptr<grpc::Channel> ClientChannel(const std::string& address);
std::shared_ptr<grpc::Channel> ClientChannel(const std::string& address,
                                             const grpc::ChannelArguments& args);

}  // namespace dapq

#endif  // DAPQ_COMMON_TLS_H_
