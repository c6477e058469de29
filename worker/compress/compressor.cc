// File: worker/compress/compressor.cc
// Per-layer score -> select -> compact on one rank.
#include "worker/compress/compressor.h"

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "worker/compress/internal/score_util.h"
#include "worker/compress/selector.h"

namespace dapq::worker::compress {

namespace {

// Scores of local KV head h alone, over its own `len` slots: the inputs of every head (`all`)
// narrowed to its query group and keys, as a rank holding only that head would see them (the
// scorers depend on global head indices only, so the scores are the same as in one call).
absl::Status ScoreOneHead(const Scorer& scorer, const ScoringInputs& all, const KvCache& cache,
                          int h, int len, std::span<float> scores) {
  const int group = all.q_heads / all.kv_heads;
  const int d = all.head_dim;
  ScoringInputs in = all;
  in.n = len;
  in.q_heads = group;
  in.kv_heads = 1;
  in.q_head_begin = all.q_head_begin + h * group;
  in.kv_head_begin = all.kv_head_begin + h;
  std::vector<float> keys(static_cast<size_t>(len) * d), values(keys.size());
  DAPQ_RETURN_IF_ERROR(cache.Gather(all.layer, h, 0, len, keys.data(), values.data()));
  in.keys = keys.data();
  in.values = values.data();
  in.kv_head_stride = static_cast<long>(len) * d;
  std::vector<float> q_pre, q_post, pseudo;
  if (all.window_rows > 0) {
    q_pre = internal::SliceQueryHeads(all.window_q_pre, all.window_rows, all.q_heads, d, h * group,
                                      group);
    q_post = internal::SliceQueryHeads(all.window_q_post, all.window_rows, all.q_heads, d,
                                       h * group, group);
    in.window_q_pre = q_pre.data();
    in.window_q_post = q_post.data();
  }
  if (all.pseudo_rows > 0) {
    pseudo = internal::SliceQueryHeads(all.pseudo_q_post, all.pseudo_rows, all.q_heads, d,
                                       h * group, group);
    in.pseudo_q_post = pseudo.data();
  }
  if (all.accumulated_attention != nullptr) {
    in.accumulated_attention = all.accumulated_attention + static_cast<long>(h) * all.n;
  }
  if (all.query_sum != nullptr) {
    in.query_sum = all.query_sum + static_cast<long>(h) * group * d;
    in.query_outer = all.query_outer + static_cast<long>(h) * group * d * d;
  }
  return scorer.Score(in, scores.subspan(0, len));
}

}  // namespace

absl::Status CompressRank(const CompressionConfig& config, const Scorer& scorer,
                          const QueryCollector& collector, const RankContext& ctx,
                          const std::vector<int>& layer_budgets, KvCache& cache,
                          std::vector<std::vector<float>>* carried_attention) {
  const ModelConfig& m = *ctx.model;
  if (carried_attention != nullptr) {
    carried_attention->assign(static_cast<size_t>(m.n_layers) * ctx.shard.kv_heads, {});
  }
  const int kv_heads = ctx.shard.kv_heads;
  std::vector<float> scores;
  std::vector<float> keys, values;  // one layer's K/V gathered from its block tables
  for (int layer = 0; layer < m.n_layers; ++layer) {
    const std::span<const int32_t> lengths(cache.lengths(layer), kv_heads);
    const int n = *std::max_element(lengths.begin(), lengths.end());
    const bool ragged = std::any_of(lengths.begin(), lengths.end(), [&](int l) { return l != n; });
    ScoringInputs in;
    in.layer = layer;
    in.n = n;
    in.next_position = ctx.next_position;
    in.q_heads = ctx.shard.heads;
    in.kv_heads = kv_heads;
    in.head_dim = m.head_dim;
    in.q_head_begin = ctx.shard.head_begin;
    in.kv_head_begin = ctx.shard.kv_head_begin;
    in.inv_freq = ctx.inv_freq;
    in.rope_layout = m.rope.layout;
    collector.Fill(layer, in);
    scores.assign(static_cast<size_t>(kv_heads) * n, 0.0f);
    if (!ragged) {
      DAPQ_RETURN_IF_ERROR(cache.GatherLayer(layer, n, &keys, &values));
      in.keys = keys.data();
      in.values = values.data();
      in.kv_head_stride = static_cast<long>(n) * m.head_dim;
      DAPQ_RETURN_IF_ERROR(scorer.Score(in, scores));
    } else {
      // Heads compressed per head before hold different numbers of slots: each is scored over
      // its own.
      for (int h = 0; h < kv_heads; ++h) {
        DAPQ_RETURN_IF_ERROR(ScoreOneHead(scorer, in, cache, h, lengths[h],
                                          std::span(scores).subspan(static_cast<long>(h) * n)));
      }
    }

    SelectionContext sel;
    sel.n = n;
    sel.kv_heads = kv_heads;
    sel.kv_head_begin = ctx.shard.kv_head_begin;
    sel.kv_heads_total = m.n_kv_heads;
    sel.budget = layer_budgets[layer];
    sel.comm = ctx.comm;
    sel.lengths = lengths;
    DAPQ_ASSIGN_OR_RETURN(auto keep, SelectLayer(config, sel, scores));
    for (int h = 0; h < kv_heads; ++h) {
      if (carried_attention != nullptr && in.accumulated_attention != nullptr) {
        (*carried_attention)[static_cast<size_t>(layer) * kv_heads + h] =
            collector.AttentionKept(layer, h, keep[h]);
      }
      DAPQ_RETURN_IF_ERROR(cache.Keep(layer, h, keep[h]));
    }
  }
  return absl::OkStatus();
}

}  // namespace dapq::worker::compress
