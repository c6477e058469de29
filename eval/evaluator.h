// File: eval/evaluator.h
// Drives the engine for one needle prompt: BuildReference runs the full cache once (needle
// score, a greedy continuation, its teacher-forced logits, and the attention of its queries over
// the prompt); EvaluateConfig compresses the same prompt with one CompressionConfig and scores
// it against that reference (metrics.h).
// Order of work on a compressed sequence: PrefillCompressed(prompt); the kept positions are read;
// a copy teacher-forces cue + needle; the sequence itself teacher-forces the continuation.
// The continuation's first token is the argmax of the last prompt token's logits, which every
// method computes from the full cache; the T rows scored are those after feeding each of its T
// tokens, so every scored distribution sees the compressed cache.
// The engine should run with EngineOptions::prefix_cache off (dapq eval does): every
// configuration then prefills the prompt itself, and the runs differ only by compression.
// Thread-safety: uses the engine, which serves one call at a time.
#ifndef DAPQ_EVAL_EVALUATOR_H_
#define DAPQ_EVAL_EVALUATOR_H_

#include <vector>

#include "absl/status/statusor.h"
#include "eval/metrics.h"
#include "eval/needle_prompts.h"
#include "worker/compress/compression_config.h"
#include "worker/engine.h"

namespace dapq::eval {

struct Reference {
  NeedlePrompt prompt;
  NeedleScore needle;                      // full cache
  std::vector<int> continuation;           // greedy tokens generated with the full cache
  std::vector<float> continuation_logits;  // [T * vocab], teacher-forced on the full cache
  AttentionProfile attention;              // the continuation's queries over the prompt
};

// OutOfRange when prompt + continuation or prompt + cue + needle exceed the context.
absl::StatusOr<Reference> BuildReference(worker::Engine& engine, const NeedlePrompt& prompt,
                                         int continuation_tokens);

struct SampleMetrics {
  double needle_log_prob = 0;
  bool exact_match = false;
  double kl = 0;              // mean over the continuation's rows
  double attention_mass = 0;  // kept share of the full cache's decoding attention
  double kept_fraction = 1;   // KV slots kept over slots before compression
};

absl::StatusOr<SampleMetrics> EvaluateConfig(worker::Engine& engine, const Reference& reference,
                                             const worker::compress::CompressionConfig& config);

}  // namespace dapq::eval

#endif  // DAPQ_EVAL_EVALUATOR_H_
