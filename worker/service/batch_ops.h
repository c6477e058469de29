// File: worker/service/batch_ops.h
// The engine operations of a continuous batch on sequences named by request id: a compressed
// prefill, a step over several sequences, and releasing a sequence's blocks. The scheduler
// (scheduler.h) plans with these; LocalBatchOps runs them on this process's engine. A
// multi-process group's rank 0 sends each operation to the other ranks before running it
// (GroupDriver), and every rank runs the same operations in the same order on its own sequences
// (SPMD), so the sequences of one id stay identical across the group's ranks.
// Thread-safety: thread-compatible.
#ifndef DAPQ_WORKER_SERVICE_BATCH_OPS_H_
#define DAPQ_WORKER_SERVICE_BATCH_OPS_H_

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "kvstore/kv_store.h"
#include "worker/engine.h"

namespace dapq::worker::service {

class BatchOps {
 public:
  virtual ~BatchOps() = default;
  // A fresh sequence for `id`, prefilled with `prompt` and compressed; when the ops hold a
  // sequence under `id` already (a session's turn, adopted), `prompt` is fed after its earlier
  // turns and the whole cache compressed again (CompressionConfig::every_turn).
  virtual absl::StatusOr<compress::CompressionStats> PrefillCompressed(
      uint64_t id, std::span<const int> prompt, const compress::CompressionConfig& config,
      std::vector<float>* logits) = 0;
  // A fresh sequence for `id` (replacing one it had) holding the longest cached prefix of
  // `prompt` (Engine::ReusePrefix, at least one token left to feed); returns its length.
  virtual absl::StatusOr<int> ReusePrefix(uint64_t id, std::span<const int> prompt) = 0;
  // Offers the full blocks of the sequence of `id` to later prompts (Engine::PublishPrefix; a
  // no-op for a compressed or unknown sequence).
  virtual absl::Status PublishPrefix(uint64_t id) = 0;
  // One Engine::Step: entry i feeds tokens[i] to sequence ids[i] (created empty when new).
  virtual absl::Status Step(std::span<const uint64_t> ids, std::span<const std::vector<int>> tokens,
                            std::vector<float>* logits) = 0;
  // Drops the sequence of `id` (its blocks return to the pool); a no-op for an unknown id.
  virtual absl::Status Release(uint64_t id) = 0;
  // Preemption by swap: saves the sequence of `id` to the KV store (worker/session_store.h,
  // under SwapKey(id)) and drops it; SwapIn restores it bit-identically and erases the saved
  // copy. FailedPrecondition without a store; SwapIn: ResourceExhausted when the pool has no
  // room yet, DataLoss when a block fails verification. `compression` is the request's.
  virtual absl::Status SwapOut(uint64_t id) = 0;
  virtual absl::Status SwapIn(uint64_t id, const compress::CompressionConfig& compression) = 0;
  // The sequence of `id`, or null.
  virtual const Sequence* Find(uint64_t id) const = 0;
};

// The operations on this process's engine.
class LocalBatchOps final : public BatchOps {
 public:
  // `store` (optional, for swaps) must outlive the ops.
  explicit LocalBatchOps(Engine* engine, kvstore::KvStore* store = nullptr)
      : engine_(engine), store_(store) {}
  absl::StatusOr<compress::CompressionStats> PrefillCompressed(
      uint64_t id, std::span<const int> prompt, const compress::CompressionConfig& config,
      std::vector<float>* logits) override;
  absl::StatusOr<int> ReusePrefix(uint64_t id, std::span<const int> prompt) override;
  absl::Status PublishPrefix(uint64_t id) override;
  absl::Status Step(std::span<const uint64_t> ids, std::span<const std::vector<int>> tokens,
                    std::vector<float>* logits) override;
  absl::Status Release(uint64_t id) override;
  absl::Status SwapOut(uint64_t id) override;
  absl::Status SwapIn(uint64_t id, const compress::CompressionConfig& compression) override;
  const Sequence* Find(uint64_t id) const override;
  size_t size() const { return sequences_.size(); }
  // A session's sequence joins the batch as `id` (replacing one it had); Take hands it back
  // (null for an unknown id).
  void Adopt(uint64_t id, std::unique_ptr<Sequence> seq) { sequences_[id] = std::move(seq); }
  std::unique_ptr<Sequence> Take(uint64_t id);

 private:
  absl::Status CheckStore() const;  // FailedPrecondition without a store

  Engine* const engine_;
  kvstore::KvStore* const store_;
  std::map<uint64_t, std::unique_ptr<Sequence>> sequences_;
};

// The store key of a swapped-out sequence ("preempted-<id>", a valid session id).
std::string SwapKey(uint64_t id);

}  // namespace dapq::worker::service

#endif  // DAPQ_WORKER_SERVICE_BATCH_OPS_H_
