// File: kvstore/peer_service.h
// The gRPC KvPeer service (proto/dapq/v1/kv.proto): serves one local Tier (memory or disk) to
// other workers, which use it as their `remote` tier through GrpcPeerTier. Validates keys and
// sizes, and verifies blocks on the way out (DATA_LOSS, never corrupt bytes).
// Thread-safety: thread-safe (the tier is). Ownership: the tier is borrowed.
#ifndef DAPQ_KVSTORE_PEER_SERVICE_H_
#define DAPQ_KVSTORE_PEER_SERVICE_H_

#include "dapq/v1/kv.grpc.pb.h"
#include "kvstore/tier.h"

namespace dapq::kvstore {

inline constexpr size_t kMaxPeerBlockBytes = 64ull << 20;
// gRPC message limit of both ends of KvPeer: a block plus room for the key and framing.
inline constexpr int kMaxPeerMessageBytes = static_cast<int>(kMaxPeerBlockBytes + (1 << 20));

class KvPeerService final : public dapq::v1::KvPeer::Service {
 public:
  explicit KvPeerService(Tier* tier) : tier_(tier) {}

  grpc::Status PutBlock(grpc::ServerContext* ctx, const dapq::v1::PutBlockRequest* req,
                        dapq::v1::PutBlockResponse* resp) override;
  grpc::Status GetBlock(grpc::ServerContext* ctx, const dapq::v1::GetBlockRequest* req,
                        dapq::v1::GetBlockResponse* resp) override;
  grpc::Status EraseBlock(grpc::ServerContext* ctx, const dapq::v1::EraseBlockRequest* req,
                          dapq::v1::EraseBlockResponse* resp) override;
  grpc::Status Stats(grpc::ServerContext* ctx, const dapq::v1::StatsRequest* req,
                     dapq::v1::StatsResponse* resp) override;

 private:
  Tier* const tier_;
};

}  // namespace dapq::kvstore

#endif  // DAPQ_KVSTORE_PEER_SERVICE_H_
