// File: bench/kernels_bench.cc
// Google Benchmark microbenchmarks of every kernel op (kernels/*.h, CPU backend) at Llama-3-8B
// shapes (dim 4096, 32 query / 8 KV heads, head_dim 128, FFN 14336), plus the two limits the
// ops are judged against, measured in the same run:
//  - BM_BlasSgemmRaw: cblas_sgemm called directly (the compute limit for GEMM and prefill
//    attention);
//  - BM_Memcpy: a 256 MiB memcpy on 1 and 2 threads (the memory-bandwidth limit for GEMV,
//    RmsNorm, Rope, Softmax, SwiGlu and decode attention); BM_MemRead, a read-only sum over
//    256 MiB in four sequential streams per thread (bench_util.h's SumFloats).
// Counters (rates over real time; OpenBLAS runs its own threads, so CPU time would mislead):
//  FLOP/s for compute-bound ops, B/s for memory-bound ones (minimum DRAM traffic: every input
//  read once, every output written once). bench/kernels_table.py turns the JSON output into
//  the Markdown table with ratios to the limits. Inputs are seeded (bench/bench_util.h).
#include <benchmark/benchmark.h>
#include <cblas.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "absl/status/status.h"
#include "bench/bench_util.h"
#include "kernels/activation.h"
#include "kernels/attention.h"
#include "kernels/convert.h"
#include "kernels/gemm.h"
#include "kernels/rms_norm.h"
#include "kernels/rope.h"
#include "kernels/softmax.h"
#include "kernels/types.h"

namespace dapq::bench {
namespace {

namespace k = ::dapq::kernels;

constexpr int kDim = 4096;
constexpr int kQHeads = 32;
constexpr int kKvHeads = 8;
constexpr int kHeadDim = 128;
constexpr int kFfn = 14336;
// The classifier (Llama-3's vocabulary): 55% of the weight bytes a decode step of the 2-layer
// synthetic model reads (bench/README.md).
constexpr int kVocab = 128256;
constexpr size_t kMemcpyBytes = size_t{256} << 20;

// Stops the benchmark with the status message; returns false when `s` is not OK.
bool Ok(benchmark::State& state, const absl::Status& s) {
  if (s.ok()) return true;
  state.SkipWithError(s.ToString().c_str());
  return false;
}

void SetRate(benchmark::State& state, const char* name, double per_iteration) {
  state.counters[name] = benchmark::Counter(per_iteration * static_cast<double>(state.iterations()),
                                            benchmark::Counter::kIsRate);
}

// The operands of one linear layer y[m, n] = x[m, k] . W[n, k]^T (W in (out, in) layout) from a
// benchmark's (m, n, k) arguments, and the rates it reports.
struct LinearInputs {
  int m, n, k;
  std::vector<float> x;
  HostArray<float> w;  // [n, k], in the engine's kind of memory (bench_util.h)
  std::vector<float> y;
  explicit LinearInputs(const benchmark::State& state)
      : m(static_cast<int>(state.range(0))),
        n(static_cast<int>(state.range(1))),
        k(static_cast<int>(state.range(2))),
        x(RandomVector(static_cast<size_t>(m) * k, 1)),
        w(RandomHostArray(static_cast<size_t>(n) * k, 2, -0.02f, 0.02f)),
        y(static_cast<size_t>(m) * n) {}
  void SetRates(benchmark::State& state) const {
    SetRate(state, "FLOP/s", 2.0 * m * n * k);
    SetRate(state, "weight_B/s", 4.0 * n * k);
  }
};

// Times p (A = in.x, C = in.y) through the kernel API; rates from the weights' element size.
void RunGemm(benchmark::State& state, const LinearInputs& in, const k::GemmParams& p) {
  for (auto _ : state) {
    if (!Ok(state, k::Gemm(p))) break;
    benchmark::DoNotOptimize(in.y.data());
    benchmark::ClobberMemory();
  }
  SetRate(state, "FLOP/s", 2.0 * in.m * in.n * in.k);
  SetRate(state, "weight_B/s", static_cast<double>(k::DTypeSize(p.b_dtype)) * in.n * in.k);
}

// C = A . W^T over in's operands, W fp32 (in.w) unless the caller points p at bf16 weights.
k::GemmParams LinearParams(LinearInputs& in) {
  k::GemmParams p;
  p.m = in.m;
  p.n = in.n;
  p.k = in.k;
  p.a = in.x.data();
  p.lda = in.k;
  p.b = in.w.get();
  p.ldb = in.k;
  p.trans_b = true;
  p.c = in.y.data();
  p.ldc = in.n;
  return p;
}

// Gemm through the kernel API. m == 1 is the decode GEMV (memory bound: compare weight B/s with
// memcpy); m >= 128 is prefill.
void BM_Gemm(benchmark::State& state) {
  LinearInputs in(state);
  RunGemm(state, in, LinearParams(in));
}
// The linear layers of one Llama-3-8B block: wq/wo (4096x4096), wk/wv (1024x4096),
// w1/w3 (14336x4096), w2 (4096x14336).
// m = 1, 4, 16 run the small-m kernel (kernels/ref/small_gemm.h; decode, alone or batched).
BENCHMARK(BM_Gemm)
    ->ArgNames({"m", "n", "k"})
    ->ArgsProduct({{1, 4, 16, 128, 512}, {kDim}, {kDim}})
    ->ArgsProduct({{1, 4, 16, 128, 512}, {kKvHeads * kHeadDim}, {kDim}})
    ->ArgsProduct({{1, 4, 16, 32, 64, 128, 512}, {kFfn}, {kDim}})
    ->ArgsProduct({{1, 4, 16, 128, 512}, {kDim}, {kFfn}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// bf16 weights through the kernel API: the small-m kernel (rows widened in registers) at the
// decode sizes, m <= 64 (weight_B/s counts the bf16 bytes; m = 1 also at the classifier's shape);
// m = 512 and 2048 are oneDNN's bf16 matmul (in pieces of 256 rows: kernels/ref/bf16_matmul.cc),
// the bf16 GEMM limit.
void BM_GemmBf16(benchmark::State& state) {
  LinearInputs in(state);
  const size_t count = static_cast<size_t>(in.n) * in.k;
  HostArray<uint16_t> w16 = MakeZeroedHostArray<uint16_t>(count);
  for (size_t i = 0; i < count; ++i) w16[i] = k::FloatToBf16(in.w[i]);
  k::GemmParams p = LinearParams(in);
  p.b = nullptr;
  p.b_dtype = k::DType::kBF16;
  p.b_bf16 = w16.get();
  RunGemm(state, in, p);
}
BENCHMARK(BM_GemmBf16)
    ->ArgNames({"m", "n", "k"})
    ->ArgsProduct({{1, 4, 16, 64, 512, 2048}, {kFfn}, {kDim}})
    ->ArgsProduct({{1, 4, 16, 64, 512, 2048}, {kDim}, {kFfn}})
    ->ArgsProduct({{1}, {kVocab}, {kDim}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// The same small-m products through OpenBLAS alone (sgemv for m = 1, sgemm otherwise): what the
// small-m kernel replaces.
void BM_BlasSmallM(benchmark::State& state) {
  LinearInputs in(state);
  for (auto _ : state) {
    if (in.m == 1) {
      cblas_sgemv(CblasRowMajor, CblasNoTrans, in.n, in.k, 1.0f, in.w.get(), in.k, in.x.data(), 1,
                  0.0f, in.y.data(), 1);
    } else {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, in.m, in.n, in.k, 1.0f, in.x.data(),
                  in.k, in.w.get(), in.k, 0.0f, in.y.data(), in.n);
    }
    benchmark::DoNotOptimize(in.y.data());
    benchmark::ClobberMemory();
  }
  in.SetRates(state);
}
BENCHMARK(BM_BlasSmallM)
    ->ArgNames({"m", "n", "k"})
    ->ArgsProduct({{1, 4, 16, 32, 64}, {kFfn}, {kDim}})
    ->ArgsProduct({{1, 4, 16, 32, 64}, {kDim}, {kFfn}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// The BLAS limit: cblas_sgemm directly (row-major, B transposed as the engine calls it).
void BM_BlasSgemmRaw(benchmark::State& state) {
  const int m = static_cast<int>(state.range(0));
  const int n = static_cast<int>(state.range(1));
  const int kk = static_cast<int>(state.range(2));
  const std::vector<float> a = RandomVector(static_cast<size_t>(m) * kk, 3);
  const std::vector<float> b = RandomVector(static_cast<size_t>(n) * kk, 4);
  std::vector<float> c(static_cast<size_t>(m) * n);
  for (auto _ : state) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, kk, 1.0f, a.data(), kk, b.data(), kk,
                0.0f, c.data(), n);
    benchmark::DoNotOptimize(c.data());
    benchmark::ClobberMemory();
  }
  SetRate(state, "FLOP/s", 2.0 * m * n * kk);
}
BENCHMARK(BM_BlasSgemmRaw)
    ->ArgNames({"m", "n", "k"})
    ->Args({2048, 2048, 2048})
    ->Args({4096, 4096, 4096})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// The bandwidth limit: memcpy of 256 MiB split over `threads` threads; B/s counts read + write.
void BM_Memcpy(benchmark::State& state) {
  const int threads = static_cast<int>(state.range(0));
  HostArray<char> src = MakeZeroedHostArray<char>(kMemcpyBytes);
  HostArray<char> dst = MakeZeroedHostArray<char>(kMemcpyBytes);
  std::memset(src.get(), 1, kMemcpyBytes);
  for (auto _ : state) {
    ParallelMemcpy(dst.get(), src.get(), kMemcpyBytes, threads);
    benchmark::DoNotOptimize(dst.get());
    benchmark::ClobberMemory();
  }
  SetRate(state, "B/s", 2.0 * static_cast<double>(kMemcpyBytes));
}
// Read-only bandwidth: a vectorised sum over 256 MiB on `threads` threads (the access pattern
// of GEMV and decode attention, which only read their big operands). B/s counts bytes read.
void BM_MemRead(benchmark::State& state) {
  const int threads = static_cast<int>(state.range(0));
  const size_t count = kMemcpyBytes / sizeof(float);
  HostArray<float> data = MakeZeroedHostArray<float>(count);  // as BM_Memcpy's buffers
  std::fill(data.get(), data.get() + count, 1.0f);
  for (auto _ : state) {
    benchmark::DoNotOptimize(ParallelSum(data.get(), count, threads));
  }
  SetRate(state, "B/s", static_cast<double>(kMemcpyBytes));
}
BENCHMARK(BM_MemRead)
    ->ArgName("threads")
    ->Arg(1)
    ->Arg(2)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

BENCHMARK(BM_Memcpy)
    ->ArgName("threads")
    ->Arg(1)
    ->Arg(2)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// RmsNorm over [rows, 4096]; B/s = x read + out written (+ weight).
void BM_RmsNorm(benchmark::State& state) {
  const int rows = static_cast<int>(state.range(0));
  const std::vector<float> x = RandomVector(static_cast<size_t>(rows) * kDim, 5);
  const std::vector<float> weight = RandomVector(kDim, 6, 0.9f, 1.1f);
  std::vector<float> out(x.size());
  const k::RmsNormParams p{rows, kDim, x.data(), kDim, weight.data(), out.data(), kDim, 1e-5f};
  for (auto _ : state) {
    if (!Ok(state, k::RmsNorm(p))) break;
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  SetRate(state, "B/s", 4.0 * (2.0 * rows * kDim + kDim));
}
BENCHMARK(BM_RmsNorm)->ArgName("rows")->Arg(1)->Arg(512)->UseRealTime();

// Rope in place on q [tokens, 32, 128] with Llama-3 frequencies; layout 0 = interleaved,
// 1 = half-split. B/s = x read + written.
void BM_Rope(benchmark::State& state) {
  const int tokens = static_cast<int>(state.range(0));
  const auto layout = static_cast<k::RopeLayout>(state.range(1));
  k::RopeConfig config;
  config.head_dim = kHeadDim;
  config.theta = 500000.0f;
  config.layout = layout;
  config.scaling.factor = 8.0f;
  config.scaling.original_max_position_embeddings = 8192;
  auto inv_freq = k::ComputeRopeInvFreq(config);
  if (!Ok(state, inv_freq.status())) return;
  std::vector<float> x = RandomVector(static_cast<size_t>(tokens) * kQHeads * kHeadDim, 7);
  std::vector<int32_t> positions(tokens);
  for (int t = 0; t < tokens; ++t) positions[t] = 4096 + t;
  const k::RopeParams p{tokens,           kQHeads,          kHeadDim, x.data(), kQHeads * kHeadDim,
                        positions.data(), inv_freq->data(), layout};
  for (auto _ : state) {
    if (!Ok(state, k::Rope(p))) break;
    benchmark::DoNotOptimize(x.data());
    benchmark::ClobberMemory();
  }
  SetRate(state, "B/s", 4.0 * 2.0 * tokens * kQHeads * kHeadDim);
}
BENCHMARK(BM_Rope)->ArgNames({"tokens", "layout"})->ArgsProduct({{1, 512}, {0, 1}})->UseRealTime();

// Softmax in place over [32, cols] (a decode step's scores for 32 heads over `cols` keys).
// B/s = x read + written once (the kernel makes three passes; later ones hit cache when small).
void BM_Softmax(benchmark::State& state) {
  const int cols = static_cast<int>(state.range(0));
  const int rows = kQHeads;
  std::vector<float> x = RandomVector(static_cast<size_t>(rows) * cols, 8, -4.0f, 4.0f);
  const k::SoftmaxParams p{rows, cols, x.data(), cols};
  for (auto _ : state) {
    if (!Ok(state, k::Softmax(p))) break;
    benchmark::DoNotOptimize(x.data());
    benchmark::ClobberMemory();
  }
  SetRate(state, "B/s", 4.0 * 2.0 * rows * cols);
}
BENCHMARK(BM_Softmax)->ArgName("cols")->Arg(2048)->Arg(8192)->Arg(32768)->UseRealTime();

// SwiGlu over [rows, 14336]; B/s = gate and up read + out written.
void BM_SwiGlu(benchmark::State& state) {
  const int rows = static_cast<int>(state.range(0));
  const size_t count = static_cast<size_t>(rows) * kFfn;
  const std::vector<float> gate = RandomVector(count, 9, -4.0f, 4.0f);
  const std::vector<float> up = RandomVector(count, 10);
  std::vector<float> out(count);
  const k::SwiGluParams p{rows, kFfn, gate.data(), kFfn, up.data(), kFfn, out.data(), kFfn};
  for (auto _ : state) {
    if (!Ok(state, k::SwiGlu(p))) break;
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  SetRate(state, "B/s", 4.0 * 3.0 * static_cast<double>(count));
}
BENCHMARK(BM_SwiGlu)->ArgName("rows")->Arg(1)->Arg(512)->UseRealTime();

// Attention inputs for `q_tokens` queries over a cache of `kv_len` slots (Llama-3-8B heads):
// q [q_tokens, 32, 128]; K/V slabs [8, kv_len, 128].
struct AttentionInputs {
  std::vector<float> q, k, v, out;
  k::AttentionParams params;

  AttentionInputs(int q_tokens, int kv_len) {
    const size_t q_count = static_cast<size_t>(q_tokens) * kQHeads * kHeadDim;
    const size_t kv_count = static_cast<size_t>(kKvHeads) * kv_len * kHeadDim;
    q = RandomVector(q_count, 11);
    k = RandomVector(kv_count, 12);
    v = RandomVector(kv_count, 13);
    out.resize(q_count);
    params.q_tokens = q_tokens;
    params.q_heads = kQHeads;
    params.kv_heads = kKvHeads;
    params.head_dim = kHeadDim;
    params.q = q.data();
    params.q_stride = kQHeads * kHeadDim;
    params.k = k.data();
    params.v = v.data();
    params.kv_head_stride = static_cast<long>(kv_len) * kHeadDim;
    params.kv_len = kv_len;
    params.out = out.data();
    params.out_stride = kQHeads * kHeadDim;
  }
};

// The same inputs with K/V paged as the engine's KV cache holds them (worker/kv_cache.h): blocks
// of kTokensPerBlock slots (keys then values) in one pool, read through [kv_heads, blocks] tables
// of block ids. Blocks lie in table order (as a prefill allocates them) or, with `shuffled`, at
// random places (the worst case). The pool holds `dtype` elements (--kv_dtype).
struct PagedAttentionInputs : AttentionInputs {
  static constexpr int kTokensPerBlock = 16;
  std::vector<std::byte> pool;
  std::vector<int32_t> table;

  PagedAttentionInputs(int q_tokens, int kv_len, bool shuffled, k::DType dtype = k::DType::kF32)
      : AttentionInputs(q_tokens, kv_len) {
    const size_t elem = k::DTypeSize(dtype);
    const int blocks = (kv_len + kTokensPerBlock - 1) / kTokensPerBlock;
    const size_t block_elems = static_cast<size_t>(kTokensPerBlock) * kHeadDim;
    const int total = kKvHeads * blocks;
    std::vector<int> place(total);
    std::iota(place.begin(), place.end(), 0);
    if (shuffled) std::shuffle(place.begin(), place.end(), std::mt19937_64(14));
    pool.assign(2 * block_elems * total * elem, std::byte{0});
    table.resize(total);
    for (int h = 0; h < kKvHeads; ++h) {
      for (int b = 0; b < blocks; ++b) {
        const int e = h * blocks + b;
        const long src = static_cast<long>(h) * kv_len * kHeadDim + b * block_elems;
        const size_t n =
            static_cast<size_t>(std::min(kTokensPerBlock, kv_len - b * kTokensPerBlock)) * kHeadDim;
        std::byte* kd = pool.data() + 2 * block_elems * place[e] * elem;
        std::byte* vd = kd + block_elems * elem;
        k::ConvertFromFloat(k.data() + src, dtype, kd, static_cast<long>(n));
        k::ConvertFromFloat(v.data() + src, dtype, vd, static_cast<long>(n));
        table[e] = place[e];
      }
    }
    params.k = params.v = nullptr;
    params.kv_head_stride = 0;
    params.block_table = table.data();
    params.kv_dtype = dtype;
    params.k_pool = pool.data();
    params.v_pool = pool.data() + block_elems * elem;
    params.block_stride = static_cast<long>(2 * block_elems);
    params.pool_blocks = total;
    params.tokens_per_block = kTokensPerBlock;
    params.blocks_per_head = blocks;
  }
};

// Causal prefill of n tokens from an empty cache. FLOP/s counts the visible (causal) work:
// per head 2 (QK^T and PV) * 2 * head_dim * n(n+1)/2.
void RunAttentionPrefill(benchmark::State& state, const AttentionInputs& in) {
  const int n = static_cast<int>(state.range(0));
  for (auto _ : state) {
    if (!Ok(state, k::AttentionPrefill(in.params))) break;
    benchmark::DoNotOptimize(in.out.data());
    benchmark::ClobberMemory();
  }
  const double pairs = 0.5 * static_cast<double>(n) * (n + 1);
  SetRate(state, "FLOP/s", 4.0 * kHeadDim * pairs * kQHeads);
}
void BM_AttentionPrefill(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  RunAttentionPrefill(state, AttentionInputs(n, n));
}
void BM_AttentionPrefillPaged(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  RunAttentionPrefill(state, PagedAttentionInputs(n, n, state.range(1) != 0));
}
// Prompt lengths of the contiguous and the bf16 prefill attention benchmarks.
void PrefillTokens(benchmark::internal::Benchmark* b) {
  b->ArgName("tokens")->Arg(512)->Arg(2048)->Arg(8192);
}
BENCHMARK(BM_AttentionPrefill)->Apply(PrefillTokens)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_AttentionPrefillPaged)
    ->ArgNames({"tokens", "shuffled"})
    ->ArgsProduct({{512, 2048}, {0, 1}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
// The engine's prefill over a bf16 cache: queries and softmax weights rounded to bf16
// (AttentionParams::round_to_kv_dtype), oneDNN bf16 GEMMs; compare with BM_GemmBf16/m:512.
void BM_AttentionPrefillPagedBf16(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  PagedAttentionInputs in(n, n, false, k::DType::kBF16);
  in.params.round_to_kv_dtype = true;
  RunAttentionPrefill(state, in);
}
BENCHMARK(BM_AttentionPrefillPagedBf16)
    ->Apply(PrefillTokens)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// One decode token over kv_len cached slots. KV_B/s counts the K and V bytes read.
void RunAttentionDecode(benchmark::State& state, const AttentionInputs& in) {
  const int kv_len = static_cast<int>(state.range(0));
  for (auto _ : state) {
    if (!Ok(state, k::AttentionDecode(in.params))) break;
    benchmark::DoNotOptimize(in.out.data());
    benchmark::ClobberMemory();
  }
  const double elem = k::DTypeSize(in.params.kv_dtype);
  SetRate(state, "KV_B/s", elem * 2.0 * kKvHeads * static_cast<double>(kv_len) * kHeadDim);
}
void BM_AttentionDecode(benchmark::State& state) {
  RunAttentionDecode(state, AttentionInputs(1, static_cast<int>(state.range(0))));
}
// kv_dtype: 0 fp32, 1 bf16, 2 fp16.
void BM_AttentionDecodePaged(benchmark::State& state) {
  RunAttentionDecode(state,
                     PagedAttentionInputs(1, static_cast<int>(state.range(0)), state.range(1) != 0,
                                          static_cast<k::DType>(state.range(2))));
}
BENCHMARK(BM_AttentionDecode)
    ->ArgName("kv_len")
    ->Arg(2048)
    ->Arg(8192)
    ->Arg(32768)
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();
BENCHMARK(BM_AttentionDecodePaged)
    ->ArgNames({"kv_len", "shuffled", "kv_dtype"})
    ->ArgsProduct({{2048, 8192, 32768}, {0, 1}, {0, 1, 2}})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();

}  // namespace
}  // namespace dapq::bench

BENCHMARK_MAIN();
