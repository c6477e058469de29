// File: eval/metrics.h
// The evaluation metrics of ../shared/docs/COMPRESSION.md ("Evaluation protocol"), as pure
// functions of logits and attention, all computed in double:
// - needle retrieval: the teacher-forced log-probability of the needle tokens after the cue, and
//   greedy exact match (every needle token is the argmax of its row: teacher forcing a correct
//   prefix is exactly what greedy decoding would have fed);
// - output fidelity: KL(full || compressed) of next-token distributions, averaged over steps;
// - attention fidelity: the share of the true decoding queries' attention that falls on the
//   prompt positions a compressed cache kept. Definition: for each layer, query head and
//   continuation step, the softmax of q_post . k_j / sqrt(head_dim) over the full cache's PROMPT
//   keys only (j < n; renormalised, so the continuation's own keys are left out), and the mass
//   on the kept prompt positions of that head's KV head; mean over layers, heads and steps.
//   The full cache scores exactly 1.
// AttentionRecorder is the QueryObserver that records that attention while the continuation is
// teacher-forced on the full cache (one recorder per rank; each writes only its own heads, so
// the ranks' threads never touch the same element).
#ifndef DAPQ_EVAL_METRICS_H_
#define DAPQ_EVAL_METRICS_H_

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "worker/kv_cache.h"
#include "worker/model_runner.h"

namespace dapq::eval {

// log softmax(logits)[token], in double.
double LogProb(std::span<const float> logits, int token);
// Index of the largest logit (the lowest index among ties).
int Argmax(std::span<const float> logits);

struct NeedleScore {
  double log_prob = 0;  // sum over the needle tokens
  bool exact_match = false;
};
// `logits`: [(cue_tokens + needle.size()) * vocab], the rows of teacher-forcing cue + needle
// after the prompt; row i predicts fed token i + 1, so needle token t is scored by row
// cue_tokens - 1 + t. REQUIRES: cue_tokens >= 1.
NeedleScore ScoreNeedle(std::span<const float> logits, int vocab, int cue_tokens,
                        std::span<const int> needle);

// Mean over rows of KL(softmax(ref) || softmax(logits)); both [rows * vocab]. Identical inputs
// give exactly 0.
double MeanKl(std::span<const float> ref, std::span<const float> logits, int vocab);

// Attention of the continuation's queries over the n prompt positions, summed over steps.
struct AttentionProfile {
  AttentionProfile() = default;
  AttentionProfile(int layers, int heads, int prompt_tokens);
  int n_layers = 0, n_heads = 0, n_prompt = 0;
  int steps = 0;             // queries recorded per (layer, head)
  std::vector<double> mass;  // [layer][query head][prompt position]
  double* row(int layer, int head) {
    return mass.data() + (static_cast<long>(layer) * n_heads + head) * n_prompt;
  }
  const double* row(int layer, int head) const {
    return mass.data() + (static_cast<long>(layer) * n_heads + head) * n_prompt;
  }
};

class AttentionRecorder final : public worker::QueryObserver {
 public:
  // Records query heads [head_begin, head_begin + local heads) of `profile` (which must outlive
  // the recorder); `group` = query heads per KV head. The cache must hold the full prompt.
  AttentionRecorder(AttentionProfile* profile, int head_begin, int group)
      : profile_(profile), head_begin_(head_begin), group_(group) {}

  absl::Status OnQueries(int layer, int m, const int32_t* positions, const float* q_pre,
                         const float* q_post, std::span<const int32_t> kv_lens,
                         const worker::KvCache& cache) override;

 private:
  AttentionProfile* profile_;
  int head_begin_, group_;
  std::vector<double> scores_;
};

// Kept prompt positions of (layer, global KV head); positions >= n_prompt are ignored.
using KeptPositions = std::function<std::span<const int32_t>(int layer, int kv_head)>;
// Mean over layers and query heads of (recorded mass on kept positions) / steps.
double KeptAttentionMass(const AttentionProfile& profile, int group, const KeptPositions& kept);

}  // namespace dapq::eval

#endif  // DAPQ_EVAL_METRICS_H_
