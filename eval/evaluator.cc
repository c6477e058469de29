// File: eval/evaluator.cc
// Full-cache references and per-configuration scoring of one needle prompt.
#include "eval/evaluator.h"

#include <memory>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace dapq::eval {
namespace {

std::vector<int> CueAndNeedle(const NeedlePrompt& p) {
  std::vector<int> fed = p.cue;
  fed.insert(fed.end(), p.needle.begin(), p.needle.end());
  return fed;
}

absl::StatusOr<NeedleScore> ScoreNeedleOn(worker::Engine& engine, worker::Sequence seq,
                                          const NeedlePrompt& p) {
  std::vector<float> logits;
  DAPQ_RETURN_IF_ERROR(engine.PrefillAllLogits(seq, CueAndNeedle(p), &logits));
  return ScoreNeedle(logits, engine.config().vocab_size, static_cast<int>(p.cue.size()), p.needle);
}

}  // namespace

absl::StatusOr<Reference> BuildReference(worker::Engine& engine, const NeedlePrompt& prompt,
                                         int continuation_tokens) {
  const worker::ModelConfig& c = engine.config();
  const long n = static_cast<long>(prompt.prompt.size());
  if (continuation_tokens < 1 || n + continuation_tokens > c.max_seq_len ||
      n + static_cast<long>(prompt.cue.size() + prompt.needle.size()) > c.max_seq_len) {
    return absl::OutOfRangeError(absl::StrCat("eval: prompt of ", n, " tokens + continuation ",
                                              continuation_tokens, " or cue + needle exceed ",
                                              c.max_seq_len));
  }
  if (prompt.cue.empty()) return absl::InvalidArgumentError("eval: the needle needs a cue");
  Reference ref;
  ref.prompt = prompt;
  std::unique_ptr<worker::Sequence> full = engine.NewSequence();
  std::vector<float> logits;
  DAPQ_RETURN_IF_ERROR(engine.Prefill(*full, prompt.prompt, &logits));
  DAPQ_ASSIGN_OR_RETURN(ref.needle, ScoreNeedleOn(engine, *full, prompt));

  // Greedy continuation, decoded token by token on a copy of the full cache.
  {
    worker::Sequence gen = *full;
    ref.continuation.push_back(Argmax(logits));
    while (static_cast<int>(ref.continuation.size()) < continuation_tokens) {
      const int token = ref.continuation.back();
      const int32_t pos = gen.next_position();
      DAPQ_RETURN_IF_ERROR(engine.Forward(gen, std::span<const int>(&token, 1),
                                          std::span<const int32_t>(&pos, 1), &logits));
      ref.continuation.push_back(Argmax(logits));
    }
  }
  {
    worker::Sequence forced = *full;
    DAPQ_RETURN_IF_ERROR(
        engine.PrefillAllLogits(forced, ref.continuation, &ref.continuation_logits));
  }
  // The continuation's queries, observed on the full cache.
  ref.attention = AttentionProfile(c.n_layers, c.n_heads, static_cast<int>(n));
  const int tp = engine.options().tp, group = c.n_heads / c.n_kv_heads;
  std::vector<std::unique_ptr<AttentionRecorder>> recorders;
  std::vector<worker::QueryObserver*> observers;
  for (int r = 0; r < tp; ++r) {
    recorders.push_back(
        std::make_unique<AttentionRecorder>(&ref.attention, r * c.n_heads / tp, group));
    observers.push_back(recorders.back().get());
  }
  std::vector<int32_t> positions(ref.continuation.size());
  for (size_t i = 0; i < positions.size(); ++i) positions[i] = static_cast<int32_t>(n + i);
  DAPQ_RETURN_IF_ERROR(
      engine.ForwardObserved(*full, ref.continuation, positions, nullptr, observers));
  return ref;
}

absl::StatusOr<SampleMetrics> EvaluateConfig(worker::Engine& engine, const Reference& reference,
                                             const worker::compress::CompressionConfig& config) {
  const worker::ModelConfig& c = engine.config();
  const NeedlePrompt& p = reference.prompt;
  std::unique_ptr<worker::Sequence> seq = engine.NewSequence();
  std::vector<float> logits;
  DAPQ_ASSIGN_OR_RETURN(const worker::compress::CompressionStats stats,
                        engine.PrefillCompressed(*seq, p.prompt, config, &logits));
  SampleMetrics m;
  m.kept_fraction = stats.kept_fraction();

  const int tp = engine.options().tp, kv_per_rank = c.n_kv_heads / tp;
  const worker::Sequence& s = *seq;
  m.attention_mass =
      KeptAttentionMass(reference.attention, c.n_heads / c.n_kv_heads, [&](int layer, int kv_head) {
        return s.cache(kv_head / kv_per_rank).positions(layer, kv_head % kv_per_rank);
      });

  DAPQ_ASSIGN_OR_RETURN(const NeedleScore needle, ScoreNeedleOn(engine, *seq, p));
  m.needle_log_prob = needle.log_prob;
  m.exact_match = needle.exact_match;

  DAPQ_RETURN_IF_ERROR(engine.PrefillAllLogits(*seq, reference.continuation, &logits));
  m.kl = MeanKl(reference.continuation_logits, logits, c.vocab_size);
  return m;
}

}  // namespace dapq::eval
