// File: kvstore/grpc_peer_tier.cc
// KvPeer client tier.
#include "kvstore/grpc_peer_tier.h"

#include <grpcpp/grpcpp.h>

#include <chrono>

#include "absl/strings/str_cat.h"
#include "common/grpc_status.h"
#include "common/status_macros.h"
#include "common/tls.h"
#include "kvstore/block_codec.h"
#include "kvstore/peer_service.h"

namespace dapq::kvstore {

absl::Status GrpcPeerTierOptions::Validate() const {
  DAPQ_RETURN_IF_ERROR(tier.Validate());
  if (address.empty()) return absl::InvalidArgumentError("peer tier: empty address");
  if (timeout_ms <= 0) return absl::InvalidArgumentError("peer tier: timeout_ms must be > 0");
  if (!key_prefix.empty()) {
    DAPQ_RETURN_IF_ERROR(ValidateBlockKey(key_prefix + "x"));  // the peer checks keys as sent
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<GrpcPeerTier>> GrpcPeerTier::Create(
    const GrpcPeerTierOptions& options) {
  DAPQ_RETURN_IF_ERROR(options.Validate());
  return std::unique_ptr<GrpcPeerTier>(new GrpcPeerTier(options));
}

GrpcPeerTier::GrpcPeerTier(const GrpcPeerTierOptions& options)
    : IndexedTier(options.tier), options_(options) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(kMaxPeerMessageBytes);
  args.SetMaxSendMessageSize(kMaxPeerMessageBytes);
  stub_ = dapq::v1::KvPeer::NewStub(ClientChannel(options.address, args));
}

void GrpcPeerTier::SetDeadline(grpc::ClientContext& ctx) const {
  ctx.set_deadline(std::chrono::system_clock::now() +
                   std::chrono::milliseconds(options_.timeout_ms));
}

absl::Status GrpcPeerTier::Annotate(const grpc::Status& s, const std::string& what) const {
  absl::Status a = FromGrpcStatus(s);
  if (a.ok()) return a;
  return absl::Status(a.code(),
                      absl::StrCat("peer ", options_.address, ": ", what, ": ", a.message()));
}

absl::Status GrpcPeerTier::Put(const std::string& key, std::string block) {
  DAPQ_ASSIGN_OR_RETURN(const std::optional<size_t> previous, Reserve(key, block.size()));
  dapq::v1::PutBlockRequest req;
  req.set_key(options_.key_prefix + key);
  req.set_block(std::move(block));
  dapq::v1::PutBlockResponse resp;
  grpc::ClientContext ctx;
  SetDeadline(ctx);
  absl::Status stored = Annotate(stub_->PutBlock(&ctx, req, &resp), "PutBlock " + key);
  if (!stored.ok()) Unreserve(key, previous);
  return stored;
}

absl::StatusOr<std::string> GrpcPeerTier::Get(const std::string& key) {
  DAPQ_RETURN_IF_ERROR(CheckHeld(key));
  dapq::v1::GetBlockRequest req;
  req.set_key(options_.key_prefix + key);
  dapq::v1::GetBlockResponse resp;
  grpc::ClientContext ctx;
  SetDeadline(ctx);
  const grpc::Status s = stub_->GetBlock(&ctx, req, &resp);
  if (s.error_code() == grpc::StatusCode::NOT_FOUND) {
    return absl::DataLossError(absl::StrCat("peer ", options_.address, ": block ", key,
                                            " is gone (peer restarted or lost it)"));
  }
  DAPQ_RETURN_IF_ERROR(Annotate(s, "GetBlock " + key));
  if (!VerifyBlock(resp.block()).ok()) {
    return absl::DataLossError(absl::StrCat("peer ", options_.address, ": block ", key,
                                            " failed verification in transit"));
  }
  return std::move(*resp.mutable_block());
}

absl::Status GrpcPeerTier::Erase(const std::string& key) {
  DAPQ_RETURN_IF_ERROR(Forget(key));
  dapq::v1::EraseBlockRequest req;
  req.set_key(options_.key_prefix + key);
  dapq::v1::EraseBlockResponse resp;
  grpc::ClientContext ctx;
  SetDeadline(ctx);
  const grpc::Status s = stub_->EraseBlock(&ctx, req, &resp);
  if (s.error_code() == grpc::StatusCode::NOT_FOUND) return absl::OkStatus();
  return Annotate(s, "EraseBlock " + key);
}

}  // namespace dapq::kvstore
