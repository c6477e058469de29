// File: cli/eval_command.cc
// Implementation of `dapq eval`.
#include "cli/eval_command.h"

#include <chrono>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "cli/command.h"
#include "cli/compression_flags.h"
#include "common/status_macros.h"
#include "eval/report.h"
#include "eval/runner.h"
#include "worker/engine.h"
#include "worker/llama2c_loader.h"
#include "worker/tokenizer.h"

namespace dapq::cli {
namespace {

namespace ev = eval;

// This process's command line (Linux /proc), shell-quoted where needed; "dapq eval" otherwise.
std::string CommandLine() {
  std::ifstream f("/proc/self/cmdline", std::ios::binary);
  const std::string raw((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  std::vector<std::string> args;
  for (size_t begin = 0; begin < raw.size();) {
    const size_t end = raw.find('\0', begin);
    std::string a = raw.substr(begin, end == std::string::npos ? std::string::npos : end - begin);
    if (a.empty() || a.find_first_of(" \t'\"$*?;&|<>()\\") != std::string::npos) {
      a = absl::StrCat("'", a, "'");
    }
    args.push_back(a);
    if (end == std::string::npos) break;
    begin = end + 1;
  }
  return args.empty() ? "dapq eval" : absl::StrJoin(args, " ");
}

}  // namespace

absl::Status EvalCommandOptions::Validate() const {
  if (seeds < 1)
    return absl::InvalidArgumentError(absl::StrCat("--seeds=", seeds, " must be >= 1"));
  if (continuation < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--continuation=", continuation, " must be >= 1"));
  }
  if (tp < 1) return absl::InvalidArgumentError(absl::StrCat("--tp=", tp, " must be >= 1"));
  if (out.empty()) return absl::InvalidArgumentError("--out is required");
  return absl::OkStatus();
}

absl::Status RunEval(const EvalCommandOptions& o) {
  DAPQ_RETURN_IF_ERROR(o.Validate());
  DAPQ_ASSIGN_OR_RETURN(worker::ModelWeights weights, worker::LoadLlama2cModel(o.model));
  DAPQ_ASSIGN_OR_RETURN(const kernels::DType dtype, worker::ParseWeightsDtype(o.weights_dtype));
  DAPQ_RETURN_IF_ERROR(worker::ConvertLinearWeights(weights, dtype));
  auto model = std::make_shared<const worker::ModelWeights>(std::move(weights));
  DAPQ_ASSIGN_OR_RETURN(const worker::Tokenizer tokenizer,
                        worker::Tokenizer::Load(o.tokenizer, model->config.vocab_size));
  worker::EngineOptions engine_options;
  engine_options.tp = o.tp;
  // Every configuration prefills the same prompts: each must compute them itself, so that the
  // reference and the compressed runs differ only by compression.
  engine_options.prefix_cache = false;
  DAPQ_ASSIGN_OR_RETURN(engine_options.kv_dtype, worker::ParseKvDtype(o.kv_dtype));
  DAPQ_ASSIGN_OR_RETURN(auto engine, worker::Engine::Create(model, engine_options));

  ev::EvalOptions eo;
  if (!o.methods.empty()) eo.methods = o.methods;
  eo.seeds = o.seeds;
  eo.first_seed = o.first_seed;
  eo.continuation_tokens = o.continuation;
  eo.ablation = o.ablation;
  eo.dapq = o.dapq;
  eo.dapq.method = worker::compress::Method::kDapq;
  const bool one_budget = o.dapq.budget_tokens > 0 || o.dapq.budget_ratio > 0;
  if (o.quick) {
    eo.seeds = std::min(eo.seeds, 2);
    eo.continuation_tokens = std::min(eo.continuation_tokens, 8);
    eo.ratios = {0.12};
    eo.tokens = {32};
    eo.ablation_budgets = {{true, 0.12}};
  }
  if (one_budget) {  // --budget / --budget_ratio: that budget only
    eo.ratios.clear();
    eo.tokens.clear();
    if (o.dapq.budget_ratio > 0) eo.ratios.push_back(o.dapq.budget_ratio);
    if (o.dapq.budget_tokens > 0) eo.tokens.push_back(o.dapq.budget_tokens);
    eo.ablation_budgets = {o.dapq.budget_ratio > 0
                               ? ev::Budget{true, o.dapq.budget_ratio}
                               : ev::Budget{false, static_cast<double>(o.dapq.budget_tokens)}};
  }
  eo.dapq.budget_tokens = 0;
  eo.dapq.budget_ratio = 0;
  std::fprintf(stderr, "model: %s\n", model->config.DebugString().c_str());
  DAPQ_ASSIGN_OR_RETURN(const ev::EvalResults results, ev::RunEval(*engine, tokenizer, eo, stderr));
  ev::ReportOptions report;
  report.out_dir = o.out;
  report.command = o.command.empty() ? CommandLine() : o.command;
  report.model = model->config.DebugString();
  report.render = o.plots;
  DAPQ_ASSIGN_OR_RETURN(const ev::ReportFiles files, ev::WriteReport(results, eo, report));
  for (const std::string& path : files.written) std::printf("wrote %s\n", path.c_str());
  std::fprintf(stderr, "eval: %.1f s; %s\n", results.seconds, files.render_note.c_str());
  return absl::OkStatus();
}

void AddEvalCommand(CLI::App& app, CommandRunner& runner) {
  auto opts = std::make_shared<EvalCommandOptions>();
  auto compression = std::make_shared<CompressionFlags>();
  CLI::App* cmd = app.add_subcommand(
      "eval", "evaluate KV-cache compression (needle, KL, attention) on stories260K");
  cmd->add_option("--model", opts->model, "llama2.c checkpoint")->capture_default_str();
  cmd->add_option("--tokenizer", opts->tokenizer, "llama2.c tokenizer .bin")->capture_default_str();
  cmd->add_option("--out", opts->out, "output directory")->capture_default_str();
  cmd->add_option("--seeds", opts->seeds, "needle prompts (seeds first_seed, first_seed+1, ...)")
      ->capture_default_str();
  cmd->add_option("--first_seed", opts->first_seed, "seed of the first prompt")
      ->capture_default_str();
  cmd->add_option("--methods", opts->methods,
                  "methods to evaluate (default: full dapq snapkv h2o streaming tova "
                  "expected_attention random)")
      ->delimiter(',');
  cmd->add_option("--continuation", opts->continuation,
                  "tokens of the greedy continuation scored by KL and attention")
      ->capture_default_str();
  cmd->add_flag("--quick", opts->quick, "tiny grid for tests: 2 prompts, budgets 12% and 32");
  cmd->add_flag("--ablation,!--no_ablation", opts->ablation,
                "DapQ content x positions ablation (default on)");
  cmd->add_flag("--plots,!--no_plots", opts->plots, "render PNGs with gnuplot (default on)");
  cmd->add_option("--tp", opts->tp, "tensor-parallel ranks (threads)")->capture_default_str();
  cmd->add_option("--weights_dtype", opts->weights_dtype,
                  "fp32 | bf16 linear-layer weights (the full-cache reference uses them too)")
      ->capture_default_str();
  cmd->add_option("--kv_dtype", opts->kv_dtype,
                  "fp32 | bf16 | fp16 KV cache (the full-cache reference uses it too)")
      ->capture_default_str();
  compression->Register(cmd, /*with_method=*/false);
  runner.Add(cmd, [opts, compression]() -> absl::Status {
    DAPQ_ASSIGN_OR_RETURN(opts->dapq, compression->ToConfig());
    return RunEval(*opts);
  });
}

}  // namespace dapq::cli
