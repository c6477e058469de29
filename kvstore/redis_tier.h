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

#include <map>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "common/mutex.h"
#include "kvstore/tier.h"

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

class RedisTier final : public Tier {
 public:
  // Connects (Unavailable if the server does not answer PING).
  static absl::StatusOr<std::unique_ptr<RedisTier>> Connect(const RedisTierOptions& options);
  ~RedisTier() override;

  const TierOptions& options() const override { return options_.tier; }
  absl::Status Put(const std::string& key, std::string block) override;
  absl::StatusOr<std::string> Get(const std::string& key) override;
  absl::Status Erase(const std::string& key) override;
  bool Contains(const std::string& key) const override;
  std::vector<std::string> Keys() const override;
  size_t used_bytes() const override;

 private:
  explicit RedisTier(const RedisTierOptions& options) : options_(options) {}
  absl::Status EnsureConnectedLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status ConnectionErrorLocked(const std::string& what) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::string Address() const;

  const RedisTierOptions options_;
  mutable Mutex mu_;
  redisContext* ctx_ ABSL_GUARDED_BY(mu_) = nullptr;
  std::map<std::string, size_t> index_ ABSL_GUARDED_BY(mu_);
  size_t used_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace dapq::kvstore

#endif  // DAPQ_KVSTORE_REDIS_TIER_H_
