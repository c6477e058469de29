// File: kernels/ref/cpu_threads.cc
// kernels/cpu_threads.h: OpenBLAS's thread count, the kernel pool's limit, and the per-caller
// share oneDNN calls use (bf16_matmul.cc reads CpuThreadsPerCaller).
#include "kernels/cpu_threads.h"

#include <cblas.h>

#include <algorithm>
#include <atomic>
#include <string>

#include "kernels/ref/bf16_matmul.h"
#include "kernels/ref/cpu_isa.h"
#include "kernels/ref/parallel_for.h"

namespace dapq::kernels {
namespace {

// OpenBLAS's count before anything changed it: OPENBLAS_NUM_THREADS, else the cores.
int DefaultThreads() {
  static const int threads = std::max(1, openblas_get_num_threads());
  return threads;
}

std::atomic<int> g_threads{0}, g_per_caller{0};

}  // namespace

void SetCpuThreads(int threads, int callers) {
  const int total = threads > 0 ? threads : DefaultThreads();
  // The kernel pool first: created on first use at OpenBLAS's count, it must see the default
  // before OpenBLAS is lowered, or a later, larger budget could not be restored.
  ref::SetKernelThreads(total);
  openblas_set_num_threads(total);
  g_threads.store(total, std::memory_order_relaxed);
  g_per_caller.store(std::max(1, total / std::max(1, callers)), std::memory_order_relaxed);
}

int CpuThreads() {
  const int t = g_threads.load(std::memory_order_relaxed);
  return t > 0 ? t : DefaultThreads();
}

std::string CpuKernelsSummary() {
  return std::string(ref::IsaName(ref::CpuIsa())) + " kernels, bf16 GEMM " +
         (std::string(ref::Bf16MatmulBackend()) == "none" ? "widened to fp32 for OpenBLAS"
                                                          : ref::Bf16MatmulBackend()) +
         ", " + std::to_string(CpuThreads()) + " threads";
}

int CpuThreadsPerCaller() {
  const int t = g_per_caller.load(std::memory_order_relaxed);
  return t > 0 ? t : DefaultThreads();
}

}  // namespace dapq::kernels
