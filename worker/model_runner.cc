// File: worker/model_runner.cc
// The per-rank transformer forward pass built from kernels/ ops.
#include "worker/model_runner.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/check.h"
#include "common/status_macros.h"
#include "kernels/activation.h"
#include "kernels/attention.h"
#include "kernels/embedding.h"
#include "kernels/gemm.h"
#include "kernels/rms_norm.h"
#include "kernels/rope.h"

namespace dapq::worker {

absl::StatusOr<RankShard> MakeRankShard(const ModelConfig& c, int rank, int tp) {
  if (tp < 1) return absl::InvalidArgumentError(absl::StrCat("tp=", tp, " must be >= 1"));
  if (rank < 0 || rank >= tp) {
    return absl::InvalidArgumentError(absl::StrCat("rank=", rank, " outside [0, tp=", tp, ")"));
  }
  if (c.n_heads % tp != 0 || c.n_kv_heads % tp != 0) {
    return absl::InvalidArgumentError(absl::StrCat("tp=", tp, " must divide n_heads=", c.n_heads,
                                                   " and n_kv_heads=", c.n_kv_heads));
  }
  if (tp > c.hidden_dim) {
    return absl::InvalidArgumentError(
        absl::StrCat("tp=", tp, " exceeds hidden_dim=", c.hidden_dim));
  }
  RankShard s;
  s.rank = rank;
  s.tp = tp;
  s.heads = c.n_heads / tp;
  s.head_begin = rank * s.heads;
  s.kv_heads = c.n_kv_heads / tp;
  s.kv_head_begin = rank * s.kv_heads;
  s.ffn_begin = static_cast<int>(static_cast<long>(rank) * c.hidden_dim / tp);
  s.ffn_size = static_cast<int>(static_cast<long>(rank + 1) * c.hidden_dim / tp) - s.ffn_begin;
  return s;
}

RankModel::RankModel(const ModelWeights& weights, const RankShard& shard, Communicator* comm,
                     std::shared_ptr<kvstore::BlockPool> kv_pool)
    : RankModel(weights, shard, comm, std::move(kv_pool), kernels::CreateCpuContext(),
                RankWeights::InPlace(weights, shard)) {}

RankModel::RankModel(const ModelWeights& weights, const RankShard& shard, Communicator* comm,
                     std::shared_ptr<kvstore::BlockPool> kv_pool,
                     std::shared_ptr<kernels::ExecutionContext> context, RankWeights rank_weights)
    : w_(weights),
      c_(weights.config),
      shard_(shard),
      comm_(comm),
      context_(std::move(context)),
      host_memory_(context_->device().backend == kernels::Backend::kCpu),  // Create refines it
      rw_(std::move(rank_weights)),
      kv_pool_(std::move(kv_pool)) {
  auto inv = kernels::ComputeRopeInvFreq(c_.rope);
  DAPQ_CHECK(inv.ok()) << inv.status();  // the config was validated when loaded
  inv_freq_ = *std::move(inv);
  inv_freq_dev_ = inv_freq_.data();  // Create stages it for the device path
  if (kv_pool_ == nullptr) {
    auto pool = kvstore::BlockPool::Create(c_.head_dim, 16);
    DAPQ_CHECK(pool.ok()) << pool.status();  // head_dim validated with the config
    kv_pool_ = *std::move(pool);
  }
  DAPQ_CHECK(kv_pool_->head_dim() == c_.head_dim)
      << "kv pool head_dim " << kv_pool_->head_dim() << " != model head_dim " << c_.head_dim;
}

RankModel::~RankModel() {
  // Stream-ordered frees of the scratch below must not race work still queued on the stream.
  if (!host_memory_) (void)context_->Synchronize();
}

absl::StatusOr<std::unique_ptr<RankModel>> RankModel::Create(
    const ModelWeights& weights, const RankShard& shard, Communicator* comm,
    std::shared_ptr<kvstore::BlockPool> kv_pool, std::shared_ptr<kernels::ExecutionContext> context,
    WeightPlacement placement) {
  if (context == nullptr) return absl::InvalidArgumentError("rank model: no execution context");
  const kernels::Device device = context->device();
  const bool cpu = device.backend == kernels::Backend::kCpu;
  if (kv_pool == nullptr && !cpu) {
    return absl::InvalidArgumentError(absl::StrCat(
        "rank model: a rank on ", kernels::DeviceName(device), " needs a KV pool on it"));
  }
  if (kv_pool != nullptr) {
    if (!(kv_pool->device() == device)) {
      return absl::InvalidArgumentError(
          absl::StrCat("rank model: the KV pool lives on ", kernels::DeviceName(kv_pool->device()),
                       ", the rank runs on ", kernels::DeviceName(device)));
    }
    if (kv_pool->head_dim() != weights.config.head_dim) {
      return absl::InvalidArgumentError(absl::StrCat("rank model: KV pool head_dim ",
                                                     kv_pool->head_dim(), " != model head_dim ",
                                                     weights.config.head_dim));
    }
  }
  RankWeights rank_weights;
  if (cpu && placement == WeightPlacement::kAuto) {
    rank_weights = RankWeights::InPlace(weights, shard);
  } else {
    DAPQ_ASSIGN_OR_RETURN(rank_weights, RankWeights::Upload(weights, shard, *context));
  }
  std::unique_ptr<RankModel> model(new RankModel(weights, shard, comm, std::move(kv_pool),
                                                 std::move(context), std::move(rank_weights)));
  model->host_memory_ = cpu && placement == WeightPlacement::kAuto;
  // The RoPE frequencies, where the kernel reads them.
  DAPQ_ASSIGN_OR_RETURN(
      model->inv_freq_dev_,
      model->Stage(model->inv_freq_d_, model->inv_freq_.data(), model->inv_freq_.size()));
  DAPQ_RETURN_IF_ERROR(model->context_->Synchronize());
  return model;
}

template <typename T>
absl::StatusOr<T*> RankModel::Scratch(kernels::DeviceMemory& memory, size_t count) {
  const size_t bytes = std::max<size_t>(count, 1) * sizeof(T);
  if (memory.bytes() < bytes) {
    // Grows by half again, so a pass a little larger than the last does not reallocate.
    DAPQ_ASSIGN_OR_RETURN(memory, context_->Allocate(std::max(bytes, memory.bytes() * 3 / 2)));
  }
  return static_cast<T*>(memory.data());
}

template <typename T>
absl::StatusOr<const T*> RankModel::Stage(kernels::DeviceMemory& memory, const T* host,
                                          size_t count) {
  if (host_memory_) return host;  // the kernels read host memory
  DAPQ_ASSIGN_OR_RETURN(T * device, Scratch<T>(memory, count));
  DAPQ_RETURN_IF_ERROR(
      context_->CopyAsync(device, host, count * sizeof(T), kernels::CopyKind::kHostToDevice));
  return device;
}

absl::Status RankModel::Linear(int m, int n, int k, const float* x, int ldx, const WeightMatrix& w,
                               float* y, const float* bias) {
  kernels::GemmParams g;
  g.m = m;
  g.n = n;
  g.k = k;
  g.a = x;
  g.lda = ldx;
  if (w.dtype == kernels::DType::kBF16) {
    g.b_dtype = kernels::DType::kBF16;
    g.b_bf16 = static_cast<const uint16_t*>(w.data);
  } else {
    g.b = static_cast<const float*>(w.data);
  }
  g.ldb = w.ld;
  g.trans_b = true;
  g.c = y;
  g.ldc = n;
  const kernels::Stream stream = context_->stream();
  DAPQ_RETURN_IF_ERROR(kernels::Gemm(g, stream));
  if (bias == nullptr) return absl::OkStatus();
  // y += ones[m, 1] . bias[1, n]: a rank-1 update, exact (each element gains bias once), and
  // the same op on every backend.
  if (ones_.size() < static_cast<size_t>(m)) {
    ones_.assign(static_cast<size_t>(m) * 3 / 2 + 1, 1.0f);
    DAPQ_ASSIGN_OR_RETURN(ones_dev_, Stage(ones_d_, ones_.data(), ones_.size()));
  }
  kernels::GemmParams b;
  b.m = m;
  b.n = n;
  b.k = 1;
  b.a = ones_dev_;
  b.lda = 1;
  b.b = bias;
  b.ldb = n;
  b.trans_b = false;
  b.c = y;
  b.ldc = n;
  b.beta = 1.0f;
  return kernels::Gemm(b, stream);
}

absl::Status RankModel::AllReduce(float* data, size_t count) {
  if (shard_.tp == 1) return absl::OkStatus();
  if (host_memory_) return comm_->AllReduceSum(data, count);
  if (comm_->TakesDeviceBuffers() && context_->device().backend == kernels::Backend::kCuda) {
    return comm_->AllReduceSumOnStream(data, count, context_->stream());  // NCCL: in stream order
  }
  // Through host memory: the communicator takes host buffers (Gloo, in-process).
  reduce_host_.resize(count);
  DAPQ_RETURN_IF_ERROR(context_->CopyAsync(reduce_host_.data(), data, count * sizeof(float),
                                           kernels::CopyKind::kDeviceToHost));
  DAPQ_RETURN_IF_ERROR(context_->Synchronize());
  DAPQ_RETURN_IF_ERROR(comm_->AllReduceSum(reduce_host_.data(), count));
  return context_->CopyAsync(data, reduce_host_.data(), count * sizeof(float),
                             kernels::CopyKind::kHostToDevice);
}

absl::Status RankModel::Drain() {
  if (comm_ == nullptr || shard_.tp == 1 || !comm_->TakesDeviceBuffers()) {
    return context_->Synchronize();
  }
  // The stream holds collectives: a dead peer would keep them waiting and a blocking
  // synchronisation with them. Poll the stream and the group instead, for at most the
  // collectives' own timeout.
  constexpr std::chrono::seconds kTimeout(120);
  DAPQ_ASSIGN_OR_RETURN(kernels::Event done, context_->RecordEvent());
  const auto deadline = std::chrono::steady_clock::now() + kTimeout;
  while (true) {
    DAPQ_ASSIGN_OR_RETURN(const bool finished, context_->EventDone(done));
    if (finished) return absl::OkStatus();
    DAPQ_RETURN_IF_ERROR(comm_->AsyncError());
    if (std::chrono::steady_clock::now() > deadline) {
      comm_->Abort();
      return absl::DeadlineExceededError(
          absl::StrCat("forward: the pass's stream did not finish within ", kTimeout.count(),
                       " s (the group was aborted)"));
    }
    std::this_thread::yield();
  }
}

KvCache RankModel::NewCache() const {
  return KvCache(c_.n_layers, shard_.kv_heads, c_.head_dim, kv_pool_);
}

absl::Status RankModel::Forward(std::span<const int> tokens, std::span<const int32_t> positions,
                                KvCache& cache, std::span<float> logits, bool all_logits,
                                QueryObserver* observer) {
  const BatchSlice slice{tokens, positions, &cache};
  return ForwardSlices(std::span(&slice, 1), logits, all_logits, observer);
}

absl::Status RankModel::ForwardBatch(std::span<const BatchSlice> slices, std::span<float> logits) {
  return ForwardSlices(slices, logits, /*all_logits=*/false, /*observer=*/nullptr);
}

absl::Status RankModel::ForwardSlices(std::span<const BatchSlice> slices, std::span<float> logits,
                                      bool all_logits, QueryObserver* observer) {
  if (slices.empty()) return absl::InvalidArgumentError("forward: no sequences");
  if (slices.size() > 1 && (all_logits || observer != nullptr)) {
    return absl::InvalidArgumentError("forward: all_logits and observers need one sequence");
  }
  int m = 0;
  for (size_t s = 0; s < slices.size(); ++s) {
    const BatchSlice& slice = slices[s];
    // Built only for an error: this loop runs on every forward pass.
    const auto where = [&] {
      return slices.size() > 1 ? absl::StrCat("forward: sequence ", s, ": ")
                               : std::string("forward: ");
    };
    if (slice.tokens.empty()) return absl::InvalidArgumentError(where() + "no tokens");
    if (slice.cache == nullptr) return absl::InvalidArgumentError(where() + "no cache");
    for (size_t other = 0; other < s; ++other) {
      if (slices[other].cache == slice.cache) {
        return absl::InvalidArgumentError(
            absl::StrCat(where(), "the same cache as sequence ", other));
      }
    }
    if (slice.positions.size() != slice.tokens.size()) {
      return absl::InvalidArgumentError(absl::StrCat(where(), slice.tokens.size(), " tokens but ",
                                                     slice.positions.size(), " positions"));
    }
    for (size_t i = 0; i < slice.tokens.size(); ++i) {
      if (slice.tokens[i] < 0 || slice.tokens[i] >= c_.vocab_size) {
        return absl::InvalidArgumentError(absl::StrCat(where(), "token id ", slice.tokens[i],
                                                       " at index ", i, " outside [0, ",
                                                       c_.vocab_size, ")"));
      }
      if (slice.positions[i] < 0 || slice.positions[i] >= c_.max_seq_len) {
        return absl::OutOfRangeError(absl::StrCat(where(), "position ", slice.positions[i],
                                                  " outside the context [0, ", c_.max_seq_len,
                                                  ")"));
      }
    }
    m += static_cast<int>(slice.tokens.size());
  }
  const size_t rows_out = all_logits ? static_cast<size_t>(m) : slices.size();
  const size_t want = rows_out * c_.vocab_size;
  if (!logits.empty() && logits.size() != want) {
    return absl::InvalidArgumentError(
        absl::StrCat("forward: logits buffer holds ", logits.size(), " values, need ", want));
  }
  if (!logits.empty() && rw_.classifier.data == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(
        "forward: rank ", shard_.rank, " holds no classifier (only rank 0 computes logits)"));
  }
  absl::Status reserved = absl::OkStatus();
  for (const BatchSlice& slice : slices) {
    reserved = slice.cache->ReserveAppend(static_cast<int>(slice.tokens.size()));
    if (!reserved.ok()) break;
  }
  if (shard_.tp > 1 && slices.front().cache->pool().max_blocks() > 0) {
    // A capped KV block pool can run out on some ranks only (ragged per-head lengths after
    // compression): the ranks agree before any collective of the pass, so that all of them
    // fail together with ResourceExhausted and the group stays in step. An uncapped pool fails
    // only when memory does, and that takes the process down anyway: no extra collective per
    // pass for it.
    int64_t failed = reserved.ok() ? 0 : 1;
    DAPQ_RETURN_IF_ERROR(comm_->AllReduceSum(&failed, 1));
    if (failed > 0 && reserved.ok()) {
      return absl::ResourceExhaustedError(absl::StrCat("forward: the KV block pool of ", failed,
                                                       " other rank(s) has no room for ", m,
                                                       " more slots"));
    }
  }
  DAPQ_RETURN_IF_ERROR(reserved);

  const int dim = c_.dim;
  const size_t md = static_cast<size_t>(m);
  const kernels::Stream stream = context_->stream();
  // The kernels below launch from this thread onto the context's device.
  if (!host_memory_) DAPQ_RETURN_IF_ERROR(context_->MakeCurrent());
  positions_.clear();
  tokens_.clear();
  for (const BatchSlice& slice : slices) {
    tokens_.insert(tokens_.end(), slice.tokens.begin(), slice.tokens.end());
    positions_.insert(positions_.end(), slice.positions.begin(), slice.positions.end());
  }
  DAPQ_ASSIGN_OR_RETURN(float* x, Scratch<float>(x_, md * dim));
  DAPQ_ASSIGN_OR_RETURN(float* xb, Scratch<float>(xb_, md * dim));
  DAPQ_ASSIGN_OR_RETURN(const int32_t* tokens, Stage(tokens_d_, tokens_.data(), md));
  DAPQ_ASSIGN_OR_RETURN(positions_dev_, Stage(positions_d_, positions_.data(), md));
  DAPQ_RETURN_IF_ERROR(StageTables(slices));
  kernels::EmbeddingParams embed{
      m, dim, c_.vocab_size, tokens, kernels::DType::kF32, rw_.token_embedding, x, dim};
  DAPQ_RETURN_IF_ERROR(kernels::Embedding(embed, stream));
  // Each layer starts from its attention norm of x: the first here, the others fused with the
  // residual add that ends the layer before.
  kernels::RmsNormParams norm0{m, dim, x, dim, rw_.layers[0].attn_norm, xb, dim, c_.norm_eps};
  DAPQ_RETURN_IF_ERROR(kernels::RmsNorm(norm0, stream));
  for (int l = 0; l < c_.n_layers; ++l) {
    DAPQ_RETURN_IF_ERROR(Layer(l, slices, observer));
  }
  for (const BatchSlice& slice : slices) {
    slice.cache->Commit(slice.positions.data(), static_cast<int>(slice.tokens.size()));
  }

  if (logits.empty()) return host_memory_ ? absl::OkStatus() : Drain();
  // The rows whose logits are wanted: every token, or each slice's last.
  const int rows = static_cast<int>(rows_out);
  DAPQ_ASSIGN_OR_RETURN(xb, Scratch<float>(xb_, rows_out * dim));
  if (all_logits) {
    kernels::RmsNormParams norm{rows, dim, x, dim, rw_.final_norm, xb, dim, c_.norm_eps};
    DAPQ_RETURN_IF_ERROR(kernels::RmsNorm(norm, stream));
  } else {
    int end = 0;
    for (size_t s = 0; s < slices.size(); ++s) {
      end += static_cast<int>(slices[s].tokens.size());
      kernels::RmsNormParams norm{1,
                                  dim,
                                  x + static_cast<size_t>(end - 1) * dim,
                                  dim,
                                  rw_.final_norm,
                                  xb + s * dim,
                                  dim,
                                  c_.norm_eps};
      DAPQ_RETURN_IF_ERROR(kernels::RmsNorm(norm, stream));
    }
  }
  float* out = logits.data();
  if (!host_memory_) {
    DAPQ_ASSIGN_OR_RETURN(out, Scratch<float>(logits_, want));
  }
  DAPQ_RETURN_IF_ERROR(Linear(rows, c_.vocab_size, dim, xb, dim, rw_.classifier, out));
  if (host_memory_) return absl::OkStatus();
  DAPQ_RETURN_IF_ERROR(context_->CopyAsync(logits.data(), out, want * sizeof(float),
                                           kernels::CopyKind::kDeviceToHost));
  return Drain();
}

absl::Status RankModel::StageTables(std::span<const BatchSlice> slices) {
  const int heads = shard_.kv_heads;
  tables_host_.clear();
  slice_tables_.clear();
  for (int layer = 0; layer < c_.n_layers; ++layer) {
    for (const BatchSlice& slice : slices) {
      const KvCache& cache = *slice.cache;
      const int ms = static_cast<int>(slice.tokens.size());
      SliceTable t;
      for (int h = 0; h < heads; ++h) {
        t.blocks_per_head = std::max(t.blocks_per_head, cache.num_blocks(layer, h));
      }
      t.table = tables_host_.size();
      tables_host_.resize(t.table + static_cast<size_t>(heads) * t.blocks_per_head, -1);
      for (int h = 0; h < heads; ++h) {
        const std::span<const kvstore::BlockId> ids = cache.block_ids(layer, h);
        std::copy(ids.begin(), ids.end(),
                  tables_host_.begin() + static_cast<long>(t.table) +
                      static_cast<long>(h) * t.blocks_per_head);
      }
      // The lengths before this pass's slots (where KvAppend writes), then after them.
      t.first = tables_host_.size();
      for (int h = 0; h < heads; ++h) tables_host_.push_back(cache.length(layer, h));
      t.lens = tables_host_.size();
      for (int h = 0; h < heads; ++h) {
        tables_host_.push_back(cache.length(layer, h) + ms);
        t.max_len = std::max(t.max_len, tables_host_.back());
      }
      slice_tables_.push_back(t);
    }
  }
  if (host_memory_) {  // the kernels read the host buffer itself
    tables_dev_ = tables_host_.data();
    return absl::OkStatus();
  }
  const size_t bytes = tables_host_.size() * sizeof(int32_t);
  if (tables_copy_pending_) {  // a pass that failed before draining may still be copying
    DAPQ_ASSIGN_OR_RETURN(const bool done, context_->EventDone(tables_copied_));
    if (!done) DAPQ_RETURN_IF_ERROR(context_->Synchronize());
    tables_copy_pending_ = false;
  }
  if (tables_pinned_.bytes() < bytes) {
    DAPQ_ASSIGN_OR_RETURN(tables_pinned_,
                          context_->Allocate(std::max(bytes, tables_pinned_.bytes() * 3 / 2),
                                             kernels::MemoryKind::kPinnedHost));
  }
  std::memcpy(tables_pinned_.data(), tables_host_.data(), bytes);
  DAPQ_ASSIGN_OR_RETURN(int32_t * device, Scratch<int32_t>(tables_d_, tables_host_.size()));
  DAPQ_RETURN_IF_ERROR(
      context_->CopyAsync(device, tables_pinned_.data(), bytes, kernels::CopyKind::kHostToDevice));
  DAPQ_ASSIGN_OR_RETURN(tables_copied_, context_->RecordEvent());
  tables_copy_pending_ = true;
  tables_dev_ = device;
  return absl::OkStatus();
}

absl::Status RankModel::SliceAttention(int layer, int row0, int ms, KvCache& cache,
                                       const SliceTable& t) {
  const int hd = c_.head_dim;
  const int q_dim = shard_.heads * hd, kv_dim = shard_.kv_heads * hd;
  const kernels::Stream stream = context_->stream();
  const auto* k = static_cast<const float*>(k_.data());
  const auto* v = static_cast<const float*>(v_.data());
  // The new keys and values go to slots [length, length + ms) of every head (reserved in
  // ForwardSlices), then the kernels read every head through the same block table.
  DAPQ_RETURN_IF_ERROR(cache.AppendRows(
      layer, ms, k + static_cast<size_t>(row0) * kv_dim, v + static_cast<size_t>(row0) * kv_dim,
      kv_dim, tables_dev_ + t.table, t.blocks_per_head, stream, tables_dev_ + t.first));
  const kvstore::BlockPool& pool = cache.pool();
  kernels::AttentionParams ap;
  ap.q_tokens = ms;
  ap.q_heads = shard_.heads;
  ap.kv_heads = shard_.kv_heads;
  ap.head_dim = hd;
  ap.q = static_cast<const float*>(q_.data()) + static_cast<size_t>(row0) * q_dim;
  ap.q_stride = q_dim;
  ap.block_table = tables_dev_ + t.table;
  ap.kv_dtype = pool.dtype();
  ap.k_pool = pool.keys_base();
  ap.v_pool = pool.values_base();
  ap.block_stride = pool.block_stride();
  ap.pool_blocks = pool.capacity();
  ap.tokens_per_block = cache.tokens_per_block();
  ap.blocks_per_head = t.blocks_per_head;
  // The longest head bounds the device kernels; per-head lengths come from the staged table.
  ap.kv_len = t.max_len;
  ap.kv_lens = tables_dev_ + t.lens;
  ap.out = static_cast<float*>(att_.data()) + static_cast<size_t>(row0) * q_dim;
  ap.out_stride = q_dim;
  // A 16-bit cache's precision is the one chosen: prefill may round the queries and the softmax
  // weights to it (tensor cores on the CUDA backend, oneDNN bf16 GEMMs for a bf16 cache on the
  // CPU); decode stays exact.
  ap.round_to_kv_dtype = true;
  return ms == 1 ? kernels::AttentionDecode(ap, stream) : kernels::AttentionPrefill(ap, stream);
}

absl::Status RankModel::Layer(int layer, std::span<const BatchSlice> slices,
                              QueryObserver* observer) {
  const RankLayerWeights& lw = rw_.layers[layer];
  const int m = static_cast<int>(positions_.size());
  const int dim = c_.dim, hd = c_.head_dim;
  const int q_dim = shard_.heads * hd, kv_dim = shard_.kv_heads * hd;
  const size_t md = static_cast<size_t>(m);
  const kernels::Stream stream = context_->stream();
  const int32_t* positions = positions_dev_;
  const float* inv_freq = inv_freq_dev_;
  auto* x = static_cast<float*>(x_.data());
  auto* xb = static_cast<float*>(xb_.data());
  DAPQ_ASSIGN_OR_RETURN(float* q, Scratch<float>(q_, md * q_dim));
  DAPQ_ASSIGN_OR_RETURN(float* k, Scratch<float>(k_, md * kv_dim));
  DAPQ_ASSIGN_OR_RETURN(float* v, Scratch<float>(v_, md * kv_dim));
  DAPQ_ASSIGN_OR_RETURN(float* att, Scratch<float>(att_, md * q_dim));
  DAPQ_ASSIGN_OR_RETURN(float* out, Scratch<float>(out_, md * dim));

  // Attention block (xb holds the attention norm of x: ForwardSlices or the layer before).
  DAPQ_RETURN_IF_ERROR(Linear(m, q_dim, dim, xb, dim, lw.wq, q, lw.bq));
  DAPQ_RETURN_IF_ERROR(Linear(m, kv_dim, dim, xb, dim, lw.wk, k, lw.bk));
  DAPQ_RETURN_IF_ERROR(Linear(m, kv_dim, dim, xb, dim, lw.wv, v, lw.bv));
  if (observer != nullptr) {
    q_pre_.resize(md * q_dim);
    DAPQ_RETURN_IF_ERROR(context_->CopyAsync(q_pre_.data(), q, q_pre_.size() * sizeof(float),
                                             kernels::CopyKind::kDeviceToHost));
  }
  kernels::RopeParams rq{m, shard_.heads, hd, q, q_dim, positions, inv_freq, c_.rope.layout};
  DAPQ_RETURN_IF_ERROR(kernels::Rope(rq, stream));
  kernels::RopeParams rk{m, shard_.kv_heads, hd, k, kv_dim, positions, inv_freq, c_.rope.layout};
  DAPQ_RETURN_IF_ERROR(kernels::Rope(rk, stream));

  // Attention, per sequence: its new K/V go to slots [length, length + ms) of each head's
  // blocks (reserved in ForwardSlices), and the kernels read every head through its block table
  // (staged there for every layer).
  int row0 = 0;
  for (size_t s = 0; s < slices.size(); ++s) {
    const BatchSlice& slice = slices[s];
    const SliceTable& t = slice_tables_[static_cast<size_t>(layer) * slices.size() + s];
    const int ms = static_cast<int>(slice.tokens.size());
    DAPQ_RETURN_IF_ERROR(SliceAttention(layer, row0, ms, *slice.cache, t));
    if (observer != nullptr) {
      const float* q_post = q;
      if (!host_memory_) {
        q_host_.resize(md * q_dim);
        DAPQ_RETURN_IF_ERROR(context_->CopyAsync(q_host_.data(), q, q_host_.size() * sizeof(float),
                                                 kernels::CopyKind::kDeviceToHost));
        DAPQ_RETURN_IF_ERROR(context_->Synchronize());
        q_post = q_host_.data();
      }
      const std::span<const int32_t> lens(tables_host_.data() + t.lens, shard_.kv_heads);
      DAPQ_RETURN_IF_ERROR(observer->OnQueries(layer, ms, positions_.data() + row0, q_pre_.data(),
                                               q_post, lens, *slice.cache));
    }
    row0 += ms;
  }

  // wo is [dim, n_heads * hd]: this rank multiplies by its column block (row split).
  DAPQ_RETURN_IF_ERROR(Linear(m, dim, q_dim, att, q_dim, lw.wo, out));
  DAPQ_RETURN_IF_ERROR(AllReduce(out, md * dim));

  // FFN block: x += attention output, then its norm; w1/w3 row slices, w2 column slice.
  const int f = shard_.ffn_size;
  DAPQ_ASSIGN_OR_RETURN(float* gate, Scratch<float>(gate_, md * f));
  DAPQ_ASSIGN_OR_RETURN(float* up, Scratch<float>(up_, md * f));
  kernels::AddRmsNormParams fnorm{m, dim, x, dim, out, dim, lw.ffn_norm, xb, dim, c_.norm_eps};
  DAPQ_RETURN_IF_ERROR(kernels::AddRmsNorm(fnorm, stream));
  DAPQ_RETURN_IF_ERROR(Linear(m, f, dim, xb, dim, lw.w1, gate));
  DAPQ_RETURN_IF_ERROR(Linear(m, f, dim, xb, dim, lw.w3, up));
  kernels::SwiGluParams act{m, f, gate, f, up, f, gate, f};
  DAPQ_RETURN_IF_ERROR(kernels::SwiGlu(act, stream));
  DAPQ_RETURN_IF_ERROR(Linear(m, dim, f, gate, f, lw.w2, out));
  DAPQ_RETURN_IF_ERROR(AllReduce(out, md * dim));
  // x += FFN output, then the next layer's attention norm (the last layer's final norm runs on
  // the rows whose logits are wanted only: ForwardSlices).
  const bool last = layer + 1 == c_.n_layers;
  kernels::AddRmsNormParams next{m,
                                 dim,
                                 x,
                                 dim,
                                 out,
                                 dim,
                                 last ? nullptr : rw_.layers[layer + 1].attn_norm,
                                 last ? nullptr : xb,
                                 dim,
                                 c_.norm_eps};
  return kernels::AddRmsNorm(next, stream);
}

}  // namespace dapq::worker
