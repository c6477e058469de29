// File: bench/engine_bench.cc
// dapq_engine_bench: end-to-end prefill and decode throughput of worker::Engine, each figure
// set beside the hardware limit measured in the same process:
//  (a) limits: OpenBLAS sgemm FLOP/s at the prefill GEMM shapes and memory bandwidth, the better
//      of memcpy (a copy of N bytes counts 2 * N) and a read-only sum in four streams per thread
//      (best of several, 1..nproc threads);
//  (b) prefill tokens/s for each prompt length and prefill chunk, and the achieved FLOP/s
//      (linear layers 2 * tokens * params + causal attention + the last token's classifier)
//      as a fraction of the sgemm limit;
//  (c) decode tokens/s after a prompt, and the achieved bandwidth (fp32 weights read per token,
//      classifier included, + the K/V read) as a fraction of that bandwidth, which is measured
//      again right after the decode (the host's bandwidth drifts);
//  (d) the BLAS choice: the same sgemm/sgemv through Debian's netlib reference BLAS, loaded with
//      dlopen, against OpenBLAS.
// Markdown tables go to stdout, progress lines to stderr. Exit code 1 on error, 2 on bad flags.
#include <cblas.h>
#include <dlfcn.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "bench/bench_util.h"
#include "common/status_macros.h"
#include "kernels/convert.h"
#include "kernels/gemm.h"
#include "kernels/ref/bf16_matmul.h"
#include "kernels/ref/small_gemm.h"
#include "worker/engine.h"
#include "worker/model_loader.h"

namespace dapq::bench {
namespace {

using SgemmFn = decltype(&cblas_sgemm);
using SgemvFn = decltype(&cblas_sgemv);

struct Options {
  std::string model = "synthetic:llama3-8b-2l";
  std::string weights_dtype = "fp32";
  std::string kv_dtype = "fp32";
  std::vector<int> prompt_lengths = {512, 2048, 8192};
  std::vector<int> prefill_chunks = {1024, 2048};
  int decode_prompt = 512;
  int decode_steps = 16;
  // Batched decode (Engine::Step): batch sizes, prompt tokens per sequence, timed steps.
  std::vector<int> batches = {1, 4, 16, 64};
  int batch_prompt = 128;
  int batch_steps = 4;
  bool only_batched = false;  // run the batched decode section alone
  std::vector<int> gemm_m = {512, 1024};
  int repeats = 3;
  int memcpy_mib = 256;
  std::string reference_blas = "/usr/lib/x86_64-linux-gnu/blas/libblas.so.3";
  bool reference_all_shapes = false;
  uint64_t seed = 1;
};

// Progress line on stderr, stamped with the seconds since the first call.
void Progress(const std::string& line) {
  static const auto start = std::chrono::steady_clock::now();
  std::fprintf(stderr, "[engine_bench %7.1fs] %s\n", SecondsSince(start), line.c_str());
}

double Giga(double x) { return x / 1e9; }

// ---------------------------------------------------------------------------------------------
// BLAS measurements.

struct GemmShape {
  int m, n, k;
  const char* what;
};

struct GemmResult {
  GemmShape shape;
  double flops_per_s = 0;
  double seconds = 0;  // best single call
};

// The best time of `repeats` timed calls of fn after one untimed call (the one call is timed when
// repeats is 0).
template <typename F>
double BestSeconds(int repeats, F&& fn) {
  double best = 1e30;
  for (int i = 0; i <= repeats; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    const double t = SecondsSince(t0);
    if (i > 0 || repeats == 0) best = std::min(best, t);
  }
  return best;
}

// Best of `repeats` timed calls (after one untimed call) of C[m, n] = A[m, k] . B[n, k]^T, the
// way the engine calls it (row-major, weight transposed).
GemmResult TimeSgemm(SgemmFn sgemm, const GemmShape& s, int repeats, std::vector<float>* c_out) {
  const std::vector<float> a = RandomVector(static_cast<size_t>(s.m) * s.k, 101);
  const std::vector<float> b = RandomVector(static_cast<size_t>(s.n) * s.k, 102, -0.02f, 0.02f);
  std::vector<float> c(static_cast<size_t>(s.m) * s.n);
  GemmResult r{s};
  r.seconds = BestSeconds(repeats, [&] {
    sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, s.m, s.n, s.k, 1.0f, a.data(), s.k, b.data(),
          s.k, 0.0f, c.data(), s.n);
  });
  r.flops_per_s = 2.0 * s.m * s.n * s.k / r.seconds;
  if (c_out != nullptr) *c_out = std::move(c);
  return r;
}

// The same product with the weight in bf16, through the engine's GEMM (kernels/gemm.h: oneDNN's
// bf16 matmul at these m where the build has it, else the weights widened for OpenBLAS).
GemmResult TimeBf16Gemm(const GemmShape& s, int repeats) {
  const std::vector<float> a = RandomVector(static_cast<size_t>(s.m) * s.k, 101);
  const std::vector<float> bf = RandomVector(static_cast<size_t>(s.n) * s.k, 102, -0.02f, 0.02f);
  std::vector<uint16_t> b(bf.size());
  kernels::ConvertFromFloat(bf.data(), kernels::DType::kBF16, b.data(),
                            static_cast<long>(b.size()));
  std::vector<float> c(static_cast<size_t>(s.m) * s.n);
  kernels::GemmParams p{s.m, s.n,  s.k,      a.data(), s.k,  nullptr,
                        s.k, true, c.data(), s.n,      1.0f, 0.0f};
  p.b_dtype = kernels::DType::kBF16;
  p.b_bf16 = b.data();
  GemmResult r{s};
  absl::Status status;
  r.seconds = BestSeconds(repeats, [&] {
    if (status.ok()) status = kernels::Gemm(p);
  });
  if (!status.ok()) return r;  // no rate
  r.flops_per_s = 2.0 * s.m * s.n * s.k / r.seconds;
  return r;
}

// y[n] = W[n, k] . x (the decode GEMV): returns weight bytes read per second, best of repeats.
double TimeSgemv(SgemvFn sgemv, int n, int k, int repeats, std::vector<float>* y_out) {
  const std::vector<float> w = RandomVector(static_cast<size_t>(n) * k, 103, -0.02f, 0.02f);
  const std::vector<float> x = RandomVector(k, 104);
  std::vector<float> y(n);
  const double best = BestSeconds(repeats, [&] {
    sgemv(CblasRowMajor, CblasNoTrans, n, k, 1.0f, w.data(), k, x.data(), 1, 0.0f, y.data(), 1);
  });
  if (y_out != nullptr) *y_out = std::move(y);
  return 4.0 * n * k / best;
}

double MaxRelDiff(const std::vector<float>& a, const std::vector<float>& b) {
  double scale = 0, diff = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    scale = std::max(scale, std::fabs(static_cast<double>(b[i])));
    diff = std::max(diff, std::fabs(static_cast<double>(a[i]) - b[i]));
  }
  return scale > 0 ? diff / scale : diff;
}

// The netlib reference BLAS, opened privately. RTLD_DEEPBIND makes its cblas_sgemm call its own
// sgemm_: with default binding the symbol would resolve to OpenBLAS's sgemm_, already loaded in
// this process, and the "reference" figure would silently be OpenBLAS's.
class ReferenceBlas {
 public:
  static absl::StatusOr<std::unique_ptr<ReferenceBlas>> Open(const std::string& path) {
    // dlopen("") would return the main program, whose cblas_sgemm is OpenBLAS's.
    if (path.empty()) return absl::NotFoundError("no reference BLAS path given");
    void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
    if (handle == nullptr) {
      return absl::NotFoundError(absl::StrCat("dlopen ", path, ": ", dlerror()));
    }
    std::unique_ptr<ReferenceBlas> blas(new ReferenceBlas(handle));
    blas->sgemm_ = reinterpret_cast<SgemmFn>(dlsym(handle, "cblas_sgemm"));
    blas->sgemv_ = reinterpret_cast<SgemvFn>(dlsym(handle, "cblas_sgemv"));
    if (blas->sgemm_ == nullptr || blas->sgemv_ == nullptr) {
      return absl::NotFoundError(absl::StrCat(path, " exports no cblas_sgemm/cblas_sgemv"));
    }
    return blas;
  }
  ~ReferenceBlas() { dlclose(handle_); }
  ReferenceBlas(const ReferenceBlas&) = delete;
  ReferenceBlas& operator=(const ReferenceBlas&) = delete;

  SgemmFn sgemm() const { return sgemm_; }
  SgemvFn sgemv() const { return sgemv_; }

 private:
  explicit ReferenceBlas(void* handle) : handle_(handle) {}
  void* handle_;
  SgemmFn sgemm_ = nullptr;
  SgemvFn sgemv_ = nullptr;
};

// Memory bandwidth on 1..threads threads, bytes/s.
struct Bandwidth {
  std::vector<double> copy, read;  // [threads - 1]
  double best_copy() const { return *std::max_element(copy.begin(), copy.end()); }
  double best_read() const { return *std::max_element(read.begin(), read.end()); }
  double best() const { return std::max(best_copy(), best_read()); }
};

Bandwidth MeasureBandwidth(size_t bytes, int threads, int repeats) {
  Bandwidth bw;
  for (int t = 1; t <= threads; ++t) bw.copy.push_back(MemcpyBandwidth(bytes, t, repeats));
  for (int t = 1; t <= threads; ++t) bw.read.push_back(ReadBandwidth(bytes, t, repeats));
  return bw;
}

// ---------------------------------------------------------------------------------------------
// Model arithmetic.

struct ModelCost {
  double linear_params_per_layer = 0;  // wq, wk, wv, wo, w1, w2, w3
  double weight_bytes_per_token = 0;   // every weight a decode step reads (weights_dtype)
  double kv_bytes_per_slot = 0;        // K + V, all layers, per cached token (kv_dtype)
};

ModelCost CostOf(const worker::ModelConfig& c, kernels::DType weights_dtype,
                 kernels::DType kv_dtype) {
  ModelCost cost;
  const double dim = c.dim, q = c.q_dim(), kv = c.kv_dim(), f = c.hidden_dim;
  cost.linear_params_per_layer = dim * q + 2 * dim * kv + q * dim + 3 * dim * f;
  const double biases = c.attention_bias ? q + 2 * kv : 0;
  const double per_layer = cost.linear_params_per_layer + biases + 2 * dim;  // + two norms
  // Layers, final norm, classifier, and the one embedding row looked up; the linear layers and
  // the classifier in weights_dtype, the rest fp32.
  const double linear =
      cost.linear_params_per_layer * c.n_layers + static_cast<double>(c.vocab_size) * dim;
  const double other = (biases + 2 * dim) * c.n_layers + dim + dim;
  cost.weight_bytes_per_token = kernels::DTypeSize(weights_dtype) * linear + 4.0 * other;
  cost.kv_bytes_per_slot =
      static_cast<double>(c.kv_bytes_per_token()) * kernels::DTypeSize(kv_dtype) / sizeof(float);
  return cost;
}

// FLOPs of prefilling `tokens` tokens from an empty cache: linear layers, causal attention
// (QK^T and PV over the visible keys) and the classifier on the last token.
struct PrefillFlops {
  double linear = 0, attention = 0, classifier = 0;
  double total() const { return linear + attention + classifier; }
};

PrefillFlops PrefillFlopsOf(const worker::ModelConfig& c, const ModelCost& cost, int tokens) {
  PrefillFlops f;
  f.linear = 2.0 * tokens * cost.linear_params_per_layer * c.n_layers;
  const double visible = 0.5 * static_cast<double>(tokens) * (tokens + 1);
  f.attention = 4.0 * c.head_dim * visible * c.n_heads * c.n_layers;
  f.classifier = 2.0 * c.vocab_size * c.dim;
  return f;
}

std::vector<int> RandomTokens(int n, int vocab, uint64_t seed) {
  std::vector<int> tokens(n);
  const uint64_t base = Mix(seed);
  for (int i = 0; i < n; ++i) tokens[i] = static_cast<int>(Mix(base + i) % vocab);
  return tokens;
}

// ---------------------------------------------------------------------------------------------
// Engine measurements.

struct PrefillResult {
  int tokens = 0, chunk = 0;
  double seconds = 0;
  PrefillFlops flops;
};

struct DecodeResult {
  int prompt = 0, steps = 0;
  double seconds = 0;
  double bytes = 0;  // weights + KV read over the timed steps
};

absl::StatusOr<std::unique_ptr<worker::Engine>> MakeEngine(
    std::shared_ptr<const worker::ModelWeights> model, int chunk, const Options& opt) {
  worker::EngineOptions options;
  options.tp = 1;
  DAPQ_ASSIGN_OR_RETURN(options.kv_dtype, worker::ParseKvDtype(opt.kv_dtype));
  options.prefix_cache = false;  // repeated prompts are measured, not reused
  options.prefill_chunk = chunk;
  DAPQ_ASSIGN_OR_RETURN(auto engine, worker::Engine::Create(std::move(model), options));
  // Warm-up: OpenBLAS threads, scratch buffers, first-touch of the weights' pages.
  auto seq = engine->NewSequence();
  std::vector<float> logits;
  const std::vector<int> tokens = RandomTokens(64, engine->config().vocab_size, 7);
  DAPQ_RETURN_IF_ERROR(engine->Prefill(*seq, tokens, &logits));
  return engine;
}

absl::StatusOr<PrefillResult> RunPrefill(worker::Engine& engine, const ModelCost& cost, int tokens,
                                         uint64_t seed) {
  const std::vector<int> prompt = RandomTokens(tokens, engine.config().vocab_size, seed);
  auto seq = engine.NewSequence();
  std::vector<float> logits;
  const auto t0 = std::chrono::steady_clock::now();
  DAPQ_RETURN_IF_ERROR(engine.Prefill(*seq, prompt, &logits));
  PrefillResult r;
  r.seconds = SecondsSince(t0);
  r.tokens = tokens;
  r.chunk = engine.options().prefill_chunk;
  r.flops = PrefillFlopsOf(engine.config(), cost, tokens);
  return r;
}

int ArgMax(const std::vector<float>& v) {
  return static_cast<int>(std::max_element(v.begin(), v.end()) - v.begin());
}

// Prefills `prompt` tokens, then decodes steps + 1 greedy tokens one at a time; the first step
// is not timed.
absl::StatusOr<DecodeResult> RunDecode(worker::Engine& engine, const ModelCost& cost, int prompt,
                                       int steps, uint64_t seed) {
  const std::vector<int> tokens = RandomTokens(prompt, engine.config().vocab_size, seed);
  auto seq = engine.NewSequence();
  std::vector<float> logits;
  DAPQ_RETURN_IF_ERROR(engine.Prefill(*seq, tokens, &logits));
  DecodeResult r;
  r.prompt = prompt;
  r.steps = steps;
  for (int i = 0; i <= steps; ++i) {
    const int token = ArgMax(logits);
    const int32_t pos = seq->next_position();
    const auto t0 = std::chrono::steady_clock::now();
    DAPQ_RETURN_IF_ERROR(engine.Forward(*seq, std::span<const int>(&token, 1),
                                        std::span<const int32_t>(&pos, 1), &logits));
    const double t = SecondsSince(t0);
    if (i == 0) continue;
    r.seconds += t;
    // Attention read every cached slot, the new token's included (no compression here, so the
    // cache holds next_position() slots).
    r.bytes += cost.weight_bytes_per_token + cost.kv_bytes_per_slot * seq->next_position();
  }
  return r;
}

// Batched decode: `batch` sequences of `prompt` tokens decode together, one Engine::Step per
// token of each (the first step untimed). Its GEMM-bound limit is the time of the same step's
// linear layers and classifier as bare OpenBLAS sgemm calls with m = batch, measured next to it.
struct BatchedDecode {
  int batch = 0, steps = 0;
  double seconds = 0;       // timed steps
  double gemm_seconds = 0;  // one step's sgemm calls, best of repeats
};

absl::StatusOr<BatchedDecode> RunBatchedDecode(worker::Engine& engine, int batch, int prompt,
                                               int steps, int repeats, uint64_t seed) {
  const worker::ModelConfig& c = engine.config();
  std::vector<std::unique_ptr<worker::Sequence>> seqs;
  std::vector<int> next(batch);
  const int vocab = c.vocab_size;
  for (int b = 0; b < batch; ++b) {
    seqs.push_back(engine.NewSequence());
    std::vector<float> logits;
    DAPQ_RETURN_IF_ERROR(
        engine.Prefill(*seqs.back(), RandomTokens(prompt, vocab, seed + b), &logits));
    next[b] = ArgMax(logits);
  }
  BatchedDecode r;
  r.batch = batch;
  r.steps = steps;
  std::vector<float> logits;
  for (int i = 0; i <= steps; ++i) {
    std::vector<worker::StepEntry> entries(batch);
    for (int b = 0; b < batch; ++b) entries[b] = {seqs[b].get(), std::span<const int>(&next[b], 1)};
    const auto t0 = std::chrono::steady_clock::now();
    DAPQ_RETURN_IF_ERROR(engine.Step(entries, &logits));
    const double t = SecondsSince(t0);
    if (i > 0) r.seconds += t;
    for (int b = 0; b < batch; ++b) {
      const float* row = &logits[static_cast<size_t>(b) * vocab];
      next[b] = static_cast<int>(std::max_element(row, row + vocab) - row);
    }
  }
  const int q = c.q_dim(), kv = c.kv_dim(), f = c.hidden_dim, d = c.dim;
  const GemmShape layer_shapes[] = {{batch, q, d, "wq"}, {batch, kv, d, "wk"}, {batch, kv, d, "wv"},
                                    {batch, d, q, "wo"}, {batch, f, d, "w1"},  {batch, f, d, "w3"},
                                    {batch, d, f, "w2"}};
  for (const GemmShape& s : layer_shapes) {
    r.gemm_seconds += c.n_layers * TimeSgemm(&cblas_sgemm, s, repeats, nullptr).seconds;
  }
  r.gemm_seconds +=
      TimeSgemm(&cblas_sgemm, {batch, vocab, d, "classifier"}, repeats, nullptr).seconds;
  return r;
}

absl::Status RunBatchedSection(const Options& opt,
                               std::shared_ptr<const worker::ModelWeights> model) {
  DAPQ_ASSIGN_OR_RETURN(auto engine, MakeEngine(model, opt.prefill_chunks.front(), opt));
  std::printf(
      "## Batched decode (Engine::Step, tp=1)\n\n"
      "Each batch: B sequences of %d prompt tokens decode together, %d timed steps (one untimed "
      "first). GEMM-bound limit: one step's linear layers and classifier as bare OpenBLAS sgemm "
      "calls with m = B (best of %d), measured right after.\n\n"
      "| batch | ms/step | tok/s | vs batch %d | GEMM-bound ms/step | step / GEMM limit |\n"
      "|---|---|---|---|---|---|\n",
      opt.batch_prompt, opt.batch_steps, opt.repeats, opt.batches.front());
  double base_tok_s = 0;
  for (int batch : opt.batches) {
    Progress(absl::StrCat("batched decode: batch ", batch));
    DAPQ_ASSIGN_OR_RETURN(
        BatchedDecode r,
        RunBatchedDecode(*engine, batch, opt.batch_prompt, opt.batch_steps, opt.repeats, opt.seed));
    const double step_s = r.seconds / r.steps;
    const double tok_s = batch / step_s;
    if (base_tok_s == 0) base_tok_s = tok_s;
    std::printf("| %d | %.1f | %.2f | %.2fx | %.1f | %.2f |\n", batch, 1e3 * step_s, tok_s,
                tok_s / base_tok_s, 1e3 * r.gemm_seconds, step_s / r.gemm_seconds);
    std::fflush(stdout);
  }
  std::printf("\n");
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------------

absl::Status Run(const Options& opt) {
  const unsigned nproc = std::max(1u, std::thread::hardware_concurrency());
  std::printf("# dapq_engine_bench\n\n");
  std::printf("- model: `%s`, weights %s, KV cache %s\n", opt.model.c_str(),
              opt.weights_dtype.c_str(), opt.kv_dtype.c_str());
  std::printf("- hardware threads: %u; OpenBLAS: %s, %d threads, core %s\n", nproc,
              openblas_get_config(), openblas_get_num_threads(), openblas_get_corename());
  std::printf("- small-m GEMM (m <= %d): %s\n\n", kernels::ref::kSmallGemmMaxM,
              kernels::ref::SmallGemmIsa());
  if (opt.only_batched) {
    Progress(absl::StrCat("loading ", opt.model));
    DAPQ_ASSIGN_OR_RETURN(worker::ModelWeights weights,
                          worker::LoadModelAs(opt.model, opt.weights_dtype));
    return RunBatchedSection(opt, std::make_shared<const worker::ModelWeights>(std::move(weights)));
  }

  // (a) Hardware limits.
  Progress("measuring memcpy and read-only bandwidth");
  const size_t copy_bytes = static_cast<size_t>(opt.memcpy_mib) << 20;
  const int bw_repeats = std::max(opt.repeats, 5);
  const Bandwidth start_bw = MeasureBandwidth(copy_bytes, static_cast<int>(nproc), bw_repeats);
  const std::vector<double>& memcpy_bw = start_bw.copy;
  const std::vector<double>& read_bw = start_bw.read;
  const double mem_limit = start_bw.best();

  std::vector<GemmShape> shapes;
  for (int m : opt.gemm_m) {
    shapes.push_back({m, 4096, 4096, "wq/wo"});
    shapes.push_back({m, 14336, 4096, "w1/w3"});
  }
  std::vector<GemmResult> openblas;
  std::vector<std::vector<float>> openblas_c;
  for (const GemmShape& s : shapes) {
    Progress(absl::StrCat("OpenBLAS sgemm m=", s.m, " n=", s.n, " k=", s.k));
    openblas_c.emplace_back();
    openblas.push_back(TimeSgemm(&cblas_sgemm, s, opt.repeats, &openblas_c.back()));
  }
  double gemm_limit = 0;
  for (const GemmResult& r : openblas) gemm_limit = std::max(gemm_limit, r.flops_per_s);
  // With bf16 weights the prefill's limit is the bf16 GEMM's.
  const bool bf16_weights = opt.weights_dtype == "bf16";
  std::vector<GemmResult> bf16_gemm;
  double bf16_limit = 0;
  if (bf16_weights) {
    for (const GemmShape& s : shapes) {
      Progress(absl::StrCat("bf16 GEMM (", kernels::ref::Bf16MatmulBackend(), ") m=", s.m,
                            " n=", s.n, " k=", s.k));
      bf16_gemm.push_back(TimeBf16Gemm(s, opt.repeats));
      bf16_limit = std::max(bf16_limit, bf16_gemm.back().flops_per_s);
    }
  }

  std::printf("## Hardware limits (this process)\n\n| limit | value |\n|---|---|\n");
  for (const GemmResult& r : openblas) {
    std::printf("| OpenBLAS sgemm m=%d n=%d k=%d (%s shape) | %.1f GFLOP/s |\n", r.shape.m,
                r.shape.n, r.shape.k, r.shape.what, Giga(r.flops_per_s));
  }
  for (const GemmResult& r : bf16_gemm) {
    std::printf("| bf16 GEMM (%s) m=%d n=%d k=%d (%s shape) | %.1f GFLOP/s |\n",
                kernels::ref::Bf16MatmulBackend(), r.shape.m, r.shape.n, r.shape.k, r.shape.what,
                Giga(r.flops_per_s));
  }
  for (size_t t = 0; t < memcpy_bw.size(); ++t) {
    std::printf("| memcpy %d MiB, %zu thread(s), best of %d (read + write) | %.2f GB/s |\n",
                opt.memcpy_mib, t + 1, bw_repeats, Giga(memcpy_bw[t]));
  }
  for (size_t t = 0; t < read_bw.size(); ++t) {
    std::printf("| read-only sum %d MiB, %zu thread(s), best of %d | %.2f GB/s |\n", opt.memcpy_mib,
                t + 1, bw_repeats, Giga(read_bw[t]));
  }
  std::printf(
      "\nLimits used below: GEMM %.1f GFLOP/s (best sgemm); bandwidth %.2f GB/s (the best of "
      "memcpy and the read-only sum, which reads four sequential streams per thread).\n\n",
      Giga(gemm_limit), Giga(mem_limit));
  std::fflush(stdout);

  // (d) OpenBLAS against the netlib reference BLAS.
  std::printf("## BLAS choice: OpenBLAS vs netlib reference BLAS (`%s`)\n\n",
              opt.reference_blas.c_str());
  auto reference = ReferenceBlas::Open(opt.reference_blas);
  if (!reference.ok()) {
    Progress(reference.status().ToString());
    std::printf("Reference BLAS not measured: %s\n\n", reference.status().ToString().c_str());
  } else {
    std::printf(
        "| op | shape | OpenBLAS | reference BLAS | OpenBLAS / reference | max rel diff |\n"
        "|---|---|---|---|---|---|\n");
    for (size_t i = 0; i < shapes.size(); ++i) {
      const GemmShape& s = shapes[i];
      if (!opt.reference_all_shapes && s.m != opt.gemm_m.front()) continue;
      Progress(absl::StrCat("reference sgemm m=", s.m, " n=", s.n, " k=", s.k, " (slow)"));
      std::vector<float> c;
      const GemmResult r = TimeSgemm((*reference)->sgemm(), s, 0, &c);
      std::printf("| sgemm | m=%d n=%d k=%d | %.1f GFLOP/s | %.2f GFLOP/s | %.1fx | %.1e |\n", s.m,
                  s.n, s.k, Giga(openblas[i].flops_per_s), Giga(r.flops_per_s),
                  openblas[i].flops_per_s / r.flops_per_s, MaxRelDiff(c, openblas_c[i]));
      std::fflush(stdout);
    }
    for (const auto& [n, k] : {std::pair{4096, 4096}, std::pair{14336, 4096}}) {
      Progress(absl::StrCat("sgemv n=", n, " k=", k));
      std::vector<float> y_open, y_ref;
      const double open_bw = TimeSgemv(&cblas_sgemv, n, k, bw_repeats, &y_open);
      const double ref_bw = TimeSgemv((*reference)->sgemv(), n, k, bw_repeats, &y_ref);
      std::printf(
          "| sgemv (decode) | n=%d k=%d | %.2f GB/s (%.2f of the limit) "
          "| %.2f GB/s (%.2f of the limit) | %.1fx | %.1e |\n",
          n, k, Giga(open_bw), open_bw / mem_limit, Giga(ref_bw), ref_bw / mem_limit,
          open_bw / ref_bw, MaxRelDiff(y_ref, y_open));
    }
    std::printf(
        "\n(sgemm: best of %d OpenBLAS calls, 1 reference call; sgemv: weight bytes read "
        "per second, best of %d.)\n\n",
        opt.repeats, bw_repeats);
  }
  std::fflush(stdout);

  // Load the model.
  Progress(absl::StrCat("loading ", opt.model));
  auto t_load = std::chrono::steady_clock::now();
  DAPQ_ASSIGN_OR_RETURN(worker::ModelWeights weights,
                        worker::LoadModelAs(opt.model, opt.weights_dtype));
  auto model = std::make_shared<const worker::ModelWeights>(std::move(weights));
  const worker::ModelConfig& config = model->config;
  DAPQ_ASSIGN_OR_RETURN(const kernels::DType kv_dtype, worker::ParseKvDtype(opt.kv_dtype));
  const ModelCost cost = CostOf(config, model->weights_dtype, kv_dtype);
  Progress(absl::StrCat("loaded in ", SecondsSince(t_load), " s: ", config.DebugString()));

  // (b) Prefill.
  std::vector<PrefillResult> prefill;
  for (size_t ci = 0; ci < opt.prefill_chunks.size(); ++ci) {
    const int chunk = opt.prefill_chunks[ci];
    std::unique_ptr<worker::Engine> engine;
    for (int tokens : opt.prompt_lengths) {
      // A prompt that fits in one chunk of an earlier chunk size would repeat that run exactly.
      bool repeat = false;
      for (size_t cj = 0; cj < ci; ++cj) repeat |= tokens <= opt.prefill_chunks[cj];
      if (repeat) continue;
      if (engine == nullptr) {
        Progress(absl::StrCat("engine tp=1 prefill_chunk=", chunk, " (warm-up)"));
        DAPQ_ASSIGN_OR_RETURN(engine, MakeEngine(model, chunk, opt));
      }
      Progress(absl::StrCat("prefill ", tokens, " tokens, chunk ", chunk));
      DAPQ_ASSIGN_OR_RETURN(PrefillResult r, RunPrefill(*engine, cost, tokens, opt.seed));
      Progress(absl::StrCat("  ", r.seconds, " s, ", r.tokens / r.seconds, " tok/s"));
      prefill.push_back(r);
    }
  }
  std::printf(
      "## Prefill (tp=1)\n\n"
      "| prompt tokens | chunk | seconds | tok/s | linear GFLOP | attention GFLOP | achieved "
      "GFLOP/s | / sgemm limit | / bf16 GEMM limit |\n|---|---|---|---|---|---|---|---|---|\n");
  for (const PrefillResult& r : prefill) {
    const double achieved = r.flops.total() / r.seconds;
    char vs_bf16[16] = "-";
    if (bf16_limit > 0) std::snprintf(vs_bf16, sizeof(vs_bf16), "%.2f", achieved / bf16_limit);
    std::printf("| %d | %d | %.2f | %.1f | %.1f | %.1f | %.1f | %.2f | %s |\n", r.tokens, r.chunk,
                r.seconds, r.tokens / r.seconds, Giga(r.flops.linear), Giga(r.flops.attention),
                Giga(achieved), achieved / gemm_limit, vs_bf16);
  }
  std::printf(
      "\nFLOPs: linear = 2 x tokens x %.0f params/layer x %d layers; attention = 4 x head_dim x "
      "heads x layers x tokens(tokens+1)/2 (causal); + %.2f GFLOP for the last token's "
      "classifier.\n\n",
      cost.linear_params_per_layer, config.n_layers,
      Giga(PrefillFlopsOf(config, cost, 1).classifier));
  std::fflush(stdout);

  // (c) Decode.
  Progress(absl::StrCat("decode ", opt.decode_steps, " steps after a ", opt.decode_prompt,
                        "-token prompt"));
  DAPQ_ASSIGN_OR_RETURN(auto engine, MakeEngine(model, opt.prefill_chunks.front(), opt));
  DAPQ_ASSIGN_OR_RETURN(DecodeResult d,
                        RunDecode(*engine, cost, opt.decode_prompt, opt.decode_steps, opt.seed));
  // Memory bandwidth on a shared host drifts over minutes: measure it again next to the decode
  // and judge the decode against the best of the two measurements (memcpy or read-only sum).
  Progress("measuring memcpy and read-only bandwidth again");
  const Bandwidth decode_bw = MeasureBandwidth(copy_bytes, static_cast<int>(nproc), bw_repeats);
  const double decode_limit = std::max(mem_limit, decode_bw.best());
  const double bw = d.bytes / d.seconds;
  std::printf(
      "## Decode (tp=1, batch 1)\n\n"
      "Bandwidth measured again right after the decode: memcpy %.2f GB/s, read-only sum %.2f "
      "GB/s (best over threads). Limit used: the best of both measurements, before and after, %.2f "
      "GB/s.\n\n",
      Giga(decode_bw.best_copy()), Giga(decode_bw.best_read()), Giga(decode_limit));
  std::printf(
      "| prompt | timed steps | ms/token | tok/s | MB read/token (weights + KV) | achieved GB/s | "
      "/ bandwidth limit | tok/s at the bandwidth limit |\n|---|---|---|---|---|---|---|---|\n");
  const double bytes_per_token = d.bytes / d.steps;
  std::printf("| %d | %d | %.1f | %.2f | %.1f | %.2f | %.2f | %.2f |\n", d.prompt, d.steps,
              1e3 * d.seconds / d.steps, d.steps / d.seconds, bytes_per_token / 1e6, Giga(bw),
              bw / decode_limit, decode_limit / bytes_per_token);
  std::printf(
      "\nWeights read per token: %.1f MB (all layers + classifier, linear layers in %s); KV: %.3f "
      "MB per cached token (%s).\n\n",
      cost.weight_bytes_per_token / 1e6, opt.weights_dtype.c_str(), cost.kv_bytes_per_slot / 1e6,
      opt.kv_dtype.c_str());
  engine.reset();  // one engine's scratch at a time

  // (d) Batched decode.
  return RunBatchedSection(opt, model);
}

}  // namespace
}  // namespace dapq::bench

int main(int argc, char** argv) {
  dapq::bench::Options opt;
  CLI::App app{"dapq_engine_bench: engine prefill/decode throughput against hardware limits"};
  app.add_option("--model", opt.model, "model spec (synthetic:<shape>[-<N>l], HF dir, .bin)")
      ->capture_default_str();
  app.add_option("--weights_dtype", opt.weights_dtype, "fp32 | bf16 (linear layers)")
      ->capture_default_str();
  app.add_option("--kv_dtype", opt.kv_dtype, "fp32 | bf16 | fp16 (the KV cache)")
      ->capture_default_str();
  app.add_option("--prompt_lengths", opt.prompt_lengths, "prefill prompt lengths")
      ->delimiter(',')
      ->capture_default_str();
  app.add_option("--prefill_chunks", opt.prefill_chunks, "EngineOptions::prefill_chunk values")
      ->delimiter(',')
      ->capture_default_str();
  app.add_option("--decode_prompt", opt.decode_prompt, "prompt tokens before decoding")
      ->capture_default_str();
  app.add_option("--decode_steps", opt.decode_steps, "timed decode steps (after one untimed)")
      ->capture_default_str();
  app.add_option("--gemm_m", opt.gemm_m, "m values of the sgemm limit (n=4096/14336, k=4096)")
      ->delimiter(',')
      ->capture_default_str();
  app.add_option("--repeats", opt.repeats, "timed repeats for the limits (best is kept)")
      ->capture_default_str();
  app.add_option("--memcpy_mib", opt.memcpy_mib, "memcpy buffer size")->capture_default_str();
  app.add_option("--reference_blas", opt.reference_blas,
                 "netlib BLAS exporting cblas_sgemm (empty path = skip)")
      ->capture_default_str();
  app.add_flag("--reference_all_shapes", opt.reference_all_shapes,
               "time the reference BLAS on every --gemm_m shape (default: the first m only)");
  app.add_option("--seed", opt.seed, "prompt token seed")->capture_default_str();
  app.add_option("--batches", opt.batches, "batched decode: sequences per step")
      ->capture_default_str();
  app.add_option("--batch_prompt", opt.batch_prompt, "batched decode: prompt tokens per sequence")
      ->capture_default_str();
  app.add_option("--batch_steps", opt.batch_steps, "batched decode: timed steps")
      ->capture_default_str();
  app.add_flag("--only_batched", opt.only_batched, "run the batched decode section alone");
  CLI11_PARSE(app, argc, argv);

  if (opt.prompt_lengths.empty() || opt.prefill_chunks.empty() || opt.gemm_m.empty() ||
      opt.decode_prompt < 1 || opt.decode_steps < 1 || opt.repeats < 1 || opt.memcpy_mib < 1) {
    std::fprintf(stderr, "error: empty lists, or a count below 1\n");
    return 2;
  }
  const absl::Status status = dapq::bench::Run(opt);
  if (!status.ok()) {
    std::fprintf(stderr, "error: %s\n", status.ToString().c_str());
    return 1;
  }
  return 0;
}
