// File: worker/compress/query_collector.h
// A QueryObserver that collects, during one rank's prefill, what its scorer needs
// (ScorerNeeds): the last prompt queries before and after RoPE, H2O's accumulated attention of
// every query (computed chunk by chunk, causal, tiled), ExpectedAttention's query statistics,
// and in DapQ forward mode the queries of the placeholder tokens.
// Thread-safety: used by one rank thread.
#ifndef DAPQ_WORKER_COMPRESS_QUERY_COLLECTOR_H_
#define DAPQ_WORKER_COMPRESS_QUERY_COLLECTOR_H_

#include <span>
#include <vector>

#include "worker/compress/scorer.h"
#include "worker/model_runner.h"

namespace dapq::worker::compress {

class QueryCollector final : public QueryObserver {
 public:
  QueryCollector(const ScorerNeeds& needs, int n_layers, int q_heads, int kv_heads, int head_dim);

  // While set, observed queries are stored as DapQ forward-mode pseudo queries instead.
  void set_capturing_pseudo(bool on) { capturing_pseudo_ = on; }

  absl::Status OnQueries(int layer, int m, const int32_t* positions, const float* q_pre,
                         const float* q_post, std::span<const int32_t> kv_lens,
                         const KvCache& cache) override;

  // A streamed prompt's next chunk: forgets the placeholder queries and H2O's attention (the
  // window queries are replaced by the chunk's own; query statistics run on over every chunk).
  void StartChunk();
  // H2O across the chunks of a streamed prompt: starts the accumulated attention of (layer,
  // head) from the scores its retained slots carried out of the previous chunk's compression.
  // Before the chunk's first OnQueries.
  void SeedAttention(int layer, int head, std::span<const float> carried);
  // The accumulated attention of (layer, head)'s slots `keep` (the scores they carry on).
  std::vector<float> AttentionKept(int layer, int head, std::span<const int32_t> keep) const;

  // Fills the collected fields of `in` for `layer`. The accumulated attention is laid out
  // [kv_heads, longest head's slots], each head's row valid for its own length.
  void Fill(int layer, ScoringInputs& in) const;

 private:
  struct Layer {
    std::vector<float> q_pre, q_post;  // [rows, q_heads, head_dim], the last window_rows
    std::vector<int32_t> positions;
    std::vector<float> pseudo_q_post;    // forward mode
    std::vector<float> attention;        // H2O: [kv_heads, attention_n]
    int attention_n = 0;                 // the longest head's slots
    std::vector<int32_t> attention_len;  // [kv_heads] valid slots of each row
    std::vector<double> q_sum, q_outer;  // ExpectedAttention
    long q_count = 0;
  };

  // Widens every row of l.attention to n slots, keeping each head's valid prefix.
  void Regrow(Layer& l, int n);
  // H2O: adds the attention of m new queries (causal; the cache already holds their keys) to
  // every key of each KV head.
  absl::Status AccumulateAttention(Layer& l, int layer, int m, const float* q_post,
                                   std::span<const int32_t> kv_lens, const KvCache& cache);

  ScorerNeeds needs_;
  int q_heads_, kv_heads_, head_dim_;
  bool capturing_pseudo_ = false;
  std::vector<Layer> layers_;
};

}  // namespace dapq::worker::compress

#endif  // DAPQ_WORKER_COMPRESS_QUERY_COLLECTOR_H_
