// File: cli/convert_command.cc
// Implementation of `dapq convert`.
#include "cli/convert_command.h"

#include <cstdio>
#include <fstream>
#include <memory>
#include <optional>

#include "absl/strings/str_cat.h"
#include "cli/command.h"
#include "common/status_macros.h"
#include "tokenizer/llama2c_tokenizer_json.h"
#include "worker/hf_converter.h"
#include "worker/model_loader.h"
#include "worker/tokenizer.h"

namespace dapq::cli {

absl::Status ConvertCommandOptions::Validate() const {
  if (model.empty()) return absl::InvalidArgumentError("--model is required");
  if (out_dir.empty()) return absl::InvalidArgumentError("--out is required");
  return absl::OkStatus();
}

absl::Status RunConvert(const ConvertCommandOptions& o) {
  DAPQ_RETURN_IF_ERROR(o.Validate());
  DAPQ_ASSIGN_OR_RETURN(worker::ModelWeights weights, worker::LoadModel(o.model));
  std::fprintf(stderr, "converting %s\n", weights.config.DebugString().c_str());
  // The tokenizer is read before anything is written, so a bad one leaves no directory behind.
  std::optional<tokenizer::Llama2cTokenizerFiles> tokenizer_files;
  if (!o.tokenizer.empty()) {
    DAPQ_ASSIGN_OR_RETURN(const worker::Tokenizer t,
                          worker::Tokenizer::Load(o.tokenizer, weights.config.vocab_size));
    std::vector<std::string> pieces;
    std::vector<float> scores;
    for (int i = 0; i < t.vocab_size(); ++i) {
      pieces.push_back(t.piece(i));
      scores.push_back(t.score(i));
    }
    DAPQ_ASSIGN_OR_RETURN(tokenizer_files, tokenizer::Llama2cToTokenizerJson(pieces, scores));
  }
  DAPQ_RETURN_IF_ERROR(worker::ConvertToHf(weights, o.out_dir));
  std::fprintf(stderr, "wrote %s/config.json and %s/model.safetensors\n", o.out_dir.c_str(),
               o.out_dir.c_str());
  if (tokenizer_files) {
    for (const auto& [name, text] :
         {std::pair<std::string, const std::string*>{"tokenizer.json",
                                                     &tokenizer_files->tokenizer_json},
          {"tokenizer_config.json", &tokenizer_files->tokenizer_config_json}}) {
      const std::string path = o.out_dir + "/" + name;
      std::ofstream out(path, std::ios::binary | std::ios::trunc);
      out << *text;
      out.close();
      if (!out) return absl::InternalError(absl::StrCat("convert: could not write ", path));
    }
    std::fprintf(stderr, "wrote %s/tokenizer.json and tokenizer_config.json from %s\n",
                 o.out_dir.c_str(), o.tokenizer.c_str());
  }
  return absl::OkStatus();
}

void AddConvertCommand(CLI::App& app, CommandRunner& runner) {
  auto opts = std::make_shared<ConvertCommandOptions>();
  CLI::App* cmd =
      app.add_subcommand("convert", "write a model as a Hugging Face directory (safetensors)");
  cmd->add_option("--model", opts->model, "source model (llama2.c .bin, HF dir, synthetic:...)")
      ->required();
  cmd->add_option("--out", opts->out_dir, "output directory")->required();
  cmd->add_option("--tokenizer", opts->tokenizer,
                  "llama2.c tokenizer.bin to write as the directory's tokenizer.json");
  runner.Add(cmd, [opts] { return RunConvert(*opts); });
}

}  // namespace dapq::cli
