// File: cli/convert_command.h
// `dapq convert`: load any supported model (llama2.c .bin, HF directory, synthetic spec) and
// write it as a Hugging Face checkpoint directory (config.json + F32 model.safetensors), with
// wq/wk rows permuted to the half-split RoPE layout when the source is interleaved; with
// --tokenizer, a llama2.c tokenizer.bin becomes the directory's tokenizer.json.
#ifndef DAPQ_CLI_CONVERT_COMMAND_H_
#define DAPQ_CLI_CONVERT_COMMAND_H_

#include <string>

#include "absl/status/status.h"

namespace dapq::cli {

struct ConvertCommandOptions {
  std::string model;
  std::string out_dir;
  // A llama2.c tokenizer.bin written beside the weights as tokenizer.json and
  // tokenizer_config.json (SentencePiece-style BPE that encodes like llama2.c); "" = none.
  std::string tokenizer;
  absl::Status Validate() const;
};

absl::Status RunConvert(const ConvertCommandOptions& options);

}  // namespace dapq::cli

#endif  // DAPQ_CLI_CONVERT_COMMAND_H_
