// File: worker/prompt_codec.h
// Opens what a worker turns prompts with: the tokenizer (llama2.c `tokenizer.bin`, or Hugging
// Face `tokenizer.json` — a file or a directory holding one, by default the model's own
// directory) and the chat template (--chat_template, else the model directory's
// tokenizer_config.json). Errors name the file.
#ifndef DAPQ_WORKER_PROMPT_CODEC_H_
#define DAPQ_WORKER_PROMPT_CODEC_H_

#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "tokenizer/text_tokenizer.h"
#include "worker/chat_template.h"

namespace dapq::worker {

struct LoadedPromptCodec {
  std::unique_ptr<tokenizer::TextTokenizer> tokenizer;  // null: token-id prompts only
  std::optional<ChatTemplate> chat_template;            // nullopt: no chat prompts
  std::string tokenizer_path;                           // what was opened ("" when none)
  std::string describe() const;                         // one line for the worker's log
};

// `tokenizer_path` "" takes `model_path`'s tokenizer.json when it is a directory holding one.
// `chat_template_spec` "" takes the tokenizer directory's tokenizer_config.json template when
// it has one. InvalidArgument when the tokenizer can produce ids outside the model's vocabulary.
absl::StatusOr<LoadedPromptCodec> LoadPromptCodec(const std::string& model_path,
                                                  const std::string& tokenizer_path,
                                                  const std::string& chat_template_spec,
                                                  int vocab_size);

}  // namespace dapq::worker

#endif  // DAPQ_WORKER_PROMPT_CODEC_H_
