// File: worker/compress/compressor.cc
// Per-layer score -> select -> compact on one rank.
#include "worker/compress/compressor.h"

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "worker/compress/selector.h"

namespace dapq::worker::compress {

absl::Status CompressRank(const CompressionConfig& config, const Scorer& scorer,
                          const QueryCollector& collector, const RankContext& ctx,
                          const std::vector<int>& layer_budgets, KvCache& cache) {
  const ModelConfig& m = *ctx.model;
  const int n = cache.length(0, 0);
  std::vector<float> scores(static_cast<size_t>(ctx.shard.kv_heads) * n);
  std::vector<float> keys, values;  // one layer's K/V gathered from its block tables
  for (int layer = 0; layer < m.n_layers; ++layer) {
    for (int h = 0; h < ctx.shard.kv_heads; ++h) {
      if (cache.length(layer, h) != n) {
        return absl::FailedPreconditionError(absl::StrCat(
            "compression: layer ", layer, " head ", h, " holds ", cache.length(layer, h),
            " slots, expected ", n, " (the cache was already compressed)"));
      }
    }
    ScoringInputs in;
    in.layer = layer;
    in.n = n;
    in.next_position = ctx.next_position;
    in.q_heads = ctx.shard.heads;
    in.kv_heads = ctx.shard.kv_heads;
    in.head_dim = m.head_dim;
    in.q_head_begin = ctx.shard.head_begin;
    in.kv_head_begin = ctx.shard.kv_head_begin;
    cache.GatherLayer(layer, n, &keys, &values);
    in.keys = keys.data();
    in.values = values.data();
    in.kv_head_stride = static_cast<long>(n) * m.head_dim;
    in.inv_freq = ctx.inv_freq;
    in.rope_layout = m.rope.layout;
    collector.Fill(layer, in);
    DAPQ_RETURN_IF_ERROR(scorer.Score(in, scores));

    SelectionContext sel;
    sel.n = n;
    sel.kv_heads = ctx.shard.kv_heads;
    sel.kv_head_begin = ctx.shard.kv_head_begin;
    sel.kv_heads_total = m.n_kv_heads;
    sel.budget = layer_budgets[layer];
    sel.comm = ctx.comm;
    DAPQ_ASSIGN_OR_RETURN(auto keep, SelectLayer(config, sel, scores));
    for (int h = 0; h < ctx.shard.kv_heads; ++h) {
      DAPQ_RETURN_IF_ERROR(cache.Keep(layer, h, keep[h]));
    }
  }
  return absl::OkStatus();
}

}  // namespace dapq::worker::compress
