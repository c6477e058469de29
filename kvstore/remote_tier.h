// File: kvstore/remote_tier.h
// Opens the store's optional last tier from a URL, the form the binaries take it in
// (`dapq-worker --kv_remote`, `dapq serve --kv_remote`):
//   redis://HOST:PORT   a Redis server shared across nodes (RedisTier)
//   grpc://HOST:PORT    another worker's KvPeer service (GrpcPeerTier; `dapq-worker
//                       --kv_peer_listen` serves one)
// `key_prefix` keeps the blocks of several workers apart on one server (e.g. "g0-r1").
// Errors: InvalidArgument naming `kv_remote` for a malformed URL; Unavailable when a Redis
// server does not answer (a gRPC peer is contacted on first use).
#ifndef DAPQ_KVSTORE_REMOTE_TIER_H_
#define DAPQ_KVSTORE_REMOTE_TIER_H_

#include <cstddef>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "kvstore/tier.h"

namespace dapq::kvstore {

struct RemoteTierOptions {
  std::string url;                     // redis://host:port or grpc://host:port
  size_t capacity_bytes = 1ull << 30;  // what this worker may keep there
  std::string key_prefix;              // [A-Za-z0-9_-]; empty = none
};

absl::StatusOr<std::unique_ptr<Tier>> OpenRemoteTier(const RemoteTierOptions& options);

}  // namespace dapq::kvstore

#endif  // DAPQ_KVSTORE_REMOTE_TIER_H_
