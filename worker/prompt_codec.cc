// File: worker/prompt_codec.cc
// LoadPromptCodec: tokenizer kind by file, default paths, chat template lookup.
#include "worker/prompt_codec.h"

#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "tokenizer/hf_tokenizer.h"
#include "worker/tokenizer.h"

namespace dapq::worker {
namespace fs = std::filesystem;

std::string LoadedPromptCodec::describe() const {
  return absl::StrCat("tokenizer ", tokenizer ? tokenizer_path : "(none: token ids only)",
                      ", chat template ",
                      chat_template ? ChatFamilyName(chat_template->family()) : "(none)");
}

absl::StatusOr<LoadedPromptCodec> LoadPromptCodec(const std::string& model_path,
                                                  const std::string& tokenizer_path,
                                                  const std::string& chat_template_spec,
                                                  int vocab_size) {
  LoadedPromptCodec codec;
  std::string path = tokenizer_path;
  std::error_code ec;
  if (path.empty() && !model_path.empty() && fs::is_directory(model_path, ec) &&
      fs::exists(fs::path(model_path) / "tokenizer.json", ec)) {
    path = model_path;
  }
  std::string hf_dir;  // where tokenizer_config.json may live
  if (!path.empty()) {
    const bool hf = fs::is_directory(path, ec) || absl::EndsWith(path, ".json");
    if (hf) {
      DAPQ_ASSIGN_OR_RETURN(codec.tokenizer, tokenizer::HfTokenizer::Load(path));
      hf_dir = fs::is_directory(path, ec) ? path : fs::path(path).parent_path().string();
    } else {
      DAPQ_ASSIGN_OR_RETURN(Tokenizer t, Tokenizer::Load(path, vocab_size));
      codec.tokenizer = std::make_unique<Tokenizer>(std::move(t));
    }
    if (codec.tokenizer->vocab_size() > vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("tokenizer ", path, ": ", codec.tokenizer->vocab_size(),
                       " token ids, more than the model's vocabulary of ", vocab_size));
    }
    codec.tokenizer_path = path;
  }
  if (!chat_template_spec.empty()) {
    DAPQ_ASSIGN_OR_RETURN(ChatTemplate t, ChatTemplate::FromSpec(chat_template_spec));
    codec.chat_template = std::move(t);
  } else if (!hf_dir.empty()) {
    DAPQ_ASSIGN_OR_RETURN(codec.chat_template, ChatTemplate::FromModelDir(hf_dir));
  }
  return codec;
}

}  // namespace dapq::worker
