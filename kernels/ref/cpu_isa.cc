// File: kernels/ref/cpu_isa.cc
// Run-time instruction-set detection (GCC's __builtin_cpu_supports) and the testing override.
#include "kernels/ref/cpu_isa.h"

#include <algorithm>
#include <atomic>

namespace dapq::kernels::ref {
namespace {

Isa Detect() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return Isa::kAvx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
      __builtin_cpu_supports("f16c")) {
    return Isa::kAvx2;
  }
  return Isa::kNone;
}

std::atomic<int>& Current() {
  static std::atomic<int> isa{static_cast<int>(DetectedIsa())};
  return isa;
}

}  // namespace

Isa DetectedIsa() {
  static const Isa isa = Detect();
  return isa;
}

Isa CpuIsa() { return static_cast<Isa>(Current().load(std::memory_order_relaxed)); }

const char* IsaName(Isa isa) {
  switch (isa) {
    case Isa::kAvx512:
      return "avx512";
    case Isa::kAvx2:
      return "avx2";
    default:
      return "none";
  }
}

void ForceIsaForTesting(Isa isa) {
  const int level = std::min(static_cast<int>(isa), static_cast<int>(DetectedIsa()));
  Current().store(level, std::memory_order_relaxed);
}

}  // namespace dapq::kernels::ref
