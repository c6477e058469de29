// File: eval/runner.h
// The evaluation grid of ../shared/docs/COMPRESSION.md: every method x budget (ratios of the
// prompt and fixed token counts, per layer and KV head, local window included) over many seeded
// needle prompts, plus DapQ's "where vs what" ablation (content x positions at a few budgets).
// Each cell holds mean and 95% confidence half-width (1.96 sd / sqrt(N), sd with N - 1) of the
// four metrics. Method `full` is budget-independent: one cell with an empty budget.
// The DapQ rows and the ablation take their options from EvalOptions::dapq (budget fields are
// replaced per cell); the baselines run with their published defaults
// (CompressionConfig::Resolve). The random method and random content are seeded per prompt.
// Progress (one line per cell, with elapsed time and ETA) goes to `progress` when not null.
// Thread-safety: runs on the calling thread; the engine must not be used concurrently.
#ifndef DAPQ_EVAL_RUNNER_H_
#define DAPQ_EVAL_RUNNER_H_

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "eval/needle_prompts.h"
#include "worker/compress/compression_config.h"
#include "worker/engine.h"
#include "worker/tokenizer.h"

namespace dapq::eval {

struct Budget {
  bool is_ratio = true;
  double value = 0;           // ratio in (0, 1], or tokens
  std::string Label() const;  // "12%" or "32"; "" for no budget (method full)
};

struct EvalOptions {
  std::vector<std::string> methods = {
      "full", "dapq", "snapkv", "h2o", "streaming", "tova", "expected_attention", "random"};
  std::vector<double> ratios = {0.03, 0.06, 0.12, 0.25};
  std::vector<int> tokens = {16, 32, 64, 128};
  int seeds = 64;  // prompts: seeds first_seed .. first_seed + seeds - 1
  uint64_t first_seed = 0;
  int continuation_tokens = 64;
  NeedlePromptOptions prompts;
  // Options of the dapq rows and the ablation; its streaming_chunk applies to every method.
  worker::compress::CompressionConfig dapq;
  bool ablation = true;
  std::vector<Budget> ablation_budgets = {{true, 0.12}, {false, 32}};
  absl::Status Validate() const;
};

struct Stat {
  double mean = 0, ci95 = 0;
};
Stat Summarize(const std::vector<double>& samples);

struct Cell {
  std::string group;  // "grid" or "ablation"
  std::string label;  // method name, or "content=last positions=future"
  Budget budget;      // value 0: none (full)
  Stat log_prob, exact_match, kl, attention, kept_fraction;
  int samples = 0;
};

struct EvalResults {
  std::vector<Cell> cells;
  int seeds = 0;
  Stat prompt_tokens, needle_distance;
  double seconds = 0;
};

absl::StatusOr<EvalResults> RunEval(worker::Engine& engine, const worker::Tokenizer& tokenizer,
                                    const EvalOptions& options, std::FILE* progress);

}  // namespace dapq::eval

#endif  // DAPQ_EVAL_RUNNER_H_
