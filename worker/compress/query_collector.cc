// File: worker/compress/query_collector.cc
// Collection of prompt queries and statistics during prefill.
#include "worker/compress/query_collector.h"

#include <algorithm>

#include "common/status_macros.h"
#include "worker/compress/internal/query_stats.h"
#include "worker/compress/internal/score_util.h"

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
  if (needs_.accumulated_attention)
    DAPQ_RETURN_IF_ERROR(AccumulateAttention(l, layer, m, q_post, kv_lens, cache));
  if (needs_.query_statistics) {
    internal::AccumulateQueryMoments(q_pre, m, q_heads_, head_dim_, l.q_sum.data(),
                                     l.q_outer.data());
    l.q_count += m;
  }
  return absl::OkStatus();
}

void QueryCollector::StartChunk() {
  for (Layer& l : layers_) {
    l.pseudo_q_post.clear();
    l.attention.clear();
    l.attention_n = 0;
    l.attention_len.clear();
  }
}

void QueryCollector::SeedAttention(int layer, int head, std::span<const float> carried) {
  Layer& l = layers_[layer];
  if (l.attention_len.empty()) l.attention_len.assign(kv_heads_, 0);
  const int n = std::max<int>(l.attention_n, carried.size());
  Regrow(l, n);
  std::copy(carried.begin(), carried.end(), l.attention.begin() + static_cast<long>(head) * n);
  l.attention_len[head] = static_cast<int32_t>(carried.size());
}

void QueryCollector::Regrow(Layer& l, int n) {
  if (n == l.attention_n) return;
  std::vector<float> grown(static_cast<size_t>(kv_heads_) * n, 0.0f);
  for (int h = 0; h < kv_heads_ && l.attention_n > 0; ++h) {
    const long from = static_cast<long>(h) * l.attention_n;
    std::copy(l.attention.begin() + from, l.attention.begin() + from + l.attention_len[h],
              grown.begin() + static_cast<long>(h) * n);
  }
  l.attention.swap(grown);
  l.attention_n = n;
}

absl::Status QueryCollector::AccumulateAttention(Layer& l, int layer, int m, const float* q_post,
                                                 std::span<const int32_t> kv_lens,
                                                 const KvCache& cache) {
  if (l.attention_len.empty()) l.attention_len.assign(kv_heads_, 0);
  const int n = *std::max_element(kv_lens.begin(), kv_lens.end());
  Regrow(l, n);
  std::copy(kv_lens.begin(), kv_lens.end(), l.attention_len.begin());
  const bool ragged = std::any_of(kv_lens.begin(), kv_lens.end(), [&](int x) { return x != n; });
  std::vector<float> keys;  // keys gathered from the block tables
  if (!ragged) {
    DAPQ_RETURN_IF_ERROR(cache.GatherLayer(layer, n, &keys, nullptr));
    return internal::AccumulateCausalAttention(q_post, m, q_heads_, kv_heads_, head_dim_,
                                               keys.data(), static_cast<long>(n) * head_dim_, n,
                                               l.attention.data());
  }
  // A cache compressed per head before: every KV head over its own slots, with its query group.
  const int group = q_heads_ / kv_heads_;
  for (int h = 0; h < kv_heads_; ++h) {
    const int len = kv_lens[h];
    const std::vector<float> q =
        internal::SliceQueryHeads(q_post, m, q_heads_, head_dim_, h * group, group);
    keys.resize(static_cast<size_t>(len) * head_dim_);
    DAPQ_RETURN_IF_ERROR(cache.Gather(layer, h, 0, len, keys.data(), nullptr));
    DAPQ_RETURN_IF_ERROR(internal::AccumulateCausalAttention(
        q.data(), m, group, 1, head_dim_, keys.data(), static_cast<long>(len) * head_dim_, len,
        l.attention.data() + static_cast<long>(h) * n));
  }
  return absl::OkStatus();
}

std::vector<float> QueryCollector::AttentionKept(int layer, int head,
                                                 std::span<const int32_t> keep) const {
  const Layer& l = layers_[layer];
  std::vector<float> out;
  out.reserve(keep.size());
  for (int32_t j : keep) out.push_back(l.attention[static_cast<long>(head) * l.attention_n + j]);
  return out;
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
