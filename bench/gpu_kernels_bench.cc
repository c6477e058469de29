// File: bench/gpu_kernels_bench.cc
// dapq_gpu_kernels_bench (issue #13): the CUDA kernels on one card, each figure beside the limit
// measured in the same run, for scripts/gpu_check.sh to record:
//  (a) the limit: device-to-device copy bandwidth, ExecutionContext::CopyAsync of 1 GiB; a copy
//      of N bytes counts 2 * N (read + write), as bench_util.h's memcpy probe does;
//  (b) paged decode attention (kernels::AttentionDecode, batch 1, one query token) over 32768 and
//      131072 slots, bf16 and fp32 pools, 16 and 64 tokens per block: GB/s = K and V bytes read /
//      time, and that as a fraction of (a) (issue #13's target: >= 0.7 at 32768);
//  (c) causal prefill attention (AttentionPrefill, q_tokens = kv_len = n) at 8192 and 32768, bf16
//      pool, 16 tokens per block: TFLOP/s with FLOP = 4 * head_dim * q_heads * n(n+1)/2;
//  (d) DapQ scoring (AttentionScores): 8 pseudo queries against 32768 fp32 keys for each of the
//      32 query heads of a layer, as worker/compress/internal/score_util.cc calls it, and its time
//      as a share of (c)'s 32768-token attention time (issue #13's target: <= 2%);
//  (e) GEMM (kernels::Gemm, trans_b, fp32 and bf16 weights) at m in {1, 32, 512, 4096} and the
//      Llama-3-8B linear shapes: TFLOP/s = 2 * m * n * k / time.
// Shapes are Llama-3-8B's: 32 query heads, 8 KV heads, head_dim 128. No CUDA types: memory,
// copies and synchronisation go through kernels::ExecutionContext, and the kernels get its
// stream. Inputs are seeded uniform [-1, 1) values (bench_util.h's splitmix64 formula), generated
// on the host once and uploaded once.
// Timing: one warm-up call (and a second, timed, call to size the samples when the warm-up was
// short), then `samples` timed samples of [enqueue `reps` calls; Synchronize()] with
// std::chrono; the figure is the median over samples of sample time / reps. reps fills a
// per-sample time budget; a soft time cap skips the measurements not started when it passes and
// trims the samples of the one running.
// Markdown goes to stdout and to --out, flushed table by table (a run killed by a timeout keeps
// the tables done); progress lines go to stderr. Exit code 0 on success, 1 when a measurement
// fails, 2 when no CUDA device can be used (the context's error is printed) or a flag is bad.
// Flags: --device (cuda:0), --out FILE, --quick (~30 s instead of ~90 s on an H100), --gpu_name
// (the card's name for the header; scripts/gpu_check.sh passes nvidia-smi's), --seed.
// This benchmark has been compiled but, at the time of writing, never run on a GPU.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "bench/bench_util.h"
#include "common/status_macros.h"
#include "kernels/attention.h"
#include "kernels/attention_scores.h"
#include "kernels/device.h"
#include "kernels/gemm.h"
#include "kernels/types.h"

namespace dapq::bench {
namespace {

using Clock = std::chrono::steady_clock;
using kernels::AttentionParams;
using kernels::AttentionScoresParams;
using kernels::CopyKind;
using kernels::DeviceMemory;
using kernels::DType;
using kernels::ExecutionContext;
using kernels::GemmParams;

// Llama-3-8B attention.
constexpr int kQHeads = 32;
constexpr int kKvHeads = 8;
constexpr int kHeadDim = 128;
constexpr int kQStride = kQHeads * kHeadDim;

constexpr size_t kCopyBytes = size_t{1} << 30;
constexpr int kShortContext = 32768;  // issue #13's decode figure and the scoring/prefill length
constexpr int kLongContext = 131072;  // when the pools fit
constexpr int kTokensPerBlock[] = {16, 64};
constexpr int kPrefillTokensPerBlock = 16;  // the engine's default (EngineOptions)
constexpr int kPrefillTokens[] = {8192, kShortContext};
constexpr int kScoringQueries = 8;  // DapQ's pseudo-query window
constexpr int kGemmM[] = {1, 32, 512, 4096};
struct LinearShape {
  int n, k;
  const char* what;
};
constexpr LinearShape kLinearShapes[] = {
    {4096, 4096, "wq/wo"}, {14336, 4096, "w1/w3"}, {4096, 14336, "w2"}};
constexpr int kGemmMaxM = 4096;
constexpr int kGemmMaxN = 14336;
constexpr int kGemmMaxK = 14336;

constexpr double kDecodeTarget = 0.7;    // decode GB/s / copy GB/s, at least
constexpr double kScoringTarget = 0.02;  // scoring / prefill attention, at most
constexpr int kMaxReps = 10000;

struct Options {
  std::string device = "cuda:0";
  std::string out;
  std::string gpu_name;
  bool quick = false;
  uint64_t seed = 1;
};

// How long each measurement runs.
struct Plan {
  double sample_s = 0.2;  // target seconds per timed sample (sets reps)
  int samples = 5;        // timed samples; the median is reported
  double cap_s = 110;     // soft cap on the whole run, from its start
  Clock::time_point start;
  Clock::time_point deadline() const {
    return start +
           std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(cap_s));
  }
  bool Past() const { return Clock::now() >= deadline(); }
};

struct Timing {
  double seconds = 0;  // median per call
  int samples = 0;
  int reps = 0;
  std::string Shape() const { return absl::StrCat(samples, " x ", reps); }
};

void Progress(const Plan& plan, const std::string& line) {
  std::fprintf(stderr, "[gpu_kernels_bench %6.1fs] %s\n", SecondsSince(plan.start), line.c_str());
}

// Markdown to stdout and, with --out, to a file; Flush() after each table.
class Report {
 public:
  explicit Report(std::FILE* file) : file_(file) {}
  void Add(const std::string& text) {
    std::fputs(text.c_str(), stdout);
    if (file_ != nullptr) std::fputs(text.c_str(), file_);
  }
  void Flush() {
    std::fflush(stdout);
    if (file_ != nullptr) std::fflush(file_);
  }

 private:
  std::FILE* file_;
};

// Times `call` (which only enqueues work on ctx's stream): see the file comment.
absl::StatusOr<Timing> TimeCalls(ExecutionContext& ctx, const Plan& plan,
                                 const std::function<absl::Status()>& call) {
  auto t0 = Clock::now();
  DAPQ_RETURN_IF_ERROR(call());
  DAPQ_RETURN_IF_ERROR(ctx.Synchronize());
  double estimate = SecondsSince(t0);
  if (estimate < plan.sample_s) {  // the warm-up carried first-call costs: time one more call
    t0 = Clock::now();
    DAPQ_RETURN_IF_ERROR(call());
    DAPQ_RETURN_IF_ERROR(ctx.Synchronize());
    estimate = SecondsSince(t0);
  }
  estimate = std::max(estimate, 1e-7);
  Timing timing;
  timing.reps = std::clamp(static_cast<int>(plan.sample_s / estimate), 1, kMaxReps);
  const double left = std::chrono::duration<double>(plan.deadline() - Clock::now()).count();
  timing.samples = std::clamp(static_cast<int>(left / (timing.reps * estimate)), 1, plan.samples);
  std::vector<double> per_call;
  for (int s = 0; s < timing.samples; ++s) {
    t0 = Clock::now();
    for (int r = 0; r < timing.reps; ++r) DAPQ_RETURN_IF_ERROR(call());
    DAPQ_RETURN_IF_ERROR(ctx.Synchronize());
    per_call.push_back(SecondsSince(t0) / timing.reps);
  }
  std::sort(per_call.begin(), per_call.end());
  const size_t mid = per_call.size() / 2;
  timing.seconds =
      per_call.size() % 2 == 1 ? per_call[mid] : 0.5 * (per_call[mid - 1] + per_call[mid]);
  return timing;
}

// Calls fn(begin, end) over [0, n), one contiguous slice per hardware thread.
template <typename Fn>
void ParallelSlices(size_t n, Fn fn) {
  const size_t threads = std::max(1u, std::thread::hardware_concurrency());
  const size_t slice = (n + threads - 1) / threads;
  std::vector<std::thread> pool;
  for (size_t t = 1; t < threads; ++t) {
    const size_t begin = std::min(n, slice * t);
    const size_t end = std::min(n, begin + slice);
    if (begin < end) pool.emplace_back(fn, begin, end);
  }
  fn(size_t{0}, std::min(n, slice));
  for (std::thread& t : pool) t.join();
}

// Element i of bench_util.h's FillUniform(dst, n, seed) over [-1, 1), with base = Mix(seed): the
// same values whatever the slicing.
float UniformAt(uint64_t base, size_t i) {
  return -1.0f + (2.0f / 16777216.0f) * static_cast<float>(Mix(base + i) >> 40);
}

absl::Status Upload(ExecutionContext& ctx, void* dst, const void* src, size_t bytes) {
  DAPQ_RETURN_IF_ERROR(ctx.CopyAsync(dst, src, bytes, CopyKind::kHostToDevice));
  return ctx.Synchronize();  // the host buffer is freed by the caller right after
}

// Fills `mem` (fp32 or bf16 elements) with seeded uniform [-1, 1) values made on the host.
absl::Status FillDeviceUniform(ExecutionContext& ctx, DeviceMemory& mem, DType dtype,
                               uint64_t seed) {
  const size_t count = mem.bytes() / kernels::DTypeSize(dtype);
  const uint64_t base = Mix(seed);
  if (dtype == DType::kF32) {
    std::vector<float> host(count);
    ParallelSlices(count, [&](size_t begin, size_t end) {
      for (size_t i = begin; i < end; ++i) host[i] = UniformAt(base, i);
    });
    return Upload(ctx, mem.data(), host.data(), count * sizeof(float));
  }
  if (dtype != DType::kBF16) return absl::InvalidArgumentError("fp32 or bf16 inputs only");
  std::vector<uint16_t> host(count);
  ParallelSlices(count, [&](size_t begin, size_t end) {
    for (size_t i = begin; i < end; ++i) host[i] = kernels::FloatToBf16(UniformAt(base, i));
  });
  return Upload(ctx, mem.data(), host.data(), count * sizeof(uint16_t));
}

absl::StatusOr<DeviceMemory> RandomDevice(ExecutionContext& ctx, size_t count, DType dtype,
                                          uint64_t seed) {
  DAPQ_ASSIGN_OR_RETURN(DeviceMemory mem, ctx.Allocate(count * kernels::DTypeSize(dtype)));
  DAPQ_RETURN_IF_ERROR(FillDeviceUniform(ctx, mem, dtype, seed));
  return mem;
}

absl::StatusOr<DeviceMemory> ZeroDevice(ExecutionContext& ctx, size_t bytes) {
  DAPQ_ASSIGN_OR_RETURN(DeviceMemory mem, ctx.Allocate(bytes));
  const std::vector<char> zeros(bytes, 0);
  DAPQ_RETURN_IF_ERROR(Upload(ctx, mem.data(), zeros.data(), bytes));
  return mem;
}

// ---------------------------------------------------------------------------------------------
// The paged KV pools: one per dtype, `slots` slots per KV head, laid out as kvstore's BlockPool
// lays them out (per block [tokens_per_block, head_dim] keys, then the values). The element
// count does not depend on the block size, so each pool serves both block sizes through its own
// block table: a seeded permutation of every block id, so a head's blocks lie at shuffled places.

struct KvPools {
  int slots = 0;
  DeviceMemory f32, bf16;
  std::vector<DeviceMemory> tables;  // [kv_heads, slots / tpb] per kTokensPerBlock entry

  const DeviceMemory& pool(DType dtype) const { return dtype == DType::kF32 ? f32 : bf16; }
};

size_t PoolElements(int slots) { return size_t{2} * kKvHeads * slots * kHeadDim; }

// A permutation of [0, n), Fisher-Yates with splitmix64 draws.
std::vector<int32_t> Shuffled(int n, uint64_t seed) {
  std::vector<int32_t> ids(n);
  for (int i = 0; i < n; ++i) ids[i] = i;
  const uint64_t base = Mix(seed);
  for (int i = n - 1; i > 0; --i) {
    std::swap(ids[i], ids[Mix(base + i) % static_cast<uint64_t>(i + 1)]);
  }
  return ids;
}

// Allocates first (so that a pool too large for the card costs no host work), then fills.
absl::StatusOr<KvPools> MakePools(ExecutionContext& ctx, int slots, uint64_t seed) {
  KvPools kv;
  kv.slots = slots;
  DAPQ_ASSIGN_OR_RETURN(kv.f32, ctx.Allocate(PoolElements(slots) * sizeof(float)));
  DAPQ_ASSIGN_OR_RETURN(kv.bf16, ctx.Allocate(PoolElements(slots) * sizeof(uint16_t)));
  DAPQ_RETURN_IF_ERROR(FillDeviceUniform(ctx, kv.f32, DType::kF32, seed + 1));
  DAPQ_RETURN_IF_ERROR(FillDeviceUniform(ctx, kv.bf16, DType::kBF16, seed + 2));
  for (int tpb : kTokensPerBlock) {
    const std::vector<int32_t> ids = Shuffled(kKvHeads * (slots / tpb), seed + 3 + tpb);
    DAPQ_ASSIGN_OR_RETURN(DeviceMemory table, ctx.Allocate(ids.size() * sizeof(int32_t)));
    DAPQ_RETURN_IF_ERROR(Upload(ctx, table.data(), ids.data(), ids.size() * sizeof(int32_t)));
    kv.tables.push_back(std::move(table));
  }
  return kv;
}

AttentionParams PagedParams(const KvPools& kv, DType dtype, int tpb_index, int q_tokens, int kv_len,
                            const float* q, float* out) {
  const int tpb = kTokensPerBlock[tpb_index];
  const DeviceMemory& pool = kv.pool(dtype);
  AttentionParams p;
  p.q_tokens = q_tokens;
  p.q_heads = kQHeads;
  p.kv_heads = kKvHeads;
  p.head_dim = kHeadDim;
  p.q = q;
  p.q_stride = kQStride;
  p.kv_len = kv_len;
  p.block_table = static_cast<const int32_t*>(kv.tables[tpb_index].data());
  p.kv_dtype = dtype;
  p.k_pool = pool.data();
  p.v_pool = static_cast<const char*>(pool.data()) +
             static_cast<size_t>(tpb) * kHeadDim * kernels::DTypeSize(dtype);
  p.block_stride = 2L * tpb * kHeadDim;
  p.blocks_per_head = kv.slots / tpb;
  p.pool_blocks = static_cast<long>(kKvHeads) * p.blocks_per_head;
  p.tokens_per_block = tpb;
  p.out = out;
  p.out_stride = kQStride;
  return p;
}

int TpbIndex(int tpb) {
  for (int i = 0; i < static_cast<int>(std::size(kTokensPerBlock)); ++i) {
    if (kTokensPerBlock[i] == tpb) return i;
  }
  return 0;
}

std::string Skipped(const Plan& plan) {
  return absl::StrFormat("skipped: past the %.0f s time cap", plan.cap_s);
}

// ---------------------------------------------------------------------------------------------
// The measurements. Each prints its table and returns what the summary needs.

struct Results {
  double copy_bytes_per_s = 0;
  std::optional<double> decode_fraction[2];  // kShortContext, tokens/block 16: bf16, fp32
  std::optional<double> prefill_short_s;     // kShortContext prefill attention, seconds
  std::optional<double> prefill_short_flops;
  std::optional<double> scoring_s;
  std::optional<double> gemm_best[2];  // m = kGemmMaxM, TFLOP/s: fp32, bf16 weights
};

absl::Status MeasureCopy(ExecutionContext& ctx, const Plan& plan, uint64_t seed, Report& report,
                         Results& results) {
  Progress(plan, absl::StrCat("device-to-device copy, ", kCopyBytes >> 20, " MiB"));
  DAPQ_ASSIGN_OR_RETURN(DeviceMemory src, RandomDevice(ctx, kCopyBytes / 4, DType::kF32, seed));
  DAPQ_ASSIGN_OR_RETURN(DeviceMemory dst, ctx.Allocate(kCopyBytes));
  DAPQ_ASSIGN_OR_RETURN(const Timing t, TimeCalls(ctx, plan, [&] {
                          return ctx.CopyAsync(dst.data(), src.data(), kCopyBytes,
                                               CopyKind::kDeviceToDevice);
                        }));
  results.copy_bytes_per_s = 2.0 * kCopyBytes / t.seconds;
  report.Add(absl::StrFormat(
      "## Device-to-device copy (the bandwidth limit)\n\n"
      "`ExecutionContext::CopyAsync(kDeviceToDevice)` of %d MiB. GB/s = 2 x bytes / time (bytes "
      "read + bytes written, the STREAM Copy convention); 1 GB = 1e9 bytes.\n\n"
      "| bytes | time (ms) | GB/s (read + write) | samples x reps |\n|---|---|---|---|\n",
      kCopyBytes >> 20));
  report.Add(absl::StrFormat("| %d | %.3f | %.1f | %s |\n\n", kCopyBytes, 1e3 * t.seconds,
                             results.copy_bytes_per_s / 1e9, t.Shape()));
  report.Flush();
  return ctx.Synchronize();
}

absl::Status MeasureDecode(ExecutionContext& ctx, const Plan& plan, const KvPools& kv,
                           uint64_t seed, Report& report, Results& results) {
  DAPQ_ASSIGN_OR_RETURN(DeviceMemory q, RandomDevice(ctx, kQStride, DType::kF32, seed));
  DAPQ_ASSIGN_OR_RETURN(DeviceMemory out, ctx.Allocate(kQStride * sizeof(float)));
  report.Add(absl::StrFormat(
      "## Paged decode attention (batch 1, one query token)\n\n"
      "`AttentionDecode` with %d query heads, %d KV heads, head_dim %d, K/V read through "
      "shuffled block tables of one pool. KV bytes = 2 (K and V) x kv_heads x head_dim x "
      "context x dtype size (the query, block table and output are not counted). GB/s = KV bytes "
      "/ time. Fraction = decode GB/s / copy GB/s, where copy GB/s is the device-to-device "
      "copy's (bytes read + bytes written) per second above: decode only reads, so the fraction "
      "compares its read stream with the copy's total traffic. Issue #13's target: >= %.1f at "
      "context %d.\n\n"
      "| context | KV dtype | tokens/block | KV MiB | time (us) | GB/s | fraction of copy | "
      "samples x reps |\n|---|---|---|---|---|---|---|---|\n",
      kQHeads, kKvHeads, kHeadDim, kDecodeTarget, kShortContext));
  std::vector<int> contexts = {kShortContext};
  if (kv.slots >= kLongContext) contexts.push_back(kLongContext);
  for (int context : contexts) {
    for (DType dtype : {DType::kBF16, DType::kF32}) {
      for (int tpb : kTokensPerBlock) {
        const double bytes =
            2.0 * kKvHeads * kHeadDim * static_cast<double>(context) * kernels::DTypeSize(dtype);
        const std::string row = absl::StrFormat("| %d | %s | %d | %.0f |", context,
                                                kernels::DTypeName(dtype), tpb, bytes / 1048576);
        if (plan.Past()) {
          report.Add(absl::StrCat(row, " ", Skipped(plan), " | | | |\n"));
          continue;
        }
        Progress(plan, absl::StrCat("decode context=", context, " ", kernels::DTypeName(dtype),
                                    " tokens/block=", tpb));
        const AttentionParams p =
            PagedParams(kv, dtype, TpbIndex(tpb), 1, context, static_cast<const float*>(q.data()),
                        static_cast<float*>(out.data()));
        DAPQ_ASSIGN_OR_RETURN(const Timing t, TimeCalls(ctx, plan, [&] {
                                return kernels::AttentionDecode(p, ctx.stream());
                              }));
        const double bw = bytes / t.seconds;
        const double fraction = bw / results.copy_bytes_per_s;
        if (context == kShortContext && tpb == kTokensPerBlock[0]) {
          results.decode_fraction[dtype == DType::kF32 ? 1 : 0] = fraction;
        }
        report.Add(absl::StrFormat("%s %.1f | %.1f | %.3f | %s |\n", row, 1e6 * t.seconds, bw / 1e9,
                                   fraction, t.Shape()));
        report.Flush();
      }
    }
  }
  if (kv.slots < kLongContext) {
    report.Add(absl::StrFormat("\nContext %d skipped: its pools did not fit in device memory.\n",
                               kLongContext));
  }
  report.Add("\n");
  report.Flush();
  return ctx.Synchronize();
}

double CausalFlop(int n) {
  return 4.0 * kHeadDim * kQHeads * (static_cast<double>(n) * (n + 1) / 2.0);
}

absl::Status MeasurePrefill(ExecutionContext& ctx, const Plan& plan, const KvPools& kv,
                            uint64_t seed, Report& report, Results& results) {
  const int longest = kPrefillTokens[std::size(kPrefillTokens) - 1];
  const size_t elements = static_cast<size_t>(longest) * kQStride;
  DAPQ_ASSIGN_OR_RETURN(DeviceMemory q, RandomDevice(ctx, elements, DType::kF32, seed));
  DAPQ_ASSIGN_OR_RETURN(DeviceMemory out, ctx.Allocate(elements * sizeof(float)));
  report.Add(absl::StrFormat(
      "## Prefill attention (causal, from an empty cache)\n\n"
      "`AttentionPrefill` with q_tokens = kv_len = n, %d query heads, %d KV heads, head_dim %d, "
      "bf16 K/V paged at %d tokens/block, fp32 queries and output. Kernel: tensor cores (queries "
      "and softmax weights rounded to bf16, fp32 accumulation: `round_to_kv_dtype`, what the "
      "engine runs) or CUDA cores (exact fp32). FLOP = 4 x head_dim x q_heads x n(n+1)/2 (QK^T "
      "and PV over the causal pairs; 1 TFLOP = 1e12 FLOP). TFLOP/s = FLOP / time. One layer's "
      "attention.\n\n"
      "| tokens | kernel | KV dtype | tokens/block | TFLOP | time (ms) | TFLOP/s | samples x reps "
      "|\n|---|---|---|---|---|---|---|---|\n",
      kQHeads, kKvHeads, kHeadDim, kPrefillTokensPerBlock));
  // The engine's kernel first: if the plan's time runs out, the exact kernel's rows are skipped.
  for (const bool tensor_cores : {true, false}) {
    for (int n : kPrefillTokens) {
      const double flop = CausalFlop(n);
      const std::string row = absl::StrFormat("| %d | %s | bf16 | %d | %.2f |", n,
                                              tensor_cores ? "tensor cores" : "CUDA cores",
                                              kPrefillTokensPerBlock, flop / 1e12);
      if (plan.Past()) {
        report.Add(absl::StrCat(row, " ", Skipped(plan), " | | |\n"));
        continue;
      }
      Progress(plan, absl::StrCat("prefill attention tokens=", n,
                                  tensor_cores ? " (tensor cores)" : " (CUDA cores)"));
      AttentionParams p =
          PagedParams(kv, DType::kBF16, TpbIndex(kPrefillTokensPerBlock), n, n,
                      static_cast<const float*>(q.data()), static_cast<float*>(out.data()));
      p.round_to_kv_dtype = tensor_cores;
      DAPQ_ASSIGN_OR_RETURN(const Timing t, TimeCalls(ctx, plan, [&] {
                              return kernels::AttentionPrefill(p, ctx.stream());
                            }));
      // The engine's kernel is the one the summary and the scoring share compare with.
      if (n == kShortContext && tensor_cores) {
        results.prefill_short_s = t.seconds;
        results.prefill_short_flops = flop / t.seconds;
      }
      report.Add(absl::StrFormat("%s %.2f | %.2f | %s |\n", row, 1e3 * t.seconds,
                                 flop / t.seconds / 1e12, t.Shape()));
      report.Flush();
    }
  }
  report.Add("\n");
  report.Flush();
  return ctx.Synchronize();
}

absl::Status MeasureScoring(ExecutionContext& ctx, const Plan& plan, uint64_t seed, Report& report,
                            Results& results) {
  const int keys = kShortContext;
  const int group = kQHeads / kKvHeads;
  report.Add(absl::StrFormat(
      "## DapQ scoring (attention mass of the pseudo queries)\n\n"
      "One layer's scoring as worker/compress/internal/score_util.cc does it: `AttentionScores` "
      "once per query head (%d calls), %d pseudo queries (fp32, token stride q_heads x head_dim) "
      "against the %d fp32 keys of the head's KV head ([keys, head_dim] slabs), every query "
      "seeing every key, scale 1/sqrt(head_dim), the scores of a GQA group (%d heads) summed "
      "into one [keys] row per KV head. Share = scoring time / the %d-token prefill attention "
      "time above (one layer, bf16 K/V, %d tokens/block): attention alone, not the layer's "
      "linear layers, so a whole layer's share is smaller. Issue #13's target: <= %.0f%%.\n\n"
      "| queries | keys | calls | time (ms) | prefill attention (ms) | share | samples x reps |\n"
      "|---|---|---|---|---|---|---|\n",
      kQHeads, kScoringQueries, keys, group, kShortContext, kPrefillTokensPerBlock,
      100 * kScoringTarget));
  const std::string row = absl::StrFormat("| %d | %d | %d |", kScoringQueries, keys, kQHeads);
  if (plan.Past()) {
    report.Add(absl::StrCat(row, " ", Skipped(plan), " | | | |\n\n"));
    report.Flush();
    return absl::OkStatus();
  }
  Progress(plan, "DapQ scoring");
  DAPQ_ASSIGN_OR_RETURN(
      DeviceMemory q,
      RandomDevice(ctx, static_cast<size_t>(kScoringQueries) * kQStride, DType::kF32, seed));
  DAPQ_ASSIGN_OR_RETURN(
      DeviceMemory k,
      RandomDevice(ctx, static_cast<size_t>(kKvHeads) * keys * kHeadDim, DType::kF32, seed + 1));
  // Accumulated into on every call; at most kScoringQueries per key and call, so no overflow.
  DAPQ_ASSIGN_OR_RETURN(DeviceMemory scores,
                        ZeroDevice(ctx, static_cast<size_t>(kKvHeads) * keys * sizeof(float)));
  const auto layer = [&]() -> absl::Status {
    for (int h = 0; h < kQHeads; ++h) {
      const int kv_head = h / group;
      AttentionScoresParams p;
      p.queries = kScoringQueries;
      p.keys = keys;
      p.head_dim = kHeadDim;
      p.q = static_cast<const float*>(q.data()) + static_cast<long>(h) * kHeadDim;
      p.q_stride = kQStride;
      p.k = static_cast<const float*>(k.data()) + static_cast<long>(kv_head) * keys * kHeadDim;
      p.scale = 1.0f / std::sqrt(static_cast<float>(kHeadDim));
      p.scores = static_cast<float*>(scores.data()) + static_cast<long>(kv_head) * keys;
      DAPQ_RETURN_IF_ERROR(kernels::AttentionScores(p, ctx.stream()));
    }
    return absl::OkStatus();
  };
  DAPQ_ASSIGN_OR_RETURN(const Timing t, TimeCalls(ctx, plan, layer));
  results.scoring_s = t.seconds;
  if (results.prefill_short_s.has_value()) {
    report.Add(absl::StrFormat("%s %.3f | %.2f | %.2f%% | %s |\n\n", row, 1e3 * t.seconds,
                               1e3 * *results.prefill_short_s,
                               100 * t.seconds / *results.prefill_short_s, t.Shape()));
  } else {
    report.Add(absl::StrFormat("%s %.3f | not measured | n/a | %s |\n\n", row, 1e3 * t.seconds,
                               t.Shape()));
  }
  report.Flush();
  return ctx.Synchronize();
}

absl::Status MeasureGemm(ExecutionContext& ctx, const Plan& plan, uint64_t seed, Report& report,
                         Results& results) {
  report.Add(
      "## GEMM (linear layers)\n\n"
      "`kernels::Gemm`: C [m, n] = A [m, k] x B^T, A and C fp32, B the weight [n, k] (trans_b) "
      "in fp32 (fp32 arithmetic, no TF32) or bf16 (A rounded to bf16 on the device, fp32 "
      "accumulation), through cuBLASLt. FLOP = 2 x m x n x k; TFLOP/s = FLOP / time. Weight "
      "GB/s = n x k x weight dtype size / time (the figure that matters at small m). Times "
      "include the per-call host work (descriptors, stream-ordered scratch) as the engine pays "
      "it. The same A, B and C buffers are reused across calls, so weights that fit in L2 "
      "(bf16 4096 x 4096 is 32 MiB) may be read from it at m = 1.\n\n"
      "| m | n | k | shape | weights | time (ms) | TFLOP/s | weight GB/s | samples x reps |\n"
      "|---|---|---|---|---|---|---|---|---|\n");
  report.Flush();
  const size_t a_elements = static_cast<size_t>(kGemmMaxM) * kGemmMaxK;
  size_t b_elements = 0;
  for (const LinearShape& s : kLinearShapes) {
    b_elements = std::max(b_elements, static_cast<size_t>(s.n) * s.k);
  }
  const size_t c_elements = static_cast<size_t>(kGemmMaxM) * kGemmMaxN;
  DAPQ_ASSIGN_OR_RETURN(DeviceMemory a, RandomDevice(ctx, a_elements, DType::kF32, seed));
  DAPQ_ASSIGN_OR_RETURN(DeviceMemory b32, RandomDevice(ctx, b_elements, DType::kF32, seed + 1));
  DAPQ_ASSIGN_OR_RETURN(DeviceMemory b16, RandomDevice(ctx, b_elements, DType::kBF16, seed + 2));
  DAPQ_ASSIGN_OR_RETURN(DeviceMemory c, ctx.Allocate(c_elements * sizeof(float)));
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    for (const LinearShape& s : kLinearShapes) {
      for (int m : kGemmM) {
        const double flop = 2.0 * m * s.n * static_cast<double>(s.k);
        const std::string row = absl::StrFormat("| %d | %d | %d | %s | %s |", m, s.n, s.k, s.what,
                                                kernels::DTypeName(dtype));
        if (plan.Past()) {
          report.Add(absl::StrCat(row, " ", Skipped(plan), " | | | |\n"));
          continue;
        }
        Progress(plan, absl::StrCat("gemm m=", m, " n=", s.n, " k=", s.k, " ",
                                    kernels::DTypeName(dtype)));
        GemmParams p;
        p.m = m;
        p.n = s.n;
        p.k = s.k;
        p.a = static_cast<const float*>(a.data());
        p.lda = s.k;
        p.trans_b = true;
        p.ldb = s.k;
        p.b_dtype = dtype;
        if (dtype == DType::kF32) {
          p.b = static_cast<const float*>(b32.data());
        } else {
          p.b_bf16 = static_cast<const uint16_t*>(b16.data());
        }
        p.c = static_cast<float*>(c.data());
        p.ldc = s.n;
        DAPQ_ASSIGN_OR_RETURN(const Timing t,
                              TimeCalls(ctx, plan, [&] { return kernels::Gemm(p, ctx.stream()); }));
        const double tflops = flop / t.seconds / 1e12;
        const double weight_bytes = static_cast<double>(s.n) * s.k * kernels::DTypeSize(dtype);
        if (m == kGemmMaxM) {
          std::optional<double>& best = results.gemm_best[dtype == DType::kF32 ? 0 : 1];
          best = std::max(best.value_or(0.0), tflops);
        }
        report.Add(absl::StrFormat("%s %.3f | %.2f | %.1f | %s |\n", row, 1e3 * t.seconds, tflops,
                                   weight_bytes / t.seconds / 1e9, t.Shape()));
        report.Flush();
      }
    }
  }
  report.Add("\n");
  report.Flush();
  return ctx.Synchronize();
}

std::string Verdict(bool met) { return met ? "met" : "not met"; }

void PrintSummary(const Results& r, Report& report) {
  report.Add(
      "## Issue #13 figures (this run, this card)\n\n| figure | value | target | |\n"
      "|---|---|---|---|\n");
  const char* decode_kv[2] = {"bf16", "fp32"};  // Results::decode_fraction's order
  for (int i = 0; i < 2; ++i) {
    const std::string what = absl::StrFormat(
        "paged decode attention, context %d, %s K/V, 16 tokens/block: fraction of copy GB/s",
        kShortContext, decode_kv[i]);
    if (r.decode_fraction[i].has_value()) {
      report.Add(absl::StrFormat("| %s | %.3f | >= %.1f | %s |\n", what, *r.decode_fraction[i],
                                 kDecodeTarget, Verdict(*r.decode_fraction[i] >= kDecodeTarget)));
    } else {
      report.Add(absl::StrFormat("| %s | not measured | >= %.1f | |\n", what, kDecodeTarget));
    }
  }
  if (r.prefill_short_flops.has_value()) {
    report.Add(absl::StrFormat("| prefill attention, %d tokens, bf16 K/V | %.2f TFLOP/s | | |\n",
                               kShortContext, *r.prefill_short_flops / 1e12));
  } else {
    report.Add(
        absl::StrFormat("| prefill attention, %d tokens | not measured | | |\n", kShortContext));
  }
  if (r.scoring_s.has_value() && r.prefill_short_s.has_value()) {
    const double share = *r.scoring_s / *r.prefill_short_s;
    report.Add(absl::StrFormat(
        "| DapQ scoring share of prefill attention, %d tokens | %.2f%% | <= %.0f%% | %s |\n",
        kShortContext, 100 * share, 100 * kScoringTarget, Verdict(share <= kScoringTarget)));
  } else {
    report.Add(absl::StrFormat(
        "| DapQ scoring share of prefill attention, %d tokens | not measured | <= %.0f%% | |\n",
        kShortContext, 100 * kScoringTarget));
  }
  const char* gemm_weights[2] = {"fp32", "bf16"};  // Results::gemm_best's order
  for (int i = 0; i < 2; ++i) {
    const std::string what =
        absl::StrFormat("GEMM m=%d, %s weights, best shape", kGemmMaxM, gemm_weights[i]);
    if (r.gemm_best[i].has_value()) {
      report.Add(absl::StrFormat("| %s | %.2f TFLOP/s | | |\n", what, *r.gemm_best[i]));
    } else {
      report.Add(absl::StrFormat("| %s | not measured | | |\n", what));
    }
  }
  report.Add(absl::StrFormat("| device-to-device copy | %.1f GB/s (read + write) | | |\n\n",
                             r.copy_bytes_per_s / 1e9));
  report.Flush();
}

// Decode and prefill over the same pools, freed on return.
absl::Status MeasureAttention(ExecutionContext& ctx, const Plan& plan, uint64_t seed,
                              Report& report, Results& results) {
  Progress(plan, absl::StrCat("KV pools for ", kLongContext, " slots per head"));
  absl::StatusOr<KvPools> kv = MakePools(ctx, kLongContext, seed + 10);
  if (absl::IsResourceExhausted(kv.status())) {
    Progress(plan, absl::StrCat("out of memory (", kv.status().ToString(), "); pools for ",
                                kShortContext, " slots"));
    kv = MakePools(ctx, kShortContext, seed + 10);
  }
  DAPQ_RETURN_IF_ERROR(kv.status());
  DAPQ_RETURN_IF_ERROR(MeasureDecode(ctx, plan, *kv, seed + 20, report, results));
  return MeasurePrefill(ctx, plan, *kv, seed + 30, report, results);
}

std::string UtcNow() {
  const std::time_t now = std::time(nullptr);
  std::tm utc{};
  gmtime_r(&now, &utc);
  char text[64];
  std::strftime(text, sizeof(text), "%Y-%m-%d %H:%M:%S UTC", &utc);
  return text;
}

absl::Status Run(const Options& opt, ExecutionContext& ctx, const Plan& plan, Report& report) {
  const std::string device =
      opt.gpu_name.empty() ? opt.device : absl::StrCat(opt.device, " (", opt.gpu_name, ")");
  report.Add(absl::StrFormat(
      "# GPU kernel benchmarks (dapq_gpu_kernels_bench, issue #13)\n\n"
      "- device: %s\n- date: %s\n"
      "- mode: %s: ~%.2f s per timed sample, median of up to %d samples, soft time cap %.0f s\n"
      "- shapes: Llama-3-8B attention (32 query heads, 8 KV heads, head_dim 128); inputs "
      "uniform [-1, 1), seed %d, made on the host and uploaded once\n"
      "- timing: std::chrono around [enqueue reps calls; Synchronize()] after a warm-up call; "
      "each figure is the median over samples of (sample time / reps); each table gives "
      "samples x reps\n\n",
      device, UtcNow(), opt.quick ? "quick" : "full", plan.sample_s, plan.samples, plan.cap_s,
      opt.seed));
  report.Flush();
  Results results;
  DAPQ_RETURN_IF_ERROR(MeasureCopy(ctx, plan, opt.seed, report, results));

  DAPQ_RETURN_IF_ERROR(MeasureAttention(ctx, plan, opt.seed, report, results));
  DAPQ_RETURN_IF_ERROR(MeasureScoring(ctx, plan, opt.seed + 40, report, results));
  DAPQ_RETURN_IF_ERROR(MeasureGemm(ctx, plan, opt.seed + 50, report, results));
  PrintSummary(results, report);
  Progress(plan, "done");
  return absl::OkStatus();
}

int Main(int argc, char** argv) {
  Options opt;
  CLI::App app{"dapq_gpu_kernels_bench: CUDA kernel throughput against the copy bandwidth"};
  app.add_option("--device", opt.device, "cuda or cuda:N")->capture_default_str();
  app.add_option("--out", opt.out, "also write the Markdown to this file");
  app.add_option("--gpu_name", opt.gpu_name, "the card's name for the header (e.g. nvidia-smi's)");
  app.add_flag("--quick", opt.quick, "shorter samples and time cap (~30 s instead of ~90 s)");
  app.add_option("--seed", opt.seed, "input seed")->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }

  Plan plan;
  plan.start = Clock::now();
  if (opt.quick) {
    plan.sample_s = 0.05;
    plan.samples = 3;
    plan.cap_s = 40;
  }
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> file(nullptr, &std::fclose);
  if (!opt.out.empty()) {
    file.reset(std::fopen(opt.out.c_str(), "w"));
    if (file == nullptr) {
      std::fprintf(stderr, "dapq_gpu_kernels_bench: cannot write --out %s\n", opt.out.c_str());
      return 2;
    }
  }
  Report report(file.get());
  // Exit 2 for "cannot run here", with the reason in the report too.
  const auto cannot_run = [&](const std::string& why) {
    std::fprintf(stderr, "dapq_gpu_kernels_bench: %s\n", why.c_str());
    if (file != nullptr) {
      std::fprintf(file.get(), "# GPU kernel benchmarks (dapq_gpu_kernels_bench)\n\nNot run: %s\n",
                   why.c_str());
    }
    return 2;
  };
  const absl::StatusOr<kernels::Device> device = kernels::ParseDevice(opt.device);
  if (!device.ok()) return cannot_run(device.status().ToString());
  if (device->backend != kernels::Backend::kCuda) {
    return cannot_run(absl::StrCat("--device ", opt.device, ": a CUDA device is needed"));
  }
  absl::StatusOr<std::unique_ptr<ExecutionContext>> ctx = ExecutionContext::Create(*device);
  if (!ctx.ok()) {
    return cannot_run(absl::StrCat("no CUDA device: ", ctx.status().ToString()));
  }
  const absl::Status status = Run(opt, **ctx, plan, report);
  if (!status.ok()) {
    const std::string error = absl::StrCat("error: ", status.ToString());
    std::fprintf(stderr, "dapq_gpu_kernels_bench: %s\n", error.c_str());
    report.Add(absl::StrCat("\n**", error, "**\n"));
    report.Flush();
    return 1;
  }
  return 0;
}

}  // namespace
}  // namespace dapq::bench

int main(int argc, char** argv) {
  try {
    return dapq::bench::Main(argc, argv);
  } catch (const std::exception& e) {  // std::thread, allocation: reported, exit 1
    std::fprintf(stderr, "dapq_gpu_kernels_bench: %s\n", e.what());
    return 1;
  }
}
