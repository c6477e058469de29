// File: worker/model_runner.cc
// The per-rank transformer forward pass built from kernels/ ops.
#include "worker/model_runner.h"

#include <algorithm>
#include <cstring>
#include <string>

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
namespace {

// y[m, n] = x[m, k] . W^T where W's rows are a slice with row stride ldw; plus bias when given.
// One weight matrix as the linear layers multiply with it: fp32, or bf16 when the model's
// weights were converted (ModelWeights::weights_dtype).
struct Weight {
  const float* f32 = nullptr;
  const uint16_t* bf16 = nullptr;
  // The matrix from element `offset` on (a rank's slice: rows, or a column block with ldw).
  Weight At(long offset) const {
    return {f32 != nullptr ? f32 + offset : nullptr, bf16 != nullptr ? bf16 + offset : nullptr};
  }
};

absl::Status Linear(int m, int n, int k, const float* x, int ldx, Weight w, int ldw, float* y,
                    const float* bias = nullptr) {
  kernels::GemmParams g;
  g.m = m;
  g.n = n;
  g.k = k;
  g.a = x;
  g.lda = ldx;
  g.b = w.f32;
  if (w.bf16 != nullptr) {
    g.b_dtype = kernels::DType::kBF16;
    g.b_bf16 = w.bf16;
  }
  g.ldb = ldw;
  g.trans_b = true;
  g.c = y;
  g.ldc = n;
  DAPQ_RETURN_IF_ERROR(kernels::Gemm(g));
  if (bias != nullptr) {
    for (int r = 0; r < m; ++r) {
      for (int i = 0; i < n; ++i) y[static_cast<long>(r) * n + i] += bias[i];
    }
  }
  return absl::OkStatus();
}

}  // namespace

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
    : w_(weights), c_(weights.config), shard_(shard), comm_(comm), kv_pool_(std::move(kv_pool)) {
  auto inv = kernels::ComputeRopeInvFreq(c_.rope);
  DAPQ_CHECK(inv.ok()) << inv.status();  // the config was validated when loaded
  inv_freq_ = *std::move(inv);
  if (kv_pool_ == nullptr) {
    auto pool = kvstore::BlockPool::Create(c_.head_dim, 16);
    DAPQ_CHECK(pool.ok()) << pool.status();  // head_dim validated with the config
    kv_pool_ = *std::move(pool);
  }
  DAPQ_CHECK(kv_pool_->head_dim() == c_.head_dim)
      << "kv pool head_dim " << kv_pool_->head_dim() << " != model head_dim " << c_.head_dim;
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
  x_.resize(static_cast<size_t>(m) * dim);
  xb_.resize(static_cast<size_t>(m) * dim);
  positions_.clear();
  tokens_.clear();
  for (const BatchSlice& slice : slices) {
    tokens_.insert(tokens_.end(), slice.tokens.begin(), slice.tokens.end());
    positions_.insert(positions_.end(), slice.positions.begin(), slice.positions.end());
  }
  kernels::EmbeddingParams embed{
      m,         dim, c_.vocab_size, tokens_.data(), kernels::DType::kF32, w_.token_embedding,
      x_.data(), dim};
  DAPQ_RETURN_IF_ERROR(kernels::Embedding(embed));
  // Each layer starts from its attention norm of x: the first here, the others fused with the
  // residual add that ends the layer before.
  kernels::RmsNormParams norm0{m,          dim, x_.data(),  dim, w_.layers[0].attn_norm,
                               xb_.data(), dim, c_.norm_eps};
  DAPQ_RETURN_IF_ERROR(kernels::RmsNorm(norm0));
  for (int l = 0; l < c_.n_layers; ++l) {
    DAPQ_RETURN_IF_ERROR(Layer(l, slices, observer));
  }
  for (const BatchSlice& slice : slices) {
    slice.cache->Commit(slice.positions.data(), static_cast<int>(slice.tokens.size()));
  }

  if (logits.empty()) return absl::OkStatus();
  // The rows whose logits are wanted: every token, or each slice's last.
  const int rows = static_cast<int>(rows_out);
  xb_.resize(static_cast<size_t>(rows) * dim);
  if (all_logits) {
    kernels::RmsNormParams norm{rows,          dim,        x_.data(), dim,
                                w_.final_norm, xb_.data(), dim,       c_.norm_eps};
    DAPQ_RETURN_IF_ERROR(kernels::RmsNorm(norm));
  } else {
    int end = 0;
    for (size_t s = 0; s < slices.size(); ++s) {
      end += static_cast<int>(slices[s].tokens.size());
      kernels::RmsNormParams norm{1,   dim,           &x_[static_cast<size_t>(end - 1) * dim],
                                  dim, w_.final_norm, &xb_[s * dim],
                                  dim, c_.norm_eps};
      DAPQ_RETURN_IF_ERROR(kernels::RmsNorm(norm));
    }
  }
  return Linear(rows, c_.vocab_size, dim, xb_.data(), dim,
                Weight{w_.classifier, w_.classifier_bf16}, dim, logits.data());
}

absl::Status RankModel::SliceAttention(int layer, int row0, int ms, KvCache& cache) {
  const int hd = c_.head_dim;
  const int q_dim = shard_.heads * hd, kv_dim = shard_.kv_heads * hd;
  kv_lens_.resize(shard_.kv_heads);
  int blocks_per_head = 0;
  for (int h = 0; h < shard_.kv_heads; ++h) {
    kv_lens_[h] = cache.length(layer, h) + ms;
    blocks_per_head = std::max(blocks_per_head, cache.num_blocks(layer, h));
  }
  block_table_.assign(static_cast<size_t>(shard_.kv_heads) * blocks_per_head, -1);
  for (int h = 0; h < shard_.kv_heads; ++h) {
    const std::span<const kvstore::BlockId> ids = cache.block_ids(layer, h);
    std::copy(ids.begin(), ids.end(),
              block_table_.begin() + static_cast<long>(h) * blocks_per_head);
  }
  // The new keys and values go to slots [length, length + ms) of every head (reserved in
  // ForwardSlices), then the kernels read every head through the same block table.
  DAPQ_RETURN_IF_ERROR(cache.AppendRows(layer, ms, &k_[static_cast<size_t>(row0) * kv_dim],
                                        &v_[static_cast<size_t>(row0) * kv_dim], kv_dim,
                                        block_table_.data(), blocks_per_head));
  const kvstore::BlockPool& pool = cache.pool();
  kernels::AttentionParams ap;
  ap.q_tokens = ms;
  ap.q_heads = shard_.heads;
  ap.kv_heads = shard_.kv_heads;
  ap.head_dim = hd;
  ap.q = &q_[static_cast<size_t>(row0) * q_dim];
  ap.q_stride = q_dim;
  ap.block_table = block_table_.data();
  ap.kv_dtype = pool.dtype();
  ap.k_pool = pool.keys_base();
  ap.v_pool = pool.values_base();
  ap.block_stride = pool.block_stride();
  ap.pool_blocks = pool.capacity();
  ap.tokens_per_block = cache.tokens_per_block();
  ap.blocks_per_head = blocks_per_head;
  ap.kv_len = kv_lens_[0];
  ap.kv_lens = kv_lens_.data();
  ap.out = &att_[static_cast<size_t>(row0) * q_dim];
  ap.out_stride = q_dim;
  return ms == 1 ? kernels::AttentionDecode(ap) : kernels::AttentionPrefill(ap);
}

absl::Status RankModel::Layer(int layer, std::span<const BatchSlice> slices,
                              QueryObserver* observer) {
  const LayerWeights& lw = w_.layers[layer];
  const int m = static_cast<int>(positions_.size());
  const int32_t* positions = positions_.data();
  const int dim = c_.dim, hd = c_.head_dim;
  const int q_dim = shard_.heads * hd, kv_dim = shard_.kv_heads * hd;
  const long q_row0 = static_cast<long>(shard_.head_begin) * hd;
  const long kv_row0 = static_cast<long>(shard_.kv_head_begin) * hd;
  const size_t md = static_cast<size_t>(m);
  q_.resize(md * q_dim);
  k_.resize(md * kv_dim);
  v_.resize(md * kv_dim);
  att_.resize(md * q_dim);
  out_.resize(md * dim);

  // Attention block (xb_ holds the attention norm of x: ForwardSlices or the layer before).
  DAPQ_RETURN_IF_ERROR(Linear(m, q_dim, dim, xb_.data(), dim,
                              Weight{lw.wq, lw.bf16.wq}.At(q_row0 * dim), dim, q_.data(),
                              lw.bq ? lw.bq + q_row0 : nullptr));
  DAPQ_RETURN_IF_ERROR(Linear(m, kv_dim, dim, xb_.data(), dim,
                              Weight{lw.wk, lw.bf16.wk}.At(kv_row0 * dim), dim, k_.data(),
                              lw.bk ? lw.bk + kv_row0 : nullptr));
  DAPQ_RETURN_IF_ERROR(Linear(m, kv_dim, dim, xb_.data(), dim,
                              Weight{lw.wv, lw.bf16.wv}.At(kv_row0 * dim), dim, v_.data(),
                              lw.bv ? lw.bv + kv_row0 : nullptr));
  if (observer != nullptr) q_pre_.assign(q_.begin(), q_.end());
  kernels::RopeParams rq{
      m, shard_.heads, hd, q_.data(), q_dim, positions, inv_freq_.data(), c_.rope.layout};
  DAPQ_RETURN_IF_ERROR(kernels::Rope(rq));
  kernels::RopeParams rk{
      m, shard_.kv_heads, hd, k_.data(), kv_dim, positions, inv_freq_.data(), c_.rope.layout};
  DAPQ_RETURN_IF_ERROR(kernels::Rope(rk));

  // Attention, per sequence: its new K/V go to slots [length, length + ms) of each head's
  // blocks (reserved in ForwardSlices), and the kernels read every head through its block table.
  int row0 = 0;
  for (const BatchSlice& slice : slices) {
    const int ms = static_cast<int>(slice.tokens.size());
    DAPQ_RETURN_IF_ERROR(SliceAttention(layer, row0, ms, *slice.cache));
    if (observer != nullptr) {
      DAPQ_RETURN_IF_ERROR(observer->OnQueries(layer, ms, positions + row0, q_pre_.data(),
                                               q_.data(), kv_lens_, *slice.cache));
    }
    row0 += ms;
  }

  // wo is [dim, n_heads * hd]: this rank multiplies by its column block (row split).
  DAPQ_RETURN_IF_ERROR(Linear(m, dim, q_dim, att_.data(), q_dim,
                              Weight{lw.wo, lw.bf16.wo}.At(q_row0), c_.q_dim(), out_.data()));
  DAPQ_RETURN_IF_ERROR(comm_->AllReduceSum(out_.data(), out_.size()));

  // FFN block: x += attention output, then its norm; w1/w3 row slices, w2 column slice.
  const int f = shard_.ffn_size;
  const long f0 = shard_.ffn_begin;
  gate_.resize(md * f);
  up_.resize(md * f);
  kernels::AddRmsNormParams fnorm{m,   dim,         x_.data(),  dim, out_.data(),
                                  dim, lw.ffn_norm, xb_.data(), dim, c_.norm_eps};
  DAPQ_RETURN_IF_ERROR(kernels::AddRmsNorm(fnorm));
  DAPQ_RETURN_IF_ERROR(Linear(m, f, dim, xb_.data(), dim, Weight{lw.w1, lw.bf16.w1}.At(f0 * dim),
                              dim, gate_.data()));
  DAPQ_RETURN_IF_ERROR(
      Linear(m, f, dim, xb_.data(), dim, Weight{lw.w3, lw.bf16.w3}.At(f0 * dim), dim, up_.data()));
  kernels::SwiGluParams act{m, f, gate_.data(), f, up_.data(), f, gate_.data(), f};
  DAPQ_RETURN_IF_ERROR(kernels::SwiGlu(act));
  DAPQ_RETURN_IF_ERROR(Linear(m, dim, f, gate_.data(), f, Weight{lw.w2, lw.bf16.w2}.At(f0),
                              c_.hidden_dim, out_.data()));
  DAPQ_RETURN_IF_ERROR(comm_->AllReduceSum(out_.data(), out_.size()));
  // x += FFN output, then the next layer's attention norm (the last layer's final norm runs on
  // the rows whose logits are wanted only: ForwardSlices).
  const bool last = layer + 1 == c_.n_layers;
  kernels::AddRmsNormParams next{m,
                                 dim,
                                 x_.data(),
                                 dim,
                                 out_.data(),
                                 dim,
                                 last ? nullptr : w_.layers[layer + 1].attn_norm,
                                 last ? nullptr : xb_.data(),
                                 dim,
                                 c_.norm_eps};
  return kernels::AddRmsNorm(next);
}

}  // namespace dapq::worker
