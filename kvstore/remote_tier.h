// File: kvstore/remote_tier.h
// Opens the store's optional last tier from a URL, the form the binaries take it in
// (`dapq-worker --kv_remote`, `dapq serve --kv_remote`):
//   rediss://HOST:PORT  a Redis server over TLS (RedisTier): the server's certificate is checked
//                       against tls.ca (and tls.server_name, else HOST); tls.cert/tls.key are
//                       presented, so a server with `tls-auth-clients yes` admits us
//   redis://HOST:PORT   the same in plaintext: on a loopback HOST only, unless allow_plaintext
//   grpc://HOST:PORT    another worker's KvPeer service (GrpcPeerTier; `dapq-worker
//                       --kv_peer_listen` serves one); TLS as the process's client TLS
// `key_prefix` keeps the blocks of several workers apart on one server (e.g. "g0-r1").
// Errors: InvalidArgument naming `kv_remote` for a malformed URL, and naming `--tls_ca` for
// rediss:// without TLS files; errors of LoadTlsPem for unreadable ones; FailedPrecondition
// naming the address and `--allow_plaintext` for redis:// to a non-loopback host (nothing is
// dialled); Unavailable when a Redis server does not answer or the TLS handshake fails (with
// OpenSSL's reason). A gRPC peer is contacted on first use.
#ifndef DAPQ_KVSTORE_REMOTE_TIER_H_
#define DAPQ_KVSTORE_REMOTE_TIER_H_

#include <cstddef>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/tls.h"
#include "kvstore/tier.h"

namespace dapq::kvstore {

struct RemoteTierOptions {
  std::string url;                     // rediss://, redis:// or grpc://host:port
  size_t capacity_bytes = 1ull << 30;  // what this worker may keep there
  std::string key_prefix;              // [A-Za-z0-9_-]; empty = none
  TlsFiles tls = {};                   // rediss:// needs them (--tls_cert, --tls_key, --tls_ca)
  bool allow_plaintext = false;        // redis:// to a non-loopback host (--allow_plaintext)
  int timeout_ms = 2000;               // Redis: connect, and each read or write
};

absl::StatusOr<std::unique_ptr<Tier>> OpenRemoteTier(const RemoteTierOptions& options);

}  // namespace dapq::kvstore

#endif  // DAPQ_KVSTORE_REMOTE_TIER_H_
