// File: bench/device_engine_bench.cc
// dapq_device_engine_bench: the whole engine (worker::Engine) on one device — a GPU in CUDA
// builds (`--device cuda:0`, the default), or the CPU (`--device cpu`, for a smoke run) — on
// issue #13's shapes: a 32-layer synthetic Llama-3-8B in bf16 (weights and KV), tp 1.
//   prefill  tokens/s of one Engine::Step holding B prompts of L tokens each (B = --batches,
//            L = --prompt_lengths): every prompt's K/V appended, the last token's logits out;
//   decode   tokens/s of Engine::Step with B sequences (after prompts of --decode_prompt
//            tokens), one token each, greedy; one untimed step first.
// Each figure is the best of --repeats runs. Markdown goes to --out (or stdout), progress to
// stderr; the rows under "## Issue #13 figures" are what scripts/gpu_check.sh copies into its
// summary, to set beside PyTorch's on the same machine (bench/peers/torch_bench.py --device cuda).
// Exit codes: 0 done, 1 an error during the run, 2 bad flags or no usable device.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "bench/bench_util.h"
#include "common/status_macros.h"
#include "kernels/device.h"
#include "worker/engine.h"
#include "worker/model_loader.h"

namespace dapq::bench {
namespace {

struct Options {
  std::string device = "cuda:0";
  std::string model = "synthetic:llama3-8b";
  std::string weights_dtype = "bf16";
  std::string kv_dtype = "bf16";
  std::vector<int> prompt_lengths = {512, 2048};
  std::vector<int> batches = {1, 32};
  int decode_prompt = 512;
  int decode_steps = 16;
  int repeats = 2;
  std::string out;
  std::string gpu_name;
};

void Progress(const std::string& line) {
  static const auto start = std::chrono::steady_clock::now();
  std::fprintf(stderr, "[device_engine_bench %7.1fs] %s\n", SecondsSince(start), line.c_str());
}

std::vector<int> Tokens(int n, int vocab, uint64_t seed) {
  std::vector<int> t(n);
  for (int i = 0; i < n; ++i) t[i] = static_cast<int>(Mix(seed * 1000003 + i) % vocab);
  return t;
}

int ArgMax(const float* row, int n) {
  return static_cast<int>(std::max_element(row, row + n) - row);
}

// Seconds of one Step prefilling `batch` fresh prompts of `length` tokens.
absl::StatusOr<double> PrefillStep(worker::Engine& engine, int batch, int length) {
  const int vocab = engine.config().vocab_size;
  std::vector<std::unique_ptr<worker::Sequence>> seqs;
  std::vector<std::vector<int>> prompts;
  std::vector<worker::StepEntry> entries;
  for (int b = 0; b < batch; ++b) {
    seqs.push_back(engine.NewSequence());
    prompts.push_back(Tokens(length, vocab, 11 + b));
  }
  for (int b = 0; b < batch; ++b) entries.push_back({seqs[b].get(), prompts[b]});
  std::vector<float> logits;
  const auto t0 = std::chrono::steady_clock::now();
  DAPQ_RETURN_IF_ERROR(engine.Step(entries, &logits));  // ends with the logits on the host
  return SecondsSince(t0);
}

// Seconds per decode step of `batch` sequences after `prompt` tokens each (mean of `steps`).
absl::StatusOr<double> DecodeSteps(worker::Engine& engine, int batch, int prompt, int steps) {
  const int vocab = engine.config().vocab_size;
  std::vector<std::unique_ptr<worker::Sequence>> seqs;
  std::vector<int> next(batch);
  for (int b = 0; b < batch; ++b) {
    seqs.push_back(engine.NewSequence());
    std::vector<float> logits;
    DAPQ_RETURN_IF_ERROR(engine.Prefill(*seqs.back(), Tokens(prompt, vocab, 29 + b), &logits));
    next[b] = ArgMax(logits.data(), vocab);
  }
  double timed = 0;
  std::vector<float> logits;
  for (int i = 0; i <= steps; ++i) {
    std::vector<worker::StepEntry> entries;
    for (int b = 0; b < batch; ++b) entries.push_back({seqs[b].get(), std::span(&next[b], 1)});
    const auto t0 = std::chrono::steady_clock::now();
    DAPQ_RETURN_IF_ERROR(engine.Step(entries, &logits));
    if (i > 0) timed += SecondsSince(t0);
    for (int b = 0; b < batch; ++b)
      next[b] = ArgMax(&logits[static_cast<size_t>(b) * vocab], vocab);
  }
  return timed / steps;
}

absl::Status Run(const Options& opt, std::FILE* out) {
  DAPQ_ASSIGN_OR_RETURN(kernels::Device device, kernels::ParseDevice(opt.device));
  // The device first: a machine without it fails in a second, not after building 16 GB.
  DAPQ_RETURN_IF_ERROR(kernels::ExecutionContext::Create(device).status());
  Progress(absl::StrCat("building ", opt.model, " (", opt.weights_dtype, ")"));
  DAPQ_ASSIGN_OR_RETURN(worker::ModelWeights w, worker::LoadModelAs(opt.model, opt.weights_dtype));
  auto model = std::make_shared<const worker::ModelWeights>(std::move(w));
  const worker::ModelConfig& c = model->config;
  worker::EngineOptions o;
  o.device = device;
  DAPQ_ASSIGN_OR_RETURN(o.kv_dtype, worker::ParseKvDtype(opt.kv_dtype));
  o.prefix_cache = false;
  int longest = 0, most = 0;
  for (int l : opt.prompt_lengths) longest = std::max(longest, l);
  for (int b : opt.batches) most = std::max(most, b);
  o.prefill_chunk = longest;
  // Enough blocks for the largest prefill and decode run, whole: one block per 16 slots of each
  // (layer, KV head) of each sequence.
  const long per_slot_blocks = static_cast<long>(c.n_layers) * c.n_kv_heads;
  const long tokens =
      static_cast<long>(most) * (std::max(longest, opt.decode_prompt + opt.decode_steps + 2) + 16);
  o.kv_max_blocks = per_slot_blocks * (tokens / o.kv_tokens_per_block + most) * 5 / 4;
  Progress(absl::StrCat("engine on ", opt.device, ", KV pool of ", o.kv_max_blocks, " blocks"));
  DAPQ_ASSIGN_OR_RETURN(auto engine, worker::Engine::Create(model, o));
  DAPQ_RETURN_IF_ERROR(PrefillStep(*engine, 1, 64).status());  // warm-up

  std::fprintf(out, "# Engine on %s%s: %s, weights %s, KV %s, tp 1\n\n", opt.device.c_str(),
               opt.gpu_name.empty() ? "" : absl::StrCat(" (", opt.gpu_name, ")").c_str(),
               c.name.c_str(), opt.weights_dtype.c_str(), opt.kv_dtype.c_str());
  std::fprintf(out,
               "## Prefill (one Engine::Step of B prompts, best of %d)\n\n"
               "| batch | prompt tokens | seconds | tok/s |\n|---|---|---|---|\n",
               opt.repeats);
  std::vector<std::string> figures;
  for (int batch : opt.batches) {
    for (int length : opt.prompt_lengths) {
      Progress(absl::StrCat("prefill batch ", batch, " x ", length));
      double best = 0;
      for (int r = 0; r < opt.repeats; ++r) {
        DAPQ_ASSIGN_OR_RETURN(double s, PrefillStep(*engine, batch, length));
        best = r == 0 ? s : std::min(best, s);
      }
      const double tok_s = static_cast<double>(batch) * length / best;
      std::fprintf(out, "| %d | %d | %.3f | %.0f |\n", batch, length, best, tok_s);
      std::fflush(out);
      figures.push_back(absl::StrCat("| prefill tok/s, batch ", batch, ", ", length, " tokens | ",
                                     static_cast<long>(tok_s), " |"));
    }
  }
  std::fprintf(out,
               "\n## Decode (Engine::Step, one token per sequence, after %d-token prompts)\n\n"
               "| batch | ms/step | tok/s |\n|---|---|---|\n",
               opt.decode_prompt);
  for (int batch : opt.batches) {
    Progress(absl::StrCat("decode batch ", batch));
    double best = 0;
    for (int r = 0; r < opt.repeats; ++r) {
      DAPQ_ASSIGN_OR_RETURN(double s,
                            DecodeSteps(*engine, batch, opt.decode_prompt, opt.decode_steps));
      best = r == 0 ? s : std::min(best, s);
    }
    std::fprintf(out, "| %d | %.2f | %.1f |\n", batch, 1e3 * best, batch / best);
    std::fflush(out);
    figures.push_back(absl::StrCat("| decode tok/s, batch ", batch, ", ", opt.decode_prompt,
                                   "-token context | ", static_cast<long>(batch / best), " |"));
  }
  std::fprintf(out, "\n## Issue #13 figures\n\n| figure | value |\n|---|---|\n");
  for (const std::string& f : figures) std::fprintf(out, "%s\n", f.c_str());
  std::fflush(out);
  return absl::OkStatus();
}

}  // namespace
}  // namespace dapq::bench

int main(int argc, char** argv) {
  dapq::bench::Options opt;
  CLI::App app{"dapq_device_engine_bench: engine prefill and decode tokens/s on one device"};
  app.add_option("--device", opt.device, "cuda:N or cpu")->capture_default_str();
  app.add_option("--model", opt.model, "model spec (synthetic:<shape>[-<N>l], HF dir, .bin)")
      ->capture_default_str();
  app.add_option("--weights_dtype", opt.weights_dtype, "fp32 | bf16")->capture_default_str();
  app.add_option("--kv_dtype", opt.kv_dtype, "fp32 | bf16 | fp16")->capture_default_str();
  app.add_option("--prompt_lengths", opt.prompt_lengths, "prefill prompt lengths")
      ->capture_default_str();
  app.add_option("--batches", opt.batches, "sequences per step")->capture_default_str();
  app.add_option("--decode_prompt", opt.decode_prompt, "prompt tokens before decoding")
      ->capture_default_str();
  app.add_option("--decode_steps", opt.decode_steps, "timed decode steps")->capture_default_str();
  app.add_option("--repeats", opt.repeats, "runs per figure (best kept)")->capture_default_str();
  app.add_option("--out", opt.out, "Markdown file (default: stdout)");
  app.add_option("--gpu_name", opt.gpu_name, "the card's name for the header");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }
  std::FILE* out = stdout;
  if (!opt.out.empty() && (out = std::fopen(opt.out.c_str(), "w")) == nullptr) {
    std::fprintf(stderr, "dapq_device_engine_bench: cannot write %s\n", opt.out.c_str());
    return 2;
  }
  const absl::Status s = dapq::bench::Run(opt, out);
  if (out != stdout) std::fclose(out);
  if (!s.ok()) {
    std::fprintf(stderr, "dapq_device_engine_bench: %s\n", s.ToString().c_str());
    // No usable device (or none built in) is exit 2, as gpu_check.sh expects of a GPU bench.
    const bool no_device =
        absl::IsFailedPrecondition(s) || absl::IsUnimplemented(s) || absl::IsInvalidArgument(s);
    return no_device ? 2 : 1;
  }
  return 0;
}
