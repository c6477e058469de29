// File: worker/compress/scorer.h
// Scorers turn what a rank observed during prefill (its query heads' queries, its KV heads'
// keys and values) into per-KV-head token importance for one layer: scores[h * n + j] for local
// KV head h and prompt slot j, higher = keep. Implementations: DapQ (pseudo queries at future
// positions), SnapKV, H2O, StreamingLLM, TOVA, ExpectedAttention, Random (COMPRESSION.md).
// Scores of different ranks are summed exactly downstream (selector.h), so a scorer must depend
// only on its heads' data and on global head indices, never on the TP degree.
// Thread-safety: Score is const and reentrant.
#ifndef DAPQ_WORKER_COMPRESS_SCORER_H_
#define DAPQ_WORKER_COMPRESS_SCORER_H_

#include <cstdint>
#include <memory>
#include <span>

#include "absl/status/statusor.h"
#include "kernels/rope.h"
#include "worker/compress/compression_config.h"

namespace dapq::worker::compress {

// Everything a scorer may read for one (rank, layer). Queries are [rows, q_heads, head_dim].
struct ScoringInputs {
  int layer = 0;
  int n = 0;                                    // prompt slots (keys) per KV head
  int next_position = 0;                        // where the first generated token goes
  int q_heads = 0, kv_heads = 0, head_dim = 0;  // this rank's heads
  int q_head_begin = 0, kv_head_begin = 0;      // global index of the first local head
  const float* keys = nullptr;                  // head h: keys + h * kv_head_stride, [n, head_dim]
  const float* values = nullptr;
  long kv_head_stride = 0;
  // The last `window_rows` prompt tokens' queries (before and after RoPE) and their positions.
  const float* window_q_pre = nullptr;
  const float* window_q_post = nullptr;
  const int32_t* window_positions = nullptr;
  int window_rows = 0;
  // DapQ forward mode: post-RoPE queries of the placeholder tokens at the future positions.
  const float* pseudo_q_post = nullptr;
  int pseudo_rows = 0;
  // H2O: attention of every prompt query accumulated per key, [kv_heads, n] (summed over each KV
  // head's query group, not averaged).
  const float* accumulated_attention = nullptr;
  // ExpectedAttention: pre-RoPE query statistics per local query head over every prompt token:
  // sum [q_heads, d] and sum of outer products [q_heads, d, d].
  const double* query_sum = nullptr;
  const double* query_outer = nullptr;
  long query_count = 0;
  // RoPE of the model.
  const float* inv_freq = nullptr;
  kernels::RopeLayout rope_layout = kernels::RopeLayout::kInterleaved;
};

// What a scorer needs the prefill to collect.
struct ScorerNeeds {
  int window_rows = 0;                 // last prompt queries kept (pre and post RoPE)
  bool accumulated_attention = false;  // H2O
  bool query_statistics = false;       // ExpectedAttention
  int pseudo_tokens = 0;               // DapQ forward mode: placeholder tokens to run
};

class Scorer {
 public:
  virtual ~Scorer() = default;
  virtual ScorerNeeds Needs() const = 0;
  // scores: [kv_heads * n], overwritten.
  virtual absl::Status Score(const ScoringInputs& in, std::span<float> scores) const = 0;
};

// `config` must be resolved (CompressionConfig::Resolve). Unimplemented for Method::kFull.
absl::StatusOr<std::unique_ptr<Scorer>> MakeScorer(const CompressionConfig& config);

}  // namespace dapq::worker::compress

#endif  // DAPQ_WORKER_COMPRESS_SCORER_H_
