// File: bench/longctx_bench.cc
// A million-token prompt on one process (issue #14): streaming compression keeps the KV cache at
// budget + chunk slots per (layer, KV head) whatever the prompt's length, and each chunk attends
// to at most that many keys, so prefill time grows linearly. The prompt (seeded token ids) is fed
// in 64K-token pieces, each a PrefillCompressed on the same sequence: the pieces after the first
// compress the retained slots together with their own chunks, exactly as one streamed prompt
// does (every chunk after the budget is reached is followed by an eviction). Then `decode`
// greedy tokens. `--mode exact` runs the prompt uncompressed for comparison (memory O(n),
// attention O(n^2)).
// Progress per piece on stderr (wall and CPU seconds: on a shared machine the CPU time is the
// steadier measure of the work); the last line of stdout:
//   tokens=N peak_kv_bytes=B peak_rss_bytes=R seconds=S
// Usage: dapq_longctx_bench [--model synthetic:tiny-long] [--tokens 1048576] [--budget 4096]
//        [--chunk 4096] [--mode streaming|exact] [--decode 64] [--threads 0]
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "worker/engine.h"
#include "worker/model_loader.h"

namespace dapq::bench {
namespace {

// VmHWM of this process (peak resident set), in bytes; 0 if unreadable.
long PeakRssBytes() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stol(line.substr(6)) * 1024;
  }
  return 0;
}

// CPU seconds this process has used (every thread), a steadier measure of work than wall time on
// a shared machine.
double CpuSeconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         1e-6 * static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

double Since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

int Run(int argc, char** argv) {
  CLI::App app{"DapQ Serve long-context benchmark (streaming compression)"};
  std::string model_spec = "synthetic:tiny-long", mode = "streaming";
  int tokens = 1 << 20, budget = 4096, chunk = 4096, decode = 64, threads = 0;
  int piece = 1 << 16;
  app.add_option("--model", model_spec, "model (a synthetic spec or a model path)");
  app.add_option("--tokens", tokens, "prompt tokens")->check(CLI::PositiveNumber);
  app.add_option("--budget", budget, "DapQ budget per (layer, KV head)")
      ->check(CLI::PositiveNumber);
  app.add_option("--chunk", chunk, "streaming chunk")->check(CLI::PositiveNumber);
  app.add_option("--piece", piece, "tokens per timed piece")->check(CLI::PositiveNumber);
  app.add_option("--mode", mode, "streaming|exact")->check(CLI::IsMember({"streaming", "exact"}));
  app.add_option("--decode", decode, "greedy tokens decoded after the prompt");
  app.add_option("--threads", threads, "CPU threads (0: every core)");
  CLI11_PARSE(app, argc, argv);

  absl::StatusOr<worker::ModelWeights> loaded = worker::LoadModel(model_spec);
  if (!loaded.ok()) {
    std::fprintf(stderr, "error: %s\n", loaded.status().ToString().c_str());
    return 1;
  }
  auto model = std::make_shared<const worker::ModelWeights>(*std::move(loaded));
  const worker::ModelConfig& m = model->config;
  worker::EngineOptions options;
  options.prefix_cache = false;
  options.cpu_threads = threads;
  options.prefill_chunk = std::min(chunk, 4096);
  auto engine = worker::Engine::Create(model, options);
  if (!engine.ok()) {
    std::fprintf(stderr, "error: %s\n", engine.status().ToString().c_str());
    return 1;
  }
  worker::compress::CompressionConfig c;
  c.method = worker::compress::Method::kDapq;
  c.budget_tokens = budget;
  c.streaming_chunk = chunk;
  std::vector<int> prompt(tokens);
  prompt[0] = m.bos_token_id;
  for (int i = 1; i < tokens; ++i) prompt[i] = static_cast<int>((i * 7919L + 13) % m.vocab_size);
  const size_t slot_bytes = 2 * kernels::DTypeSize(options.kv_dtype) * m.head_dim;
  std::fprintf(stderr,
               "%s: %d layers, %d KV heads x %d, context %d; %s, %d tokens, budget %d, chunk %d "
               "(KV bytes per token %zu)\n",
               model_spec.c_str(), m.n_layers, m.n_kv_heads, m.head_dim, m.max_seq_len,
               mode.c_str(), tokens, budget, chunk, slot_bytes * m.n_layers * m.n_kv_heads);

  auto seq = (*engine)->NewSequence();
  std::vector<float> logits;
  const auto t0 = std::chrono::steady_clock::now();
  double first_piece = 0, last_piece = 0;
  for (int begin = 0; begin < tokens; begin += piece) {
    const std::span<const int> part(prompt.data() + begin, std::min(piece, tokens - begin));
    const auto tp = std::chrono::steady_clock::now();
    const double cpu0 = CpuSeconds();
    absl::Status s = mode == "exact"
                         ? (*engine)->Prefill(*seq, part, &logits)
                         : (*engine)->PrefillCompressed(*seq, part, c, &logits).status();
    if (!s.ok()) {
      std::fprintf(stderr, "error at token %d: %s\n", begin, s.ToString().c_str());
      return 1;
    }
    const double seconds = Since(tp);
    const double cpu = CpuSeconds() - cpu0;
    if (begin == 0) first_piece = seconds;
    last_piece = seconds;
    const long kv = (*engine)->kv_pool(0).peak_blocks_referenced() *
                    static_cast<long>((*engine)->kv_pool(0).block_bytes());
    std::fprintf(stderr,
                 "  tokens %8d..%8d: %7.2f s (%6.0f tok/s), cpu %7.2f s, cache %d slots, peak KV "
                 "%.1f MiB\n",
                 begin, begin + static_cast<int>(part.size()), seconds, part.size() / seconds, cpu,
                 seq->cached_tokens(), kv / 1048576.0);
  }
  const double prefill_seconds = Since(t0);
  int token = static_cast<int>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  const auto td = std::chrono::steady_clock::now();
  for (int i = 0; i < decode; ++i) {
    const int32_t pos = seq->next_position();
    if (absl::Status s =
            (*engine)->Forward(*seq, std::span(&token, 1), std::span(&pos, 1), &logits);
        !s.ok()) {
      std::fprintf(stderr, "error decoding: %s\n", s.ToString().c_str());
      return 1;
    }
    token = static_cast<int>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  }
  const double decode_seconds = Since(td);
  const long peak_kv = (*engine)->kv_pool(0).peak_blocks_referenced() *
                       static_cast<long>((*engine)->kv_pool(0).block_bytes());
  const double bound =
      1.1 * (budget + chunk) * static_cast<double>(slot_bytes) * m.n_layers * m.n_kv_heads;
  std::fprintf(stderr,
               "prefill %.1f s (first piece %.2f s, last %.2f s: ratio %.2f); decode %d tokens "
               "%.2f s (%.1f tok/s) at position %d; peak KV %ld bytes (streaming bound 1.1 x "
               "(budget + chunk) x KV bytes per token = %.0f)\n",
               prefill_seconds, first_piece, last_piece,
               first_piece > 0 ? last_piece / first_piece : 0.0, decode, decode_seconds,
               decode_seconds > 0 ? decode / decode_seconds : 0.0, seq->next_position(), peak_kv,
               bound);
  std::printf("tokens=%d peak_kv_bytes=%ld peak_rss_bytes=%ld seconds=%.2f\n", tokens, peak_kv,
              PeakRssBytes(), Since(t0));
  return 0;
}

}  // namespace
}  // namespace dapq::bench

int main(int argc, char** argv) { return dapq::bench::Run(argc, argv); }
