// File: kvstore/grpc_peer_tier.h
// A remote tier on another worker's kvstore over gRPC (KvPeer service). Every call carries a
// deadline; a peer that is down or goes away mid-transfer gives Unavailable (or
// DeadlineExceeded) naming the address, and a block it cannot verify comes back as DataLoss.
// The tier keeps its own index of what it stored (capacity accounting, Keys()).
// Thread-safety: thread-safe (gRPC stubs are).
#ifndef DAPQ_KVSTORE_GRPC_PEER_TIER_H_
#define DAPQ_KVSTORE_GRPC_PEER_TIER_H_

#include <memory>
#include <string>

#include "dapq/v1/kv.grpc.pb.h"
#include "kvstore/indexed_tier.h"

namespace dapq::kvstore {

struct GrpcPeerTierOptions {
  TierOptions tier{"remote", 1ull << 30, 0.95, 0.9};
  std::string address;  // host:port of the peer's KvPeer service
  int timeout_ms = 5000;
  // Prepended to every key on the wire, so that several workers can share one peer (e.g.
  // "g0-r1."); [A-Za-z0-9_.-] only. The tier's own index and Keys() use the keys unprefixed.
  std::string key_prefix;
  absl::Status Validate() const;
};

class GrpcPeerTier final : public IndexedTier {
 public:
  // Does not contact the peer (calls fail with Unavailable while it is away).
  static absl::StatusOr<std::unique_ptr<GrpcPeerTier>> Create(const GrpcPeerTierOptions& options);

  absl::Status Put(const std::string& key, std::string block) override;
  absl::StatusOr<std::string> Get(const std::string& key) override;
  absl::Status Erase(const std::string& key) override;

 private:
  explicit GrpcPeerTier(const GrpcPeerTierOptions& options);
  void SetDeadline(grpc::ClientContext& ctx) const;
  absl::Status Annotate(const grpc::Status& s, const std::string& what) const;

  const GrpcPeerTierOptions options_;
  std::unique_ptr<dapq::v1::KvPeer::Stub> stub_;
};

}  // namespace dapq::kvstore

#endif  // DAPQ_KVSTORE_GRPC_PEER_TIER_H_
