// File: cli/convert_command.cc
// Implementation of `dapq convert`.
#include "cli/convert_command.h"

#include <cstdio>
#include <memory>

#include "cli/command.h"
#include "common/status_macros.h"
#include "worker/hf_converter.h"
#include "worker/model_loader.h"

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
  DAPQ_RETURN_IF_ERROR(worker::ConvertToHf(weights, o.out_dir));
  std::fprintf(stderr, "wrote %s/config.json and %s/model.safetensors\n", o.out_dir.c_str(),
               o.out_dir.c_str());
  return absl::OkStatus();
}

void AddConvertCommand(CLI::App& app, CommandRunner& runner) {
  auto opts = std::make_shared<ConvertCommandOptions>();
  CLI::App* cmd =
      app.add_subcommand("convert", "write a model as a Hugging Face directory (safetensors)");
  cmd->add_option("--model", opts->model, "source model (llama2.c .bin, HF dir, synthetic:...)")
      ->required();
  cmd->add_option("--out", opts->out_dir, "output directory")->required();
  runner.Add(cmd, [opts] { return RunConvert(*opts); });
}

}  // namespace dapq::cli
