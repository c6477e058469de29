// File: cli/convert_command.h
// `dapq convert`: load any supported model (llama2.c .bin, HF directory, synthetic spec) and
// write it as a Hugging Face checkpoint directory (config.json + F32 model.safetensors), with
// wq/wk rows permuted to the half-split RoPE layout when the source is interleaved.
#ifndef DAPQ_CLI_CONVERT_COMMAND_H_
#define DAPQ_CLI_CONVERT_COMMAND_H_

#include <string>

#include "absl/status/status.h"

namespace dapq::cli {

struct ConvertCommandOptions {
  std::string model;
  std::string out_dir;
  absl::Status Validate() const;
};

absl::Status RunConvert(const ConvertCommandOptions& options);

}  // namespace dapq::cli

#endif  // DAPQ_CLI_CONVERT_COMMAND_H_
