// File: kvstore/redis_tier.h
// A remote tier on a Redis server: the shared cache operators already run across nodes. One
// RedisConnection (kvstore/redis_connection.h: hiredis's protocol code over our socket) carries
// the commands, plaintext or, when `tls` holds PEM, TLS with the server's certificate checked
// against the CA and our certificate presented (mutual TLS). Whether plaintext is acceptable for
// an address is the caller's decision (OpenRemoteTier allows it on loopback or when asked).
// Blocks are stored as binary strings under `<prefix><key>`; the tier keeps its own index
// of what it stored (for capacity accounting and Keys()). Redis may evict keys on its own
// (maxmemory policies): a block the index knows but Redis no longer has is reported as
// DataLoss ("evicted"), never silently ignored. A server that is down, goes away mid-transfer,
// does not answer within timeout_ms or fails the TLS handshake gives Unavailable naming the
// address and the cause (OpenSSL's reason for TLS); the next call reconnects.
// Thread-safety: thread-safe (one connection, serialised).
#ifndef DAPQ_KVSTORE_REDIS_TIER_H_
#define DAPQ_KVSTORE_REDIS_TIER_H_

#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/strings/string_view.h"
#include "common/mutex.h"
#include "kvstore/indexed_tier.h"
#include "kvstore/redis_connection.h"

namespace dapq::kvstore {

struct RedisTierOptions {
  TierOptions tier{"remote", 1ull << 30, 0.95, 0.9};
  std::string host = "127.0.0.1";
  int port = 6379;
  std::string key_prefix = "dapq:";  // one namespace per rank / deployment
  int timeout_ms = 2000;             // connect, and each read or write
  RedisTlsOptions tls;               // empty ca_pem = plaintext
  absl::Status Validate() const;
};

class RedisTier final : public IndexedTier {
 public:
  // Connects (Unavailable if the server does not answer PING, e.g. refuses our certificate).
  static absl::StatusOr<std::unique_ptr<RedisTier>> Connect(const RedisTierOptions& options);
  ~RedisTier() override;

  absl::Status Put(const std::string& key, std::string block) override;
  absl::StatusOr<std::string> Get(const std::string& key) override;
  absl::Status Erase(const std::string& key) override;

 private:
  explicit RedisTier(const RedisTierOptions& options)
      : IndexedTier(options.tier), options_(options) {}
  // SET of one block on the connection (takes mu_).
  absl::Status Set(const std::string& key, const std::string& block) ABSL_LOCKS_EXCLUDED(mu_);
  // Runs one command, connecting first if needed. On failure the connection is dropped (the
  // next call reconnects) and the error names the address and `what` ("GET <key>").
  absl::StatusOr<RedisReply> CommandLocked(absl::string_view what,
                                           std::initializer_list<absl::string_view> args)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::string Address() const;

  const RedisTierOptions options_;
  mutable Mutex mu_;
  std::unique_ptr<RedisConnection> conn_ ABSL_GUARDED_BY(mu_);  // null: connect on next call
  bool connected_once_ ABSL_GUARDED_BY(mu_) = false;  // a TCP (and TLS) connection was made
};

}  // namespace dapq::kvstore

#endif  // DAPQ_KVSTORE_REDIS_TIER_H_
