// File: worker/chat_template.cc
// ChatTemplate: recognition by markers, the four renderings, tokenizer_config.json reading.
#include "worker/chat_template.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"

namespace dapq::worker {
namespace {

constexpr char kKnown[] = "llama3, llama2, mistral, chatml";

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("chat template: cannot open ", path));
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// tokenizer_config.json writes special tokens as a string or as {"content": "..."}.
std::string TokenText(const nlohmann::json& j, const char* key) {
  if (!j.contains(key)) return "";
  const nlohmann::json& v = j[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) {
    return v["content"].get<std::string>();
  }
  return "";
}

absl::StatusOr<ChatTemplate> FromConfigJson(const std::string& text, const std::string& where,
                                            bool* absent) {
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": not a JSON object"));
  }
  // A list of named templates: the "default" one is the chat template.
  nlohmann::json tmpl = j.value("chat_template", nlohmann::json());
  if (tmpl.is_array()) {
    nlohmann::json chosen;
    for (const nlohmann::json& t : tmpl) {
      if (t.is_object() && t.contains("name") && t["name"] == "default" && t.contains("template")) {
        chosen = t["template"];
      }
    }
    tmpl = chosen;
  }
  if (!tmpl.is_string()) {
    *absent = true;
    return absl::NotFoundError(absl::StrCat(where, ": no chat_template"));
  }
  DAPQ_ASSIGN_OR_RETURN(ChatTemplate t, ChatTemplate::Recognise(tmpl.get<std::string>(), where));
  return t.WithSpecialTokens(TokenText(j, "bos_token"), TokenText(j, "eos_token"));
}

}  // namespace

absl::string_view ChatFamilyName(ChatFamily family) {
  switch (family) {
    case ChatFamily::kLlama3:
      return "llama3";
    case ChatFamily::kLlama2:
      return "llama2";
    case ChatFamily::kMistral:
      return "mistral";
    case ChatFamily::kChatMl:
      return "chatml";
  }
  return "?";
}

absl::StatusOr<ChatTemplate> ChatTemplate::ForFamily(absl::string_view name) {
  if (name == "llama3") return ChatTemplate(ChatFamily::kLlama3, "<|begin_of_text|>", "");
  if (name == "llama2") return ChatTemplate(ChatFamily::kLlama2, "<s>", "</s>");
  if (name == "mistral") return ChatTemplate(ChatFamily::kMistral, "<s>", "</s>");
  if (name == "chatml" || name == "qwen2" || name == "qwen3") {
    return ChatTemplate(ChatFamily::kChatMl, "", "");
  }
  return absl::InvalidArgumentError(
      absl::StrCat("chat template \"", name, "\": unknown family (known: ", kKnown, ")"));
}

absl::StatusOr<ChatTemplate> ChatTemplate::Recognise(absl::string_view jinja,
                                                     absl::string_view where) {
  if (absl::StrContains(jinja, "<|start_header_id|>") && absl::StrContains(jinja, "<|eot_id|>")) {
    return ForFamily("llama3");
  }
  if (absl::StrContains(jinja, "<|im_start|>") && absl::StrContains(jinja, "<|im_end|>")) {
    return ForFamily("chatml");
  }
  if (absl::StrContains(jinja, "[INST]") && absl::StrContains(jinja, "[/INST]")) {
    return ForFamily(absl::StrContains(jinja, "<<SYS>>") ? "llama2" : "mistral");
  }
  return absl::UnimplementedError(absl::StrCat(
      where, ": chat template not recognised (known families: ", kKnown,
      "); pass --chat_template with a family name or a template of one of these families"));
}

absl::StatusOr<ChatTemplate> ChatTemplate::FromSpec(const std::string& spec) {
  if (spec.find('/') == std::string::npos && spec.find('.') == std::string::npos &&
      !std::filesystem::exists(spec)) {
    return ForFamily(spec);
  }
  DAPQ_ASSIGN_OR_RETURN(std::string text, ReadFile(spec));
  if (absl::EndsWith(spec, ".json")) {
    bool absent = false;
    return FromConfigJson(text, spec, &absent);
  }
  return Recognise(text, spec);
}

absl::StatusOr<std::optional<ChatTemplate>> ChatTemplate::FromModelDir(const std::string& dir) {
  const std::string path = (std::filesystem::path(dir) / "tokenizer_config.json").string();
  if (!std::filesystem::exists(path)) return std::optional<ChatTemplate>();
  DAPQ_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  bool absent = false;
  absl::StatusOr<ChatTemplate> t = FromConfigJson(text, path, &absent);
  if (!t.ok()) {
    if (absent) return std::optional<ChatTemplate>();
    return t.status();
  }
  return std::optional<ChatTemplate>(*std::move(t));
}

ChatTemplate ChatTemplate::WithSpecialTokens(std::string bos, std::string eos) const {
  ChatTemplate t = *this;
  if (family_ == ChatFamily::kChatMl) return t;  // ChatML writes no BOS or EOS
  if (!bos.empty()) t.bos_ = std::move(bos);
  if (!eos.empty()) t.eos_ = std::move(eos);
  return t;
}

absl::StatusOr<std::string> ChatTemplate::Render(const dapq::v1::ChatPrompt& chat) const {
  if (chat.messages().empty()) return absl::InvalidArgumentError("prompt.chat.messages is empty");
  std::string out;
  switch (family_) {
    case ChatFamily::kLlama3:
      out = bos_;
      for (const dapq::v1::ChatMessage& m : chat.messages()) {
        absl::StrAppend(&out, "<|start_header_id|>", m.role(), "<|end_header_id|>\n\n",
                        absl::StripAsciiWhitespace(m.content()), "<|eot_id|>");
      }
      absl::StrAppend(&out, "<|start_header_id|>assistant<|end_header_id|>\n\n");
      return out;
    case ChatFamily::kChatMl:
      for (const dapq::v1::ChatMessage& m : chat.messages()) {
        absl::StrAppend(&out, "<|im_start|>", m.role(), "\n", m.content(), "<|im_end|>\n");
      }
      absl::StrAppend(&out, "<|im_start|>assistant\n");
      return out;
    case ChatFamily::kLlama2:
    case ChatFamily::kMistral:
      return RenderInstruct(chat);
  }
  return absl::InternalError("chat template: unknown family");
}

// Llama-2 and Mistral: [INST] turns that alternate user/assistant, starting and ending with the
// user; an optional leading system message.
absl::StatusOr<std::string> ChatTemplate::RenderInstruct(const dapq::v1::ChatPrompt& chat) const {
  int first = 0;
  std::string system;
  if (chat.messages(0).role() == "system") {
    system = chat.messages(0).content();
    first = 1;
  }
  if (first >= chat.messages_size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "prompt.chat.messages: the ", ChatFamilyName(family_), " template needs a user message"));
  }
  std::string out = family_ == ChatFamily::kMistral ? bos_ : "";
  for (int i = first; i < chat.messages_size(); ++i) {
    const dapq::v1::ChatMessage& m = chat.messages(i);
    const bool user_turn = (i - first) % 2 == 0;
    if ((m.role() == "user") != user_turn || m.role() == "system") {
      return absl::InvalidArgumentError(absl::StrCat(
          "prompt.chat.messages[", i, "].role=", m.role(), ": the ", ChatFamilyName(family_),
          " template needs user and assistant turns alternating after an optional system "
          "message"));
    }
    std::string content = m.content();
    if (i == first && first == 1) {
      content = family_ == ChatFamily::kLlama2
                    ? absl::StrCat("<<SYS>>\n", system, "\n<</SYS>>\n\n", content)
                    : absl::StrCat(system, "\n\n", content);
    }
    if (family_ == ChatFamily::kLlama2) {
      if (user_turn) {
        absl::StrAppend(&out, bos_, "[INST] ", absl::StripAsciiWhitespace(content), " [/INST]");
      } else {
        absl::StrAppend(&out, " ", absl::StripAsciiWhitespace(content), " ", eos_);
      }
    } else if (user_turn) {
      absl::StrAppend(&out, "[INST] ", content, " [/INST]");
    } else {
      absl::StrAppend(&out, content, eos_);
    }
  }
  if (chat.messages(chat.messages_size() - 1).role() != "user") {
    return absl::InvalidArgumentError(
        absl::StrCat("prompt.chat.messages: the ", ChatFamilyName(family_),
                     " template needs the last message to be the user's"));
  }
  return out;
}

}  // namespace dapq::worker
