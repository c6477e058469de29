// File: worker/chat_template.h
// Chat templates of the common model families. No C++ Jinja engine is packaged, so a template
// is recognised rather than executed: the Jinja text of tokenizer_config.json's `chat_template`
// (or of a file given with --chat_template) is matched to one of the families below by its
// markers, and rendered by code written for that family. An unrecognised template is an error
// naming the known families, never a guess.
//   llama3   <|start_header_id|>role<|end_header_id|>\n\n content <|eot_id|> (BOS first)
//   llama2   <s>[INST] <<SYS>>\nsystem\n<</SYS>>\n\nuser [/INST] assistant </s>
//   mistral  <s>[INST] user [/INST]assistant</s> (a system message opens the first user turn)
//   chatml   <|im_start|>role\ncontent<|im_end|>\n (ChatML, Qwen2, Qwen3)
// Every rendering ends with the opening of the assistant's turn (add_generation_prompt).
// Thread-safety: immutable after construction.
#ifndef DAPQ_WORKER_CHAT_TEMPLATE_H_
#define DAPQ_WORKER_CHAT_TEMPLATE_H_

#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "dapq/v1/inference.pb.h"

namespace dapq::worker {

enum class ChatFamily { kLlama3, kLlama2, kMistral, kChatMl };

absl::string_view ChatFamilyName(ChatFamily family);

class ChatTemplate {
 public:
  // A family by name ("llama3", "llama2", "mistral", "chatml") with its usual BOS/EOS strings.
  static absl::StatusOr<ChatTemplate> ForFamily(absl::string_view name);
  // The family of a Jinja template text; `where` names its origin in errors.
  static absl::StatusOr<ChatTemplate> Recognise(absl::string_view jinja, absl::string_view where);
  // --chat_template: a family name, a file holding a Jinja template, or a tokenizer_config.json.
  static absl::StatusOr<ChatTemplate> FromSpec(const std::string& spec);
  // The template of a model directory's tokenizer_config.json (`chat_template`, with its
  // bos_token and eos_token); nullopt when the file or the field is absent.
  static absl::StatusOr<std::optional<ChatTemplate>> FromModelDir(const std::string& dir);

  // The conversation as prompt text (special tokens written out, BOS included where the family
  // puts it), ending where the assistant's turn begins. InvalidArgument naming the message for
  // an order the family cannot express (llama2 and mistral alternate user/assistant).
  absl::StatusOr<std::string> Render(const dapq::v1::ChatPrompt& chat) const;

  // The same family with the model's BOS/EOS strings (an empty one keeps the family's).
  ChatTemplate WithSpecialTokens(std::string bos, std::string eos) const;

  ChatFamily family() const { return family_; }

 private:
  ChatTemplate(ChatFamily family, std::string bos, std::string eos)
      : family_(family), bos_(std::move(bos)), eos_(std::move(eos)) {}
  absl::StatusOr<std::string> RenderInstruct(const dapq::v1::ChatPrompt& chat) const;

  ChatFamily family_;
  std::string bos_, eos_;
};

}  // namespace dapq::worker

#endif  // DAPQ_WORKER_CHAT_TEMPLATE_H_
