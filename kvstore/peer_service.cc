// File: kvstore/peer_service.cc
// KvPeer handlers: validate, forward to the tier, verify on read, convert statuses at the edge.
#include "kvstore/peer_service.h"

#include "absl/strings/str_cat.h"
#include "common/grpc_status.h"
#include "kvstore/block_codec.h"
#include "kvstore/indexed_tier.h"

namespace dapq::kvstore {

grpc::Status KvPeerService::PutBlock(grpc::ServerContext*, const dapq::v1::PutBlockRequest* req,
                                     dapq::v1::PutBlockResponse*) {
  absl::Status s = ValidateBlockKey(req->key());
  if (s.ok() && req->block().size() > kMaxPeerBlockBytes) {
    s = absl::InvalidArgumentError(
        absl::StrCat("block: ", req->block().size(), " bytes exceed ", kMaxPeerBlockBytes));
  }
  if (s.ok()) s = tier_->Put(req->key(), req->block());
  return ToGrpcStatus(s);
}

grpc::Status KvPeerService::GetBlock(grpc::ServerContext*, const dapq::v1::GetBlockRequest* req,
                                     dapq::v1::GetBlockResponse* resp) {
  absl::Status s = ValidateBlockKey(req->key());
  if (!s.ok()) return ToGrpcStatus(s);
  absl::StatusOr<std::string> bytes = tier_->Get(req->key());
  if (!bytes.ok()) return ToGrpcStatus(bytes.status());
  if (absl::Status v = VerifyBlock(*bytes); !v.ok()) {
    return ToGrpcStatus(absl::DataLossError(
        absl::StrCat("peer: block ", req->key(), " failed verification: ", v.message())));
  }
  resp->set_block(*std::move(bytes));
  return grpc::Status::OK;
}

grpc::Status KvPeerService::EraseBlock(grpc::ServerContext*, const dapq::v1::EraseBlockRequest* req,
                                       dapq::v1::EraseBlockResponse*) {
  absl::Status s = ValidateBlockKey(req->key());
  if (s.ok()) s = tier_->Erase(req->key());
  return ToGrpcStatus(s);
}

grpc::Status KvPeerService::Stats(grpc::ServerContext*, const dapq::v1::StatsRequest*,
                                  dapq::v1::StatsResponse* resp) {
  resp->set_used_bytes(tier_->used_bytes());
  resp->set_capacity_bytes(tier_->capacity_bytes());
  resp->set_blocks(tier_->Keys().size());
  return grpc::Status::OK;
}

}  // namespace dapq::kvstore
