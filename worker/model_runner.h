// File: worker/model_runner.h
// One tensor-parallel rank of the transformer (Megatron-style sharding): rank r of T holds query
// heads [r*H/T, (r+1)*H/T), KV heads [r*Hkv/T, (r+1)*Hkv/T), FFN rows [r*F/T, (r+1)*F/T) of
// w1/w3 (column split) and the matching columns of w2 and wo (row split). The partial outputs of
// wo and w2 are summed with the group's Communicator (two all-reduces per layer). Every rank
// keeps the full residual stream; rank 0 computes the logits.
// The weights are read in place from the shared ModelWeights through strides.
// Thread-safety: one RankModel per rank thread; Forward is not reentrant (scratch buffers).
#ifndef DAPQ_WORKER_MODEL_RUNNER_H_
#define DAPQ_WORKER_MODEL_RUNNER_H_

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/comm/communicator.h"
#include "worker/kv_cache.h"
#include "worker/model_weights.h"

namespace dapq::worker {

// Sees each layer's queries during a forward pass; compression collects what it scores with.
// Called on the rank's thread after the layer's attention.
class QueryObserver {
 public:
  virtual ~QueryObserver() = default;
  // q_pre, q_post: [m, local query heads, head_dim], before and after RoPE. The layer's slabs in
  // `cache` already hold the m new tokens: kv_lens[h] slots for local KV head h (the cache's
  // committed lengths are updated only after the last layer).
  virtual absl::Status OnQueries(int layer, int m, const int32_t* positions, const float* q_pre,
                                 const float* q_post, std::span<const int32_t> kv_lens,
                                 const KvCache& cache) = 0;
};

// One sequence's part of a batched forward pass: its new tokens at their positions, and the
// cache they are appended to.
struct BatchSlice {
  std::span<const int> tokens;
  std::span<const int32_t> positions;
  KvCache* cache = nullptr;
};

// The slice of the model one rank owns.
struct RankShard {
  int rank = 0, tp = 1;
  int head_begin = 0, heads = 0;        // query heads
  int kv_head_begin = 0, kv_heads = 0;  // KV heads
  int ffn_begin = 0, ffn_size = 0;      // FFN intermediate rows
};

// InvalidArgument when tp does not divide the head counts or exceeds the FFN size.
absl::StatusOr<RankShard> MakeRankShard(const ModelConfig& config, int rank, int tp);

class RankModel {
 public:
  // `weights` and `comm` must outlive the RankModel. Every cache from NewCache() draws its
  // blocks from `kv_pool` (shared by the rank's sequences; its head_dim must be the model's); null:
  // an uncapped pool of 16-slot blocks.
  RankModel(const ModelWeights& weights, const RankShard& shard, Communicator* comm,
            std::shared_ptr<kvstore::BlockPool> kv_pool = nullptr);

  const RankShard& shard() const { return shard_; }
  KvCache NewCache() const;
  const kvstore::BlockPool& kv_pool() const { return *kv_pool_; }
  kvstore::BlockPool& kv_pool() { return *kv_pool_; }

  // Runs `tokens` at `positions` (absolute, explicit) through every layer, appending their K/V
  // to `cache`. When `logits` is non-empty (rank 0), it receives the last token's logits
  // [vocab_size]; with `all_logits` it must hold tokens.size() * vocab_size values instead.
  // `observer` (optional) sees every layer's queries.
  absl::Status Forward(std::span<const int> tokens, std::span<const int32_t> positions,
                       KvCache& cache, std::span<float> logits, bool all_logits = false,
                       QueryObserver* observer = nullptr);
  // One pass over a ragged batch: every slice brings its own tokens (a prefill chunk or one
  // decode token) at its own positions, and its own cache (distinct caches). The linear layers
  // run once over the concatenated tokens (a GEMM, not a GEMV, when several sequences decode);
  // attention runs per slice over its own block tables. When `logits` is non-empty (rank 0) it
  // receives each slice's last-token logits, [slices.size(), vocab_size]. Bad tokens or positions
  // in any slice fail the whole batch before anything changes; a KV pool without room fails it
  // with ResourceExhausted (slices reserved before the failing one keep their reserved blocks
  // for their next tokens; no slot is appended).
  absl::Status ForwardBatch(std::span<const BatchSlice> slices, std::span<float> logits);

 private:
  // The pass behind Forward and ForwardBatch. all_logits and observer need a single slice.
  absl::Status ForwardSlices(std::span<const BatchSlice> slices, std::span<float> logits,
                             bool all_logits, QueryObserver* observer);
  absl::Status Layer(int layer, std::span<const BatchSlice> slices, QueryObserver* observer);
  // Appends one slice's K/V (rows [row0, row0 + ms) of k_/v_) to its cache and runs its
  // attention into att_'s rows; leaves kv_lens_ at the slice's new lengths.
  absl::Status SliceAttention(int layer, int row0, int ms, KvCache& cache);

  const ModelWeights& w_;
  const ModelConfig& c_;
  RankShard shard_;
  Communicator* comm_;
  std::vector<float> inv_freq_;
  std::shared_ptr<kvstore::BlockPool> kv_pool_;
  // Scratch, sized for the largest chunk seen.
  std::vector<float> x_, xb_, q_, q_pre_, k_, v_, att_, out_, gate_, up_;
  std::vector<int32_t> kv_lens_, positions_, tokens_;
  std::vector<int32_t> block_table_;  // [kv_heads, blocks_per_head] block ids of one layer
};

}  // namespace dapq::worker

#endif  // DAPQ_WORKER_MODEL_RUNNER_H_
