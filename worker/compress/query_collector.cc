// File: worker/compress/query_collector.cc
// Collection of prompt queries and statistics during prefill.
#include "worker/compress/query_collector.h"

#include <algorithm>

#include "common/status_macros.h"
#include "worker/compress/internal/query_stats.h"

namespace dapq::worker::compress {

QueryCollector::QueryCollector(const ScorerNeeds& needs, int n_layers, int q_heads, int kv_heads,
                               int head_dim)
    : needs_(needs),
      q_heads_(q_heads),
      kv_heads_(kv_heads),
      head_dim_(head_dim),
      layers_(n_layers) {
  if (needs_.query_statistics) {
    for (Layer& l : layers_) {
      l.q_sum.assign(static_cast<size_t>(q_heads) * head_dim, 0.0);
      l.q_outer.assign(static_cast<size_t>(q_heads) * head_dim * head_dim, 0.0);
    }
  }
}

absl::Status QueryCollector::OnQueries(int layer, int m, const int32_t* positions,
                                       const float* q_pre, const float* q_post,
                                       std::span<const int32_t> kv_lens, const KvCache& cache) {
  Layer& l = layers_[layer];
  const long row = static_cast<long>(q_heads_) * head_dim_;
  if (capturing_pseudo_) {
    l.pseudo_q_post.insert(l.pseudo_q_post.end(), q_post, q_post + m * row);
    return absl::OkStatus();
  }
  if (needs_.window_rows > 0) {
    const int take = std::min(m, needs_.window_rows);
    const long from = static_cast<long>(m - take);
    l.q_pre.insert(l.q_pre.end(), q_pre + from * row, q_pre + m * row);
    l.q_post.insert(l.q_post.end(), q_post + from * row, q_post + m * row);
    l.positions.insert(l.positions.end(), positions + from, positions + m);
    const long excess = static_cast<long>(l.positions.size()) - needs_.window_rows;
    if (excess > 0) {
      l.q_pre.erase(l.q_pre.begin(), l.q_pre.begin() + excess * row);
      l.q_post.erase(l.q_post.begin(), l.q_post.begin() + excess * row);
      l.positions.erase(l.positions.begin(), l.positions.begin() + excess);
    }
  }
  if (needs_.accumulated_attention) {
    // Every KV head has the same length during an uncompressed prefill.
    const int n = kv_lens[0];
    std::vector<float> grown(static_cast<size_t>(kv_heads_) * n, 0.0f);
    for (int h = 0; h < kv_heads_; ++h) {
      std::copy(l.attention.begin() + static_cast<long>(h) * l.attention_n,
                l.attention.begin() + static_cast<long>(h + 1) * l.attention_n,
                grown.begin() + static_cast<long>(h) * n);
    }
    l.attention.swap(grown);
    l.attention_n = n;
    std::vector<float> keys;  // the layer's keys gathered from its block tables
    cache.GatherLayer(layer, n, &keys, nullptr);
    DAPQ_RETURN_IF_ERROR(internal::AccumulateCausalAttention(
        q_post, m, q_heads_, kv_heads_, head_dim_, keys.data(), static_cast<long>(n) * head_dim_, n,
        l.attention.data()));
  }
  if (needs_.query_statistics) {
    internal::AccumulateQueryMoments(q_pre, m, q_heads_, head_dim_, l.q_sum.data(),
                                     l.q_outer.data());
    l.q_count += m;
  }
  return absl::OkStatus();
}

void QueryCollector::Fill(int layer, ScoringInputs& in) const {
  const Layer& l = layers_[layer];
  if (needs_.window_rows > 0) {
    in.window_q_pre = l.q_pre.data();
    in.window_q_post = l.q_post.data();
    in.window_positions = l.positions.data();
    in.window_rows = static_cast<int>(l.positions.size());
  }
  if (!l.pseudo_q_post.empty()) {
    in.pseudo_q_post = l.pseudo_q_post.data();
    in.pseudo_rows =
        static_cast<int>(l.pseudo_q_post.size() / (static_cast<size_t>(q_heads_) * head_dim_));
  }
  if (needs_.accumulated_attention) in.accumulated_attention = l.attention.data();
  if (needs_.query_statistics) {
    in.query_sum = l.q_sum.data();
    in.query_outer = l.q_outer.data();
    in.query_count = l.q_count;
  }
}

}  // namespace dapq::worker::compress
