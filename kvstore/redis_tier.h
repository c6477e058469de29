// File: kvstore/redis_tier.h
// A remote tier on a Redis server (hiredis): the shared cache operators already run across
// nodes. Blocks are stored as binary strings under `<prefix><key>`; the tier keeps its own index
// of what it stored (for capacity accounting and Keys()). Redis may evict keys on its own
// (maxmemory policies): a block the index knows but Redis no longer has is reported as
// DataLoss ("evicted"), never silently ignored. A server that is down or goes away mid-transfer
// gives Unavailable naming the address; the next call reconnects.
// Thread-safety: thread-safe (one connection, serialised).
#ifndef DAPQ_KVSTORE_REDIS_TIER_H_
#define DAPQ_KVSTORE_REDIS_TIER_H_

#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "common/mutex.h"
#include "kvstore/indexed_tier.h"

struct redisContext;

namespace dapq::kvstore {

struct RedisTierOptions {
  TierOptions tier{"remote", 1ull << 30, 0.95, 0.9};
  std::string host = "127.0.0.1";
  int port = 6379;
  std::string key_prefix = "dapq:";  // one namespace per rank / deployment
  int timeout_ms = 2000;
  absl::Status Validate() const;
};

class RedisTier final : public IndexedTier {
 public:
  // Connects (Unavailable if the server does not answer PING).
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
  absl::Status EnsureConnectedLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status ConnectionErrorLocked(const std::string& what) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::string Address() const;

  const RedisTierOptions options_;
  mutable Mutex mu_;
  redisContext* ctx_ ABSL_GUARDED_BY(mu_) = nullptr;  // mu_ serialises the connection
};

}  // namespace dapq::kvstore

#endif  // DAPQ_KVSTORE_REDIS_TIER_H_
