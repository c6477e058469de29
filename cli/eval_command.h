// File: cli/eval_command.h
// `dapq eval`: the evaluation protocol of ../shared/docs/COMPRESSION.md on a llama2.c model
// (stories260K by default): needle retrieval, output fidelity and attention fidelity for every
// method x budget over seeded needle prompts, plus DapQ's content x positions ablation
// (eval/). Writes results.md, results.tsv, gnuplot data, plots.gp and PNGs to --out;
// progress goes to stderr. The compression flags (cli/compression_flags.h) set the options of
// the dapq rows and the ablation; --budget or --budget_ratio restricts the grid to that budget.
#ifndef DAPQ_CLI_EVAL_COMMAND_H_
#define DAPQ_CLI_EVAL_COMMAND_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "worker/compress/compression_config.h"

namespace dapq::cli {

struct EvalCommandOptions {
  std::string model = "../shared/models/stories260K.bin";
  std::string tokenizer = "../shared/models/tok512.bin";
  std::string out = "bench/results/eval";
  int seeds = 64;
  uint64_t first_seed = 0;
  std::vector<std::string> methods;  // empty: every method
  int continuation = 64;             // tokens of the output-fidelity continuation
  bool quick = false;                // a tiny grid (tests): 2 prompts, budgets 12% and 32
  bool ablation = true;
  bool plots = true;  // run gnuplot
  int tp = 1;
  std::string weights_dtype = "fp32";  // fp32 | bf16 linear layers (the reference uses them too)
  std::string kv_dtype = "fp32";       // fp32 | bf16 | fp16 KV cache (the reference's too)
  worker::compress::CompressionConfig dapq;  // from the compression flags (method ignored)
  std::string command;                       // quoted in results.md
  absl::Status Validate() const;
};

absl::Status RunEval(const EvalCommandOptions& options);

}  // namespace dapq::cli

#endif  // DAPQ_CLI_EVAL_COMMAND_H_
