// File: tests/fuzz/clang14_cpu_supports.h
// Force-included (-include) into dapq_kernels by tests/fuzz/CMakeLists.txt when clang is older
// than 16, in the DAPQ_FUZZ build only: clang 14's __builtin_cpu_supports rejects "f16c" (GCC
// and newer clang accept it), which kernels/ref/cpu_isa.cc and kernels/ref/convert_ref.cc ask for.
// The macro below routes every __builtin_cpu_supports of those files through CpuSupports, which
// reads F16C from CPUID leaf 1 and passes the other names on to the builtin.
#ifndef DAPQ_TESTS_FUZZ_CLANG14_CPU_SUPPORTS_H_
#define DAPQ_TESTS_FUZZ_CLANG14_CPU_SUPPORTS_H_

#include <cpuid.h>

#include <cstring>

namespace dapq_fuzz_compat {

inline bool CpuSupports(const char* feature) {
  if (std::strcmp(feature, "f16c") == 0) {
    unsigned a = 0, b = 0, c = 0, d = 0;
    return __get_cpuid(1, &a, &b, &c, &d) != 0 && (c & bit_F16C) != 0;
  }
  if (std::strcmp(feature, "avx") == 0) return __builtin_cpu_supports("avx");
  if (std::strcmp(feature, "avx2") == 0) return __builtin_cpu_supports("avx2");
  if (std::strcmp(feature, "fma") == 0) return __builtin_cpu_supports("fma");
  if (std::strcmp(feature, "avx512f") == 0) return __builtin_cpu_supports("avx512f");
  return false;
}

}  // namespace dapq_fuzz_compat

#define __builtin_cpu_supports(feature) ::dapq_fuzz_compat::CpuSupports(feature)

#endif  // DAPQ_TESTS_FUZZ_CLANG14_CPU_SUPPORTS_H_
