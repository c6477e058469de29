// File: kernels/ref/cpu_isa.h
// Which vector instruction set the CPU kernels use: AVX-512F, AVX2 with FMA and F16C, or none
// (portable C++), detected once at run time. The builds carry no -march flag, so every
// instruction-set-specific function is compiled with a target attribute and chosen here.
// Tests may force a lower level to check each implementation against the others on one machine.
// Thread-safety: thread-safe (an atomic).
#ifndef DAPQ_KERNELS_REF_CPU_ISA_H_
#define DAPQ_KERNELS_REF_CPU_ISA_H_

namespace dapq::kernels::ref {

enum class Isa { kNone = 0, kAvx2 = 1, kAvx512 = 2 };

// The level in use: the CPU's best, or lower when forced.
Isa CpuIsa();
// The CPU's best level, whatever is forced.
Isa DetectedIsa();
const char* IsaName(Isa isa);  // "none", "avx2", "avx512"

// Makes CpuIsa() return min(isa, DetectedIsa()) until called again (tests and benchmarks only).
void ForceIsaForTesting(Isa isa);

}  // namespace dapq::kernels::ref

#endif  // DAPQ_KERNELS_REF_CPU_ISA_H_
