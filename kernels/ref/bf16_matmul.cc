// File: kernels/ref/bf16_matmul.cc
// oneDNN matmul: src [m, k] bf16 (for Bf16Matmul the fp32 activations rounded, contiguous),
// weights an [n, k] row-major bf16 matrix described to oneDNN as [k, n] with strides (1, ldb)
// (or a [k, n] one as it is), dst [m, n] fp32 with row stride ldc; alpha an output scale,
// accumulation a sum post-op. Creating a primitive compiles its kernels (17-170 ms per shape here),
// so m is rounded up to a multiple of kRowBucket (zero rows in, the extra rows of C dropped):
// prompts of every length then share a bounded set of primitives, created on first use and kept.
// Each call runs with the calling thread's own scratchpad.
#include "kernels/ref/bf16_matmul.h"

#if DAPQ_HAVE_DNNL
#include <omp.h>

#include <algorithm>
#include <cstddef>
#include <dnnl.hpp>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/convert.h"
#include "kernels/cpu_threads.h"
#endif

namespace dapq::kernels::ref {

#if DAPQ_HAVE_DNNL
namespace {

using Dims = dnnl::memory::dims;
using DataType = dnnl::memory::data_type;

constexpr int kRowBucket = 64;
// Longer products run in pieces of this many rows: oneDNN 2.6's matmul ran m = 2048, k = 14336
// (the FFN's down projection at a 2048-token prefill) at 0.7 of its m = 512 rate on our AVX-512
// BF16 machine (bench/README.md); each piece reads the weights again, a few ms per 100 GFLOP.
constexpr int kMaxRowsPerCall = 256;

// oneDNN multiplies bf16 natively only with AVX512-BF16 (or AMX); on other CPUs its bf16 matmul
// falls back to emulated or reference code, slower than the callers' fp32 paths.
bool NativeBf16() {
  static const bool has = __builtin_cpu_supports("avx512bf16");
  return has;
}

dnnl::engine& Engine() {
  static dnnl::engine* engine = new dnnl::engine(dnnl::engine::kind::cpu, 0);
  return *engine;
}

// C[m, n] = alpha * A[m, k] . op(B) (+ C when accumulate); A, B bf16 row-major, C fp32.
struct MatmulShape {
  int m, n, k, lda, ldb, ldc;
  bool trans_b, accumulate;
  float alpha;
  auto Tie() const { return std::tie(m, n, k, lda, ldb, ldc, trans_b, accumulate, alpha); }
  bool operator<(const MatmulShape& o) const { return Tie() < o.Tie(); }
};

struct Matmul {
  dnnl::memory::desc src, weights, dst, scratchpad;
  dnnl::matmul primitive;
};

// The primitive for `shape`, created on first use and kept.
const Matmul& PrimitiveFor(const MatmulShape& shape) {
  static std::mutex mu;
  static std::map<MatmulShape, std::unique_ptr<Matmul>>* cache =
      new std::map<MatmulShape, std::unique_ptr<Matmul>>();
  std::lock_guard<std::mutex> lock(mu);
  std::unique_ptr<Matmul>& slot = (*cache)[shape];
  if (slot == nullptr) {
    auto mm = std::make_unique<Matmul>();
    mm->src = dnnl::memory::desc(Dims{shape.m, shape.k}, DataType::bf16, Dims{shape.lda, 1});
    // op(B) is [k, n]: B[n, k] row-major read with strides (1, ldb), or B[k, n] itself.
    mm->weights = dnnl::memory::desc(Dims{shape.k, shape.n}, DataType::bf16,
                                     shape.trans_b ? Dims{1, shape.ldb} : Dims{shape.ldb, 1});
    mm->dst = dnnl::memory::desc(Dims{shape.m, shape.n}, DataType::f32, Dims{shape.ldc, 1});
    // The caller's scratchpad: the library's own is shared, and in-process TP ranks (and the
    // prefill attention's items) run the same primitive at once.
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    if (shape.alpha != 1.0f) attr.set_output_scales(0, {shape.alpha});
    if (shape.accumulate) {
      dnnl::post_ops ops;
      ops.append_sum(1.0f);
      attr.set_post_ops(ops);
    }
    const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(mm->src, mm->weights, mm->dst), attr,
                                          Engine());
    mm->scratchpad = pd.scratchpad_desc();
    mm->primitive = dnnl::matmul(pd);
    slot = std::move(mm);
  }
  return *slot;
}

// Runs `shape` on the calling thread's stream and scratchpad with its current OpenMP team.
void Execute(const MatmulShape& shape, const uint16_t* a, const uint16_t* b, float* c) {
  thread_local std::vector<std::byte> scratch;
  // Destroyed at thread exit, before the function-static engine it was made with.
  thread_local std::unique_ptr<dnnl::stream> stream = std::make_unique<dnnl::stream>(Engine());
  const Matmul& mm = PrimitiveFor(shape);
  dnnl::memory src(mm.src, Engine(), const_cast<uint16_t*>(a));
  dnnl::memory weights(mm.weights, Engine(), const_cast<uint16_t*>(b));
  dnnl::memory dst(mm.dst, Engine(), c);
  scratch.resize(std::max<size_t>(1, mm.scratchpad.get_size()));
  dnnl::memory pad(mm.scratchpad, Engine(), scratch.data());
  mm.primitive.execute(*stream, {{DNNL_ARG_SRC, src},
                                 {DNNL_ARG_WEIGHTS, weights},
                                 {DNNL_ARG_DST, dst},
                                 {DNNL_ARG_SCRATCHPAD, pad}});
  stream->wait();
}

}  // namespace

bool Bf16Matmul(const GemmParams& p) {
  if (!NativeBf16() || p.b_dtype != DType::kBF16 || !p.trans_b || p.alpha != 1.0f ||
      p.beta != 0.0f) {
    return false;
  }
  thread_local std::vector<uint16_t> a16;
  thread_local std::vector<float> c_rows;  // C of a rounded-up m
  // oneDNN's OpenMP team for this thread: its share of the kernel threads (cpu_threads.h).
  const int team = CpuThreadsPerCaller();
  if (omp_get_max_threads() != team) omp_set_num_threads(team);
  for (int r0 = 0; r0 < p.m; r0 += kMaxRowsPerCall) {
    const int m = std::min(kMaxRowsPerCall, p.m - r0);
    const int rows = (m + kRowBucket - 1) / kRowBucket * kRowBucket;
    a16.resize(static_cast<size_t>(rows) * p.k);
    for (int r = 0; r < m; ++r) {
      ConvertFromFloat(p.a + static_cast<long>(r0 + r) * p.lda, DType::kBF16,
                       a16.data() + static_cast<size_t>(r) * p.k, p.k);
    }
    std::fill(a16.begin() + static_cast<size_t>(m) * p.k, a16.end(), uint16_t{0});
    const bool padded = rows != m;
    if (padded) c_rows.resize(static_cast<size_t>(rows) * p.n);
    float* c = p.c + static_cast<long>(r0) * p.ldc;
    const MatmulShape shape{rows, p.n, p.k, p.k, p.ldb, padded ? p.n : p.ldc, true, false, 1.0f};
    Execute(shape, a16.data(), p.b_bf16, padded ? c_rows.data() : c);
    if (padded) {
      for (int r = 0; r < m; ++r) {
        std::copy_n(c_rows.data() + static_cast<size_t>(r) * p.n, p.n,
                    c + static_cast<long>(r) * p.ldc);
      }
    }
  }
  return true;
}

absl::Status TileGemmBf16(bool trans_b, int m, int n, int k, float alpha, const uint16_t* a,
                          int lda, const uint16_t* b, int ldb, bool accumulate, float* c, int ldc) {
  if (m <= 0 || n <= 0 || k <= 0 || lda < k || ldb < (trans_b ? k : n) || ldc < n) {
    return absl::InvalidArgumentError(absl::StrCat("TileGemmBf16: bad shape m=", m, " n=", n, " k=",
                                                   k, " lda=", lda, " ldb=", ldb, " ldc=", ldc));
  }
  // The team size is this thread's own OpenMP setting; Bf16Matmul sets its share back.
  if (omp_get_max_threads() != 1) omp_set_num_threads(1);
  try {
    Execute(MatmulShape{m, n, k, lda, ldb, ldc, trans_b, accumulate, alpha}, a, b, c);
  } catch (const dnnl::error& e) {
    return absl::InternalError(
        absl::StrCat("oneDNN bf16 matmul ", m, "x", n, "x", k, ": ", e.what()));
  }
  return absl::OkStatus();
}

bool HaveTileGemmBf16() { return NativeBf16(); }

const char* Bf16MatmulBackend() {
  if (!NativeBf16()) return "none";
  static const std::string name = [] {
    const dnnl_version_t* v = dnnl_version();
    return "onednn " + std::to_string(v->major) + "." + std::to_string(v->minor) + "." +
           std::to_string(v->patch);
  }();
  return name.c_str();
}

#else

bool Bf16Matmul(const GemmParams&) { return false; }
const char* Bf16MatmulBackend() { return "none"; }
absl::Status TileGemmBf16(bool, int, int, int, float, const uint16_t*, int, const uint16_t*, int,
                          bool, float*, int) {
  return absl::UnimplementedError("TileGemmBf16: built without oneDNN");
}
bool HaveTileGemmBf16() { return false; }

#endif

}  // namespace dapq::kernels::ref
