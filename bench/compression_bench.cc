// File: bench/compression_bench.cc
// What compression costs and saves, on a synthetic model with Llama-3-8B layer shapes:
//  1. DapQ's overhead at the end of prefill, as a percentage of the prefill itself, at prompt
//     lengths 2K/8K/32K: the same prompt prefilled with method full and with DapQ (the
//     difference is query collection + scoring + selection + compaction), and the scoring
//     phase alone (CompressionStats::seconds).
//  2. Decode step time with the compressed cache vs the full cache at 8K/32K, budgets 3%/12%:
//     end to end (one engine step: all layers, classifier) and the attention kernel alone
//     (AttentionDecode over a full vs compacted cache of the same shapes), since with two
//     layers and a 128K vocabulary the weights dominate an end-to-end step.
// Usage: dapq_compression_bench [--model synthetic:llama3-8b-1l] [--lengths 2048,8192,32768]
// Prints Markdown tables to stdout, progress to stderr.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <random>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "bench/bench_util.h"
#include "kernels/attention.h"
#include "worker/engine.h"
#include "worker/model_loader.h"

namespace dapq::bench {
namespace {

using worker::compress::CompressionConfig;
using worker::compress::Method;

std::vector<int> RandomPrompt(int n, int vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int> p(n);
  p[0] = 1;
  for (int i = 1; i < n; ++i) p[i] = static_cast<int>(rng() % static_cast<uint64_t>(vocab));
  return p;
}

CompressionConfig Dapq(double ratio) {
  CompressionConfig c;
  c.method = Method::kDapq;
  c.budget_ratio = ratio;
  return c;
}

// Mean seconds of `steps` decode steps, after one untimed warm-up step.
double DecodeStepSeconds(worker::Engine& e, worker::Sequence& seq, int steps) {
  std::vector<float> logits;
  const int token = 1;
  double total = 0;
  for (int i = 0; i <= steps; ++i) {
    const int32_t pos = seq.next_position();
    const auto t0 = std::chrono::steady_clock::now();
    if (!e.Forward(seq, std::span(&token, 1), std::span(&pos, 1), &logits).ok()) return -1;
    if (i > 0) total += SecondsSince(t0);
  }
  return total / steps;
}

// AttentionDecode over `len` slots of every KV head: seconds per call (best of 5).
double AttentionSeconds(int len, int q_heads, int kv_heads, int d) {
  std::vector<float> k = RandomVector(static_cast<size_t>(kv_heads) * len * d, 1);
  std::vector<float> v = RandomVector(k.size(), 2);
  std::vector<float> q = RandomVector(static_cast<size_t>(q_heads) * d, 3);
  std::vector<float> out(q.size());
  kernels::AttentionParams p;
  p.q_tokens = 1;
  p.q_heads = q_heads;
  p.kv_heads = kv_heads;
  p.head_dim = d;
  p.q = q.data();
  p.q_stride = q_heads * d;
  p.k = k.data();
  p.v = v.data();
  p.kv_head_stride = static_cast<long>(len) * d;
  p.kv_len = len;
  p.out = out.data();
  p.out_stride = q_heads * d;
  double best = 1e30;
  for (int rep = 0; rep < 5; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    if (!kernels::AttentionDecode(p).ok()) return -1;
    best = std::min(best, SecondsSince(t0));
  }
  return best;
}

int Run(const std::string& model_spec, const std::vector<int>& lengths,
        const std::vector<int>& decode_lengths, int decode_steps) {
  std::fprintf(stderr, "loading %s ...\n", model_spec.c_str());
  auto w = worker::LoadModel(model_spec);
  if (!w.ok()) {
    std::fprintf(stderr, "error: %s\n", w.status().ToString().c_str());
    return 1;
  }
  auto model = std::make_shared<const worker::ModelWeights>(*std::move(w));
  const worker::ModelConfig& c = model->config;
  worker::EngineOptions eo;
  eo.prefill_chunk = 2048;
  eo.prefix_cache = false;  // repeated prompts are measured, not reused
  auto engine_or = worker::Engine::Create(model, eo);
  if (!engine_or.ok()) return 1;
  worker::Engine& engine = **engine_or;

  // One pass per prompt length: the full prefill and the DapQ 3% prefill are timed for the
  // overhead table and, at the decode lengths, reused (plus a 12% prefill) for the decode table,
  // so each long prompt is prefilled at most three times.
  std::string overhead =
      "| prompt | prefill (full) s | prefill + DapQ 3% s | overhead | scoring phase s | "
      "scoring / prefill |\n|---|---|---|---|---|---|\n";
  std::string decode =
      absl::StrCat("| prompt | cache | KV slots / head | engine step ms | attention kernel ms (",
                   c.n_layers, " layers) |\n|---|---|---|---|---|\n");
  auto decode_row = [&](int n, const char* label, worker::Sequence& seq) {
    const int slots = seq.cached_tokens();
    const double step = DecodeStepSeconds(engine, seq, decode_steps);
    const double att = AttentionSeconds(slots, c.n_heads, c.n_kv_heads, c.head_dim) * c.n_layers;
    absl::StrAppendFormat(&decode, "| %d | %s | %d | %.2f | %.3f |\n", n, label, slots, step * 1e3,
                          att * 1e3);
  };
  for (int n : lengths) {
    const bool with_decode =
        std::find(decode_lengths.begin(), decode_lengths.end(), n) != decode_lengths.end();
    const std::vector<int> prompt = RandomPrompt(n, c.vocab_size, n);
    std::fprintf(stderr, "prefill %d tokens (full) ...\n", n);
    auto full = engine.NewSequence();
    auto t0 = std::chrono::steady_clock::now();
    if (!engine.Prefill(*full, prompt, nullptr).ok()) return 1;
    const double t_full = SecondsSince(t0);
    if (with_decode) decode_row(n, "full", *full);
    full.reset();
    std::fprintf(stderr, "  %.2f s; prefill %d tokens + DapQ 3%% ...\n", t_full, n);
    auto comp = engine.NewSequence();
    t0 = std::chrono::steady_clock::now();
    auto stats = engine.PrefillCompressed(*comp, prompt, Dapq(0.03), nullptr);
    const double t_comp = SecondsSince(t0);
    if (!stats.ok()) return 1;
    absl::StrAppendFormat(&overhead, "| %d | %.3f | %.3f | %+.2f%% | %.4f | %.3f%% |\n", n, t_full,
                          t_comp, 100.0 * (t_comp - t_full) / t_full, stats->seconds,
                          100.0 * stats->seconds / t_full);
    std::fprintf(stderr, "%s", overhead.c_str());
    if (with_decode) {
      decode_row(n, "DapQ 3%", *comp);
      comp.reset();
      std::fprintf(stderr, "prefill %d tokens + DapQ 12%% ...\n", n);
      auto twelve = engine.NewSequence();
      if (!engine.PrefillCompressed(*twelve, prompt, Dapq(0.12), nullptr).ok()) return 1;
      decode_row(n, "DapQ 12%", *twelve);
      std::fprintf(stderr, "%s", decode.c_str());
    }
  }
  std::printf("## DapQ overhead at the end of prefill (%s, TP=1)\n\n%s\n", c.name.c_str(),
              overhead.c_str());
  std::printf("## Decode step with the compressed vs the full cache\n\n%s", decode.c_str());
  return 0;
}

}  // namespace
}  // namespace dapq::bench

int main(int argc, char** argv) {
  CLI::App app{"DapQ compression cost and decode savings"};
  std::string model = "synthetic:llama3-8b-1l";
  std::vector<int> lengths = {2048, 8192, 32768};
  std::vector<int> decode_lengths = {8192, 32768};
  int steps = 8;
  app.add_option("--model", model)->capture_default_str();
  app.add_option("--lengths", lengths, "prefill lengths")->delimiter(',');
  app.add_option("--decode_lengths", decode_lengths, "decode cache lengths")->delimiter(',');
  app.add_option("--decode_steps", steps)->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  return dapq::bench::Run(model, lengths, decode_lengths, steps);
}
