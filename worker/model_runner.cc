// File: worker/model_runner.cc
// The per-rank transformer forward pass built from kernels/ ops.
#include "worker/model_runner.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/check.h"
#include "common/status_macros.h"
#include "kernels/activation.h"
#include "kernels/attention.h"
#include "kernels/gemm.h"
#include "kernels/rms_norm.h"
#include "kernels/rope.h"

namespace dapq::worker {
namespace {

// y[m, n] = x[m, k] . W^T where W's rows are a slice with row stride ldw; plus bias when given.
absl::Status Linear(int m, int n, int k, const float* x, int ldx, const float* w, int ldw, float* y,
                    const float* bias = nullptr) {
  kernels::GemmParams g;
  g.m = m;
  g.n = n;
  g.k = k;
  g.a = x;
  g.lda = ldx;
  g.b = w;
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
                     std::shared_ptr<KvBlockPool> kv_pool)
    : w_(weights), c_(weights.config), shard_(shard), comm_(comm), kv_pool_(std::move(kv_pool)) {
  auto inv = kernels::ComputeRopeInvFreq(c_.rope);
  DAPQ_CHECK(inv.ok()) << inv.status();  // the config was validated when loaded
  inv_freq_ = *std::move(inv);
  if (kv_pool_ == nullptr) {
    auto pool = KvBlockPool::Create(c_.head_dim, 16);
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
  const int m = static_cast<int>(tokens.size());
  if (m == 0) return absl::InvalidArgumentError("forward: no tokens");
  if (positions.size() != tokens.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("forward: ", tokens.size(), " tokens but ", positions.size(), " positions"));
  }
  for (int i = 0; i < m; ++i) {
    if (tokens[i] < 0 || tokens[i] >= c_.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("forward: token id ", tokens[i], " at index ",
                                                     i, " outside [0, ", c_.vocab_size, ")"));
    }
    if (positions[i] < 0 || positions[i] >= c_.max_seq_len) {
      return absl::OutOfRangeError(absl::StrCat("forward: position ", positions[i],
                                                " outside the context [0, ", c_.max_seq_len, ")"));
    }
  }
  const size_t want = static_cast<size_t>(all_logits ? m : 1) * c_.vocab_size;
  if (!logits.empty() && logits.size() != want) {
    return absl::InvalidArgumentError(
        absl::StrCat("forward: logits buffer holds ", logits.size(), " values, need ", want));
  }
  absl::Status reserved = cache.ReserveAppend(m);
  if (shard_.tp > 1 && cache.pool().max_blocks() > 0) {
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
  for (int i = 0; i < m; ++i) {
    std::memcpy(&x_[static_cast<size_t>(i) * dim],
                w_.token_embedding + static_cast<long>(tokens[i]) * dim, dim * sizeof(float));
  }
  for (int l = 0; l < c_.n_layers; ++l) {
    DAPQ_RETURN_IF_ERROR(Layer(l, m, positions.data(), cache, observer));
  }
  cache.Commit(positions.data(), m);

  if (logits.empty()) return absl::OkStatus();
  const int first = all_logits ? 0 : m - 1;
  const int rows = m - first;
  xb_.resize(static_cast<size_t>(rows) * dim);
  kernels::RmsNormParams norm{rows, dim,           &x_[static_cast<size_t>(first) * dim],
                              dim,  w_.final_norm, xb_.data(),
                              dim,  c_.norm_eps};
  DAPQ_RETURN_IF_ERROR(kernels::RmsNorm(norm));
  return Linear(rows, c_.vocab_size, dim, xb_.data(), dim, w_.classifier, dim, logits.data());
}

absl::Status RankModel::Layer(int layer, int m, const int32_t* positions, KvCache& cache,
                              QueryObserver* observer) {
  const LayerWeights& lw = w_.layers[layer];
  const int dim = c_.dim, hd = c_.head_dim;
  const int q_dim = shard_.heads * hd, kv_dim = shard_.kv_heads * hd;
  const long q_row0 = static_cast<long>(shard_.head_begin) * hd;
  const long kv_row0 = static_cast<long>(shard_.kv_head_begin) * hd;
  const size_t md = static_cast<size_t>(m);
  xb_.resize(md * dim);
  q_.resize(md * q_dim);
  k_.resize(md * kv_dim);
  v_.resize(md * kv_dim);
  att_.resize(md * q_dim);
  out_.resize(md * dim);

  // Attention block.
  kernels::RmsNormParams norm{m, dim, x_.data(), dim, lw.attn_norm, xb_.data(), dim, c_.norm_eps};
  DAPQ_RETURN_IF_ERROR(kernels::RmsNorm(norm));
  DAPQ_RETURN_IF_ERROR(Linear(m, q_dim, dim, xb_.data(), dim, lw.wq + q_row0 * dim, dim, q_.data(),
                              lw.bq ? lw.bq + q_row0 : nullptr));
  DAPQ_RETURN_IF_ERROR(Linear(m, kv_dim, dim, xb_.data(), dim, lw.wk + kv_row0 * dim, dim,
                              k_.data(), lw.bk ? lw.bk + kv_row0 : nullptr));
  DAPQ_RETURN_IF_ERROR(Linear(m, kv_dim, dim, xb_.data(), dim, lw.wv + kv_row0 * dim, dim,
                              v_.data(), lw.bv ? lw.bv + kv_row0 : nullptr));
  if (observer != nullptr) q_pre_.assign(q_.begin(), q_.end());
  kernels::RopeParams rq{
      m, shard_.heads, hd, q_.data(), q_dim, positions, inv_freq_.data(), c_.rope.layout};
  DAPQ_RETURN_IF_ERROR(kernels::Rope(rq));
  kernels::RopeParams rk{
      m, shard_.kv_heads, hd, k_.data(), kv_dim, positions, inv_freq_.data(), c_.rope.layout};
  DAPQ_RETURN_IF_ERROR(kernels::Rope(rk));

  // New K/V go to slots [length, length + m) of each head's blocks (reserved in Forward); the
  // kernels read every head through its block table.
  kv_lens_.resize(shard_.kv_heads);
  int blocks_per_head = 0;
  for (int h = 0; h < shard_.kv_heads; ++h) {
    const int start = cache.length(layer, h);
    kv_lens_[h] = start + m;
    for (int t = 0; t < m; ++t) {
      std::memcpy(cache.key_slot(layer, h, start + t),
                  &k_[static_cast<size_t>(t) * kv_dim + h * hd], hd * sizeof(float));
      std::memcpy(cache.value_slot(layer, h, start + t),
                  &v_[static_cast<size_t>(t) * kv_dim + h * hd], hd * sizeof(float));
    }
    blocks_per_head = std::max(blocks_per_head, cache.num_blocks(layer, h));
  }
  k_table_.assign(static_cast<size_t>(shard_.kv_heads) * blocks_per_head, nullptr);
  v_table_.assign(k_table_.size(), nullptr);
  for (int h = 0; h < shard_.kv_heads; ++h) {
    const KvBlockTable t = cache.table(layer, h);
    const long row = static_cast<long>(h) * blocks_per_head;
    std::copy_n(t.k_blocks, cache.num_blocks(layer, h), k_table_.begin() + row);
    std::copy_n(t.v_blocks, cache.num_blocks(layer, h), v_table_.begin() + row);
  }
  kernels::AttentionParams ap;
  ap.q_tokens = m;
  ap.q_heads = shard_.heads;
  ap.kv_heads = shard_.kv_heads;
  ap.head_dim = hd;
  ap.q = q_.data();
  ap.q_stride = q_dim;
  ap.k_blocks = k_table_.data();
  ap.v_blocks = v_table_.data();
  ap.tokens_per_block = cache.tokens_per_block();
  ap.blocks_per_head = blocks_per_head;
  ap.kv_len = kv_lens_[0];
  ap.kv_lens = kv_lens_.data();
  ap.out = att_.data();
  ap.out_stride = q_dim;
  DAPQ_RETURN_IF_ERROR(m == 1 ? kernels::AttentionDecode(ap) : kernels::AttentionPrefill(ap));
  if (observer != nullptr) {
    DAPQ_RETURN_IF_ERROR(
        observer->OnQueries(layer, m, positions, q_pre_.data(), q_.data(), kv_lens_, cache));
  }

  // wo is [dim, n_heads * hd]: this rank multiplies by its column block (row split).
  DAPQ_RETURN_IF_ERROR(
      Linear(m, dim, q_dim, att_.data(), q_dim, lw.wo + q_row0, c_.q_dim(), out_.data()));
  DAPQ_RETURN_IF_ERROR(comm_->AllReduceSum(out_.data(), out_.size()));
  for (size_t i = 0; i < out_.size(); ++i) x_[i] += out_[i];

  // FFN block: w1/w3 row slices, w2 column slice.
  const int f = shard_.ffn_size;
  const long f0 = shard_.ffn_begin;
  gate_.resize(md * f);
  up_.resize(md * f);
  kernels::RmsNormParams fnorm{m, dim, x_.data(), dim, lw.ffn_norm, xb_.data(), dim, c_.norm_eps};
  DAPQ_RETURN_IF_ERROR(kernels::RmsNorm(fnorm));
  DAPQ_RETURN_IF_ERROR(Linear(m, f, dim, xb_.data(), dim, lw.w1 + f0 * dim, dim, gate_.data()));
  DAPQ_RETURN_IF_ERROR(Linear(m, f, dim, xb_.data(), dim, lw.w3 + f0 * dim, dim, up_.data()));
  kernels::SwiGluParams act{m, f, gate_.data(), f, up_.data(), f, gate_.data(), f};
  DAPQ_RETURN_IF_ERROR(kernels::SwiGlu(act));
  DAPQ_RETURN_IF_ERROR(Linear(m, dim, f, gate_.data(), f, lw.w2 + f0, c_.hidden_dim, out_.data()));
  DAPQ_RETURN_IF_ERROR(comm_->AllReduceSum(out_.data(), out_.size()));
  for (size_t i = 0; i < out_.size(); ++i) x_[i] += out_[i];
  return absl::OkStatus();
}

}  // namespace dapq::worker
