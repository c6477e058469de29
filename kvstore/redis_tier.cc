// File: kvstore/redis_tier.cc
// hiredis-backed tier: SET/GET/DEL of binary blocks, reconnects, eviction detection.
#include "kvstore/redis_tier.h"

#include <hiredis/hiredis.h>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "kvstore/block_codec.h"

namespace dapq::kvstore {
namespace {
struct ReplyDeleter {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using Reply = std::unique_ptr<redisReply, ReplyDeleter>;
}  // namespace

absl::Status RedisTierOptions::Validate() const {
  DAPQ_RETURN_IF_ERROR(tier.Validate());
  if (host.empty() || port <= 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("redis tier: bad address ", host, ":", port));
  }
  if (timeout_ms <= 0) return absl::InvalidArgumentError("redis tier: timeout_ms must be > 0");
  return absl::OkStatus();
}

std::string RedisTier::Address() const { return absl::StrCat(options_.host, ":", options_.port); }

absl::StatusOr<std::unique_ptr<RedisTier>> RedisTier::Connect(const RedisTierOptions& options) {
  DAPQ_RETURN_IF_ERROR(options.Validate());
  std::unique_ptr<RedisTier> tier(new RedisTier(options));
  MutexLock lock(&tier->mu_);
  DAPQ_RETURN_IF_ERROR(tier->EnsureConnectedLocked());
  Reply pong(static_cast<redisReply*>(redisCommand(tier->ctx_, "PING")));
  if (!pong) return tier->ConnectionErrorLocked("PING");
  return tier;
}

RedisTier::~RedisTier() {
  MutexLock lock(&mu_);
  if (ctx_ != nullptr) redisFree(ctx_);
}

absl::Status RedisTier::EnsureConnectedLocked() {
  if (ctx_ != nullptr) return absl::OkStatus();
  const timeval tv{options_.timeout_ms / 1000, (options_.timeout_ms % 1000) * 1000};
  ctx_ = redisConnectWithTimeout(options_.host.c_str(), options_.port, tv);
  if (ctx_ == nullptr || ctx_->err) return ConnectionErrorLocked("connect");
  redisSetTimeout(ctx_, tv);
  return absl::OkStatus();
}

absl::Status RedisTier::ConnectionErrorLocked(const std::string& what) {
  const std::string why = ctx_ != nullptr && ctx_->err ? ctx_->errstr : "no reply";
  if (ctx_ != nullptr) redisFree(ctx_);
  ctx_ = nullptr;  // reconnect on the next call
  return absl::UnavailableError(absl::StrCat("redis ", Address(), ": ", what, ": ", why));
}

absl::Status RedisTier::Put(const std::string& key, std::string block) {
  DAPQ_ASSIGN_OR_RETURN(const std::optional<size_t> previous, Reserve(key, block.size()));
  absl::Status stored = Set(key, block);
  if (!stored.ok()) Unreserve(key, previous);
  return stored;
}

absl::Status RedisTier::Set(const std::string& key, const std::string& block) {
  MutexLock lock(&mu_);
  DAPQ_RETURN_IF_ERROR(EnsureConnectedLocked());
  const std::string full = options_.key_prefix + key;
  Reply r(static_cast<redisReply*>(
      redisCommand(ctx_, "SET %b %b", full.data(), full.size(), block.data(), block.size())));
  if (!r) return ConnectionErrorLocked(absl::StrCat("SET ", key));
  if (r->type == REDIS_REPLY_ERROR) {
    // e.g. OOM command not allowed when used memory > 'maxmemory'
    return absl::ResourceExhaustedError(
        absl::StrCat("redis ", Address(), ": SET ", key, ": ", std::string(r->str, r->len)));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> RedisTier::Get(const std::string& key) {
  DAPQ_RETURN_IF_ERROR(CheckHeld(key));
  MutexLock lock(&mu_);
  DAPQ_RETURN_IF_ERROR(EnsureConnectedLocked());
  const std::string full = options_.key_prefix + key;
  Reply r(static_cast<redisReply*>(redisCommand(ctx_, "GET %b", full.data(), full.size())));
  if (!r) return ConnectionErrorLocked(absl::StrCat("GET ", key));
  if (r->type == REDIS_REPLY_NIL) {
    return absl::DataLossError(
        absl::StrCat("redis ", Address(), ": block ", key, " was evicted by the server"));
  }
  if (r->type != REDIS_REPLY_STRING) {
    return absl::InternalError(
        absl::StrCat("redis ", Address(), ": GET ", key, ": unexpected reply"));
  }
  std::string bytes(r->str, r->len);
  if (absl::Status v = VerifyBlock(bytes); !v.ok()) {
    return absl::DataLossError(
        absl::StrCat("redis tier: block ", key, " failed verification: ", v.message()));
  }
  return bytes;
}

absl::Status RedisTier::Erase(const std::string& key) {
  DAPQ_RETURN_IF_ERROR(Forget(key));
  MutexLock lock(&mu_);
  DAPQ_RETURN_IF_ERROR(EnsureConnectedLocked());
  const std::string full = options_.key_prefix + key;
  Reply r(static_cast<redisReply*>(redisCommand(ctx_, "DEL %b", full.data(), full.size())));
  if (!r) return ConnectionErrorLocked(absl::StrCat("DEL ", key));
  return absl::OkStatus();
}

}  // namespace dapq::kvstore
