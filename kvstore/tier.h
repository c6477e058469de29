// File: kvstore/tier.h
// One level of the KV store (device, host, disk, remote) behind one interface: encoded blocks
// (block_codec.h) stored under string keys, with a byte capacity and high/low watermarks that
// the spill engine acts on. Put never evicts by itself: ResourceExhausted when the block does
// not fit (the caller spills first); a failed Put leaves nothing behind under the key.
// PutBatch stores several blocks in one step (the disk tier writes them as one segment file
// with one fsync): all or nothing — on failure none of the batch's keys is stored (a
// ResourceExhausted answer has no side effects at all). The default loops Put and erases what it
// stored when one fails; a key that the tier already held and that the failed batch replaced is
// then gone too (the store never batches keys the target tier holds).
// Thread-safety: implementations are thread-safe.
#ifndef DAPQ_KVSTORE_TIER_H_
#define DAPQ_KVSTORE_TIER_H_

#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace dapq::kvstore {

struct TierOptions {
  std::string name;  // "device", "host", "disk", "remote"
  size_t capacity_bytes = 0;
  double high_watermark = 0.9;  // spill down above this fraction of capacity ...
  double low_watermark = 0.7;   // ... until below this one
  absl::Status Validate() const;
};

class Tier {
 public:
  virtual ~Tier() = default;
  virtual const TierOptions& options() const = 0;
  virtual absl::Status Put(const std::string& key, std::string block) = 0;
  // Keys must be distinct (InvalidArgument otherwise).
  virtual absl::Status PutBatch(std::vector<std::pair<std::string, std::string>> blocks);
  // NotFound when absent; DataLoss when the stored bytes fail verification (disk, remote).
  virtual absl::StatusOr<std::string> Get(const std::string& key) = 0;
  virtual absl::Status Erase(const std::string& key) = 0;
  virtual bool Contains(const std::string& key) const = 0;
  virtual std::vector<std::string> Keys() const = 0;
  virtual size_t used_bytes() const = 0;

  size_t capacity_bytes() const { return options().capacity_bytes; }
  bool AboveHighWatermark() const {
    return used_bytes() > options().high_watermark * static_cast<double>(capacity_bytes());
  }
  bool BelowLowWatermark() const {
    return used_bytes() <= options().low_watermark * static_cast<double>(capacity_bytes());
  }
};

// InvalidArgument naming `tier` and the key when a key appears twice in `blocks`.
absl::Status CheckDistinctKeys(const std::string& tier,
                               const std::vector<std::pair<std::string, std::string>>& blocks);

}  // namespace dapq::kvstore

#endif  // DAPQ_KVSTORE_TIER_H_
