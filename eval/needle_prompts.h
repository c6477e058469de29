// File: eval/needle_prompts.h
// A seeded generator of needle-retrieval prompts for the stories260K evaluation
// (../shared/docs/COMPRESSION.md, "Evaluation protocol"). Every prompt is a TinyStories-style
// story in three parts, then a cue and the needle:
//
//   opener     "Once upon a time, there was a big park."
//   preamble   neutral sentences (kPreamble: no character, no pronoun) until the text holds
//              P tokens, P uniform in [min_preamble, max_preamble]
//   needle     "There was a little <boy|girl> named X. X had a <object>."
//   filler     sentences about the character (kFiller: "He liked to play in the park.", with
//              he/she and his/her matching X) until the needle's last mention "X" lies D prompt
//              tokens from the end, D uniform in [min_distance, max_distance]
//   ---------- end of the prompt: everything above is prefilled (and compressed) ----------
//   cue        template 0: " One day,"
//              template 1: " One day, <he|she> said, \"My name is"
//   needle     " X": the tokens whose teacher-forced log-probability is scored
//
// The cue is fed after compression, as a question is in question-agnostic evaluation (kvpress):
// the logits of the last prompt token come from the full cache, so a cue inside the prompt would
// leave the needle's first token unaffected by any compression.
// Names are the ones the full-cache model retrieves for each template (checked with
// `dapq eval`: the "full" row's exact match), all of two or more tok512 tokens so the needle is
// more than its first piece: template 0 Tom Ted Sam Lucy Max Mia Molly Mark, template 1 Max Mia
// Mark Molly Sam. Only the needle sentence names anyone.
// Distance: D = prompt tokens from the first token of the last mention of X to the end of the
// prompt, that token included; it lies in [min_distance, max_distance].
// The same (seed, options, tokenizer) always gives the same prompt (std::mt19937_64 with plain
// modulo draws, no implementation-defined distributions). Thread-safe (pure function).
#ifndef DAPQ_EVAL_NEEDLE_PROMPTS_H_
#define DAPQ_EVAL_NEEDLE_PROMPTS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/tokenizer.h"

namespace dapq::eval {

struct NeedlePromptOptions {
  int min_distance = 50;  // tokens from the needle's last mention to the end of the prompt
  int max_distance = 150;
  int min_preamble = 100;  // tokens before the needle sentence (BOS and opener included)
  int max_preamble = 200;
  int max_total_tokens = 400;  // prompt + cue + needle
  absl::Status Validate() const;
};

struct NeedlePrompt {
  uint64_t seed = 0;
  int template_id = 0;      // 0 or 1 (cue form)
  std::string name;         // "Tom"
  std::string text;         // the prompt text (no BOS)
  std::vector<int> prompt;  // BOS + text: prefilled and compressed
  std::vector<int> cue;     // teacher-forced after compression
  std::vector<int> needle;  // " <name>": scored
  int needle_position = 0;  // index in `prompt` of the first token of the last mention of X
  int distance() const { return static_cast<int>(prompt.size()) - needle_position; }
};

// InvalidArgument for bad options; Internal when the tokenizer splits the text so that the
// prompt, cue and needle tokens do not concatenate (the generator then has a bug).
absl::StatusOr<NeedlePrompt> MakeNeedlePrompt(const worker::Tokenizer& tokenizer, uint64_t seed,
                                              const NeedlePromptOptions& options = {});

}  // namespace dapq::eval

#endif  // DAPQ_EVAL_NEEDLE_PROMPTS_H_
