// File: worker/model_runner.h
// One tensor-parallel rank of the transformer (Megatron-style sharding): rank r of T holds query
// heads [r*H/T, (r+1)*H/T), KV heads [r*Hkv/T, (r+1)*Hkv/T), FFN rows [r*F/T, (r+1)*F/T) of
// w1/w3 (column split) and the matching columns of w2 and wo (row split). The partial outputs of
// wo and w2 are summed with the group's Communicator (two all-reduces per layer). Every rank
// keeps the full residual stream; rank 0 computes the logits.
// Backends (kernels/device.h): the rank runs on one ExecutionContext. On the CPU the weights are
// read in place from the shared ModelWeights through strides (worker/rank_weights.h) and every
// buffer is host memory. On a device the rank's shard is uploaded once, activations, block
// tables and the KV pool (a context arena) live on the device, the kernels run on the context's
// stream, and the host only stages what it must see: tokens and positions in, block tables per
// layer, the all-reduces (through host memory until the communicator takes device buffers),
// an observer's queries, and the logits out. A pass ends with the stream drained.
// Thread-safety: one RankModel per rank thread; Forward is not reentrant (scratch buffers).
#ifndef DAPQ_WORKER_MODEL_RUNNER_H_
#define DAPQ_WORKER_MODEL_RUNNER_H_

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/device.h"
#include "worker/comm/communicator.h"
#include "worker/kv_cache.h"
#include "worker/model_weights.h"
#include "worker/rank_weights.h"

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

// How a rank reaches its memory (RankModel::Create).
enum class WeightPlacement {
  kAuto = 0,  // the CPU reads weights in place and host buffers directly; a device uploads
  // The device path on any context: the weight shard uploaded (packed), and every host/device
  // boundary crossed by explicit copies. On the CPU context this runs the GPU's code path, less
  // the CUDA calls, where tests can check it.
  kUpload = 1,
};

class RankModel {
 public:
  // The CPU rank. `weights` and `comm` must outlive the RankModel. Every cache from NewCache()
  // draws its blocks from `kv_pool` (shared by the rank's sequences; its head_dim must be the
  // model's); null: an uncapped pool of 16-slot blocks.
  RankModel(const ModelWeights& weights, const RankShard& shard, Communicator* comm,
            std::shared_ptr<kvstore::BlockPool> kv_pool = nullptr);
  // A rank on `context`'s device (the CPU context gives the constructor's rank). `kv_pool` must
  // live on the same device (a device pool: kvstore::BlockPool::Create with the context).
  // InvalidArgument for a pool on another device or of another head_dim, ResourceExhausted
  // when the shard does not fit on the device.
  static absl::StatusOr<std::unique_ptr<RankModel>> Create(
      const ModelWeights& weights, const RankShard& shard, Communicator* comm,
      std::shared_ptr<kvstore::BlockPool> kv_pool,
      std::shared_ptr<kernels::ExecutionContext> context,
      WeightPlacement placement = WeightPlacement::kAuto);
  ~RankModel();

  const RankShard& shard() const { return shard_; }
  kernels::Device device() const { return context_->device(); }
  // Bytes of weights this rank holds on its device (0 when read in place).
  size_t weight_device_bytes() const { return rw_.device_bytes(); }
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
  // attention into att_'s rows, reading the slice's block table and lengths for `layer` where
  // StageTables put them (`t` says where).
  struct SliceTable;
  absl::Status SliceAttention(int layer, int row0, int ms, KvCache& cache, const SliceTable& t);
  // Builds every layer's and slice's block table and KV lengths for the pass on the host (final
  // once ReserveAppend has run: no block or length changes until Commit) and stages them to the
  // device in one copy at the start of the pass, from pinned memory (tables_dev_ then points at
  // them, slice_tables_ says where). One transfer per pass, not per layer: a copy from pageable
  // memory would wait for the stream at every layer.
  absl::Status StageTables(std::span<const BatchSlice> slices);
  // y[m, n] = x[m, k] . W^T (+ bias[n]), on the rank's stream.
  absl::Status Linear(int m, int n, int k, const float* x, int ldx, const WeightMatrix& w, float* y,
                      const float* bias = nullptr);
  // Waits for the pass's work on the device: a plain synchronisation, or, when the stream holds
  // stream-ordered collectives, polling that also sees a peer's failure (AsyncError) and gives
  // up after 120 s (aborting the group) instead of blocking forever.
  absl::Status Drain();
  // Sums `count` floats of device memory over the group (none for tp 1).
  absl::Status AllReduce(float* data, size_t count);
  // Scratch of `count` elements of T on the rank's device, grown (never shrunk) as needed.
  template <typename T>
  absl::StatusOr<T*> Scratch(kernels::DeviceMemory& memory, size_t count);
  // Where the kernels read `count` elements of T at `host`: `host` itself when the rank reads
  // host memory, else a copy in `memory` (grown as needed; the copy is stream-ordered and the
  // host buffer may be reused once it returns: pageable copies are staged by the driver).
  template <typename T>
  absl::StatusOr<const T*> Stage(kernels::DeviceMemory& memory, const T* host, size_t count);

  RankModel(const ModelWeights& weights, const RankShard& shard, Communicator* comm,
            std::shared_ptr<kvstore::BlockPool> kv_pool,
            std::shared_ptr<kernels::ExecutionContext> context, RankWeights rank_weights);

  const ModelWeights& w_;
  const ModelConfig& c_;
  RankShard shard_;
  Communicator* comm_;
  std::shared_ptr<kernels::ExecutionContext> context_;
  bool host_memory_ = true;  // the context's device memory is host memory (the CPU)
  RankWeights rw_;
  std::shared_ptr<kvstore::BlockPool> kv_pool_;
  // On the device: the RoPE frequencies, and scratch sized for the largest pass seen.
  kernels::DeviceMemory inv_freq_d_, ones_d_;
  kernels::DeviceMemory x_, xb_, q_, k_, v_, att_, out_, gate_, up_, logits_;
  kernels::DeviceMemory tokens_d_, positions_d_, tables_d_;
  // What the kernels read (Stage): the device copies, or the host buffers themselves.
  const float *inv_freq_dev_ = nullptr, *ones_dev_ = nullptr;
  const int32_t *positions_dev_ = nullptr, *tables_dev_ = nullptr;
  // On the host.
  std::vector<float> inv_freq_, ones_, q_host_, reduce_host_;
  std::vector<int32_t> positions_, tokens_;
  // Per layer, every slice's [kv_heads, blocks_per_head] block table, then its [kv_heads]
  // lengths before and after the pass, back to back (slice_tables_[layer * slices + s] holds each
  // one's offsets and blocks_per_head).
  std::vector<int32_t> tables_host_;
  // Device contexts: the pinned copy of tables_host_ the transfer reads, and an event after it
  // (the next pass's tables wait for it before overwriting the buffer).
  kernels::DeviceMemory tables_pinned_;
  kernels::Event tables_copied_;
  bool tables_copy_pending_ = false;
  struct SliceTable {
    size_t table = 0, first = 0, lens = 0;
    int blocks_per_head = 0;
    int max_len = 0;  // the longest head after the pass (bounds the device kernels)
  };
  std::vector<SliceTable> slice_tables_;
  std::vector<float> q_pre_;  // the observer's pre-RoPE queries (host-memory contexts)
};

}  // namespace dapq::worker

#endif  // DAPQ_WORKER_MODEL_RUNNER_H_
