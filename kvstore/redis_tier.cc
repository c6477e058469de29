// File: kvstore/redis_tier.cc
// Redis-backed tier: SET/GET/DEL of binary blocks over a RedisConnection, reconnects, eviction
// detection.
#include "kvstore/redis_tier.h"

#include <hiredis/hiredis.h>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "kvstore/block_codec.h"

namespace dapq::kvstore {

absl::Status RedisTierOptions::Validate() const {
  DAPQ_RETURN_IF_ERROR(tier.Validate());
  if (host.empty() || port <= 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("redis tier: bad address ", host, ":", port));
  }
  if (timeout_ms <= 0) return absl::InvalidArgumentError("redis tier: timeout_ms must be > 0");
  if (!tls.enabled() && (!tls.cert_pem.empty() || !tls.key_pem.empty())) {
    return absl::InvalidArgumentError("redis tier: a TLS client certificate needs the CA too");
  }
  if (tls.cert_pem.empty() != tls.key_pem.empty()) {
    return absl::InvalidArgumentError("redis tier: TLS needs both the client cert and its key");
  }
  return absl::OkStatus();
}

std::string RedisTier::Address() const { return absl::StrCat(options_.host, ":", options_.port); }

absl::StatusOr<std::unique_ptr<RedisTier>> RedisTier::Connect(const RedisTierOptions& options) {
  DAPQ_RETURN_IF_ERROR(options.Validate());
  std::unique_ptr<RedisTier> tier(new RedisTier(options));
  MutexLock lock(&tier->mu_);
  absl::StatusOr<RedisReply> pong = tier->CommandLocked("PING", {"PING"});
  if (!pong.ok() && !options.tls.enabled() && tier->connected_once_) {
    // Connected, then dropped or silent: what a TLS-only port does to a plaintext client.
    return absl::Status(
        pong.status().code(),
        absl::StrCat(pong.status().message(), " (if the server accepts TLS only, use rediss://)"));
  }
  if (!pong.ok()) return pong.status();
  const redisReply& reply = **pong;
  if (reply.type == REDIS_REPLY_ERROR) {  // e.g. NOAUTH
    return absl::UnavailableError(
        absl::StrCat("redis ", tier->Address(), ": PING: ", std::string(reply.str, reply.len)));
  }
  return tier;
}

RedisTier::~RedisTier() = default;

absl::StatusOr<RedisReply> RedisTier::CommandLocked(absl::string_view what,
                                                    std::initializer_list<absl::string_view> args) {
  if (conn_ == nullptr) {
    RedisConnectionOptions c;
    c.host = options_.host;
    c.port = options_.port;
    c.timeout_ms = options_.timeout_ms;
    c.tls = options_.tls;
    absl::StatusOr<std::unique_ptr<RedisConnection>> opened = RedisConnection::Open(c);
    if (!opened.ok()) {
      return absl::Status(opened.status().code(),
                          absl::StrCat("redis ", Address(), ": ", opened.status().message()));
    }
    conn_ = *std::move(opened);
    connected_once_ = true;
  }
  absl::StatusOr<RedisReply> reply = conn_->Command(args);
  if (!reply.ok()) {
    conn_.reset();  // reconnect on the next call
    return absl::Status(reply.status().code(), absl::StrCat("redis ", Address(), ": ", what, ": ",
                                                            reply.status().message()));
  }
  return reply;
}

absl::Status RedisTier::Put(const std::string& key, std::string block) {
  DAPQ_ASSIGN_OR_RETURN(const std::optional<size_t> previous, Reserve(key, block.size()));
  absl::Status stored = Set(key, block);
  if (!stored.ok()) Unreserve(key, previous);
  return stored;
}

absl::Status RedisTier::Set(const std::string& key, const std::string& block) {
  MutexLock lock(&mu_);
  const std::string full = options_.key_prefix + key;
  DAPQ_ASSIGN_OR_RETURN(RedisReply r,
                        CommandLocked(absl::StrCat("SET ", key), {"SET", full, block}));
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
  const std::string full = options_.key_prefix + key;
  DAPQ_ASSIGN_OR_RETURN(RedisReply r, CommandLocked(absl::StrCat("GET ", key), {"GET", full}));
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
  const std::string full = options_.key_prefix + key;
  DAPQ_ASSIGN_OR_RETURN(RedisReply r, CommandLocked(absl::StrCat("DEL ", key), {"DEL", full}));
  return absl::OkStatus();
}

}  // namespace dapq::kvstore
