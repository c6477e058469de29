// File: kernels/ref/bf16_matmul.cc
// oneDNN matmul: src [m, k] bf16 (the fp32 activations rounded, contiguous), weights the [n, k]
// row-major bf16 matrix described to oneDNN as [k, n] with strides (1, ldb), dst [m, n] fp32
// with row stride ldc. Creating a primitive compiles its kernels (17-170 ms per shape here), so m
// is rounded up to a multiple of kRowBucket (zero rows in, the extra rows of C dropped): prompts
// of every length then share a bounded set of primitives, created on first use and kept. Each
// call runs with the calling thread's own scratchpad.
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

#include "kernels/convert.h"
#include "kernels/cpu_threads.h"
#endif

namespace dapq::kernels::ref {

#if DAPQ_HAVE_DNNL
namespace {

using Dims = dnnl::memory::dims;
using DataType = dnnl::memory::data_type;
using Shape = std::tuple<int, int, int, int, int>;  // m, n, k, ldb, ldc

constexpr int kRowBucket = 64;

dnnl::engine& Engine() {
  static dnnl::engine* engine = new dnnl::engine(dnnl::engine::kind::cpu, 0);
  return *engine;
}

struct Matmul {
  dnnl::memory::desc src, weights, dst, scratchpad;
  dnnl::matmul primitive;
};

// p's primitive for `rows` rows of A (m rounded up) and C's row stride `ldc`.
const Matmul& PrimitiveFor(const GemmParams& p, int rows, int ldc) {
  static std::mutex mu;
  static std::map<Shape, std::unique_ptr<Matmul>>* cache =
      new std::map<Shape, std::unique_ptr<Matmul>>();
  const Shape shape{rows, p.n, p.k, p.ldb, ldc};
  std::lock_guard<std::mutex> lock(mu);
  std::unique_ptr<Matmul>& slot = (*cache)[shape];
  if (slot == nullptr) {
    auto mm = std::make_unique<Matmul>();
    mm->src = dnnl::memory::desc(Dims{rows, p.k}, DataType::bf16, Dims{p.k, 1});
    mm->weights = dnnl::memory::desc(Dims{p.k, p.n}, DataType::bf16, Dims{1, p.ldb});
    mm->dst = dnnl::memory::desc(Dims{rows, p.n}, DataType::f32, Dims{ldc, 1});
    // The caller's scratchpad: the library's own is shared, and in-process TP ranks run the
    // same primitive at once.
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(mm->src, mm->weights, mm->dst), attr,
                                          Engine());
    mm->scratchpad = pd.scratchpad_desc();
    mm->primitive = dnnl::matmul(pd);
    slot = std::move(mm);
  }
  return *slot;
}

}  // namespace

bool Bf16Matmul(const GemmParams& p) {
  if (p.b_dtype != DType::kBF16 || !p.trans_b || p.alpha != 1.0f || p.beta != 0.0f) return false;
  thread_local std::vector<uint16_t> a16;
  thread_local std::vector<float> c_rows;  // C of a rounded-up m
  thread_local std::vector<std::byte> scratch;
  // Destroyed at thread exit, before the function-static engine it was made with.
  thread_local std::unique_ptr<dnnl::stream> stream = std::make_unique<dnnl::stream>(Engine());
  // oneDNN's OpenMP team for this thread: its share of the kernel threads (cpu_threads.h).
  const int team = CpuThreadsPerCaller();
  if (omp_get_max_threads() != team) omp_set_num_threads(team);
  const int rows = (p.m + kRowBucket - 1) / kRowBucket * kRowBucket;
  a16.resize(static_cast<size_t>(rows) * p.k);
  for (int r = 0; r < p.m; ++r) {
    ConvertFromFloat(p.a + static_cast<long>(r) * p.lda, DType::kBF16,
                     a16.data() + static_cast<size_t>(r) * p.k, p.k);
  }
  std::fill(a16.begin() + static_cast<size_t>(p.m) * p.k, a16.end(), uint16_t{0});
  const bool padded = rows != p.m;
  if (padded) c_rows.resize(static_cast<size_t>(rows) * p.n);
  const Matmul& mm = PrimitiveFor(p, rows, padded ? p.n : p.ldc);
  dnnl::memory src(mm.src, Engine(), a16.data());
  dnnl::memory weights(mm.weights, Engine(), const_cast<uint16_t*>(p.b_bf16));
  dnnl::memory dst(mm.dst, Engine(), padded ? c_rows.data() : p.c);
  scratch.resize(std::max<size_t>(1, mm.scratchpad.get_size()));
  dnnl::memory pad(mm.scratchpad, Engine(), scratch.data());
  mm.primitive.execute(*stream, {{DNNL_ARG_SRC, src},
                                 {DNNL_ARG_WEIGHTS, weights},
                                 {DNNL_ARG_DST, dst},
                                 {DNNL_ARG_SCRATCHPAD, pad}});
  stream->wait();
  if (padded) {
    for (int r = 0; r < p.m; ++r) {
      std::copy_n(c_rows.data() + static_cast<size_t>(r) * p.n, p.n,
                  p.c + static_cast<long>(r) * p.ldc);
    }
  }
  return true;
}

const char* Bf16MatmulBackend() {
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

#endif

}  // namespace dapq::kernels::ref
