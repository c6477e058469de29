// File: kernels/cpu_threads.h
// How many threads the CPU kernels use, process-wide: OpenBLAS's, our own loops'
// (kernels/ref/parallel_for.h) and oneDNN's OpenMP team (kernels/ref/bf16_matmul.h).
// `callers` threads that call kernels at the same time (the in-process ranks of a TP engine)
// share them: each oneDNN call gets threads / callers, our loops run inline for a caller that
// finds the pool busy, and OpenBLAS's own pool is shared. The default is every core (or
// OPENBLAS_NUM_THREADS when set).
// Thread-safety: call while no kernel runs (at engine creation); CpuThreads may be read anytime.
#ifndef DAPQ_KERNELS_CPU_THREADS_H_
#define DAPQ_KERNELS_CPU_THREADS_H_

#include <string>

namespace dapq::kernels {

// threads: in all (0: the default); callers: threads calling kernels at once (>= 1).
void SetCpuThreads(int threads, int callers = 1);
// The threads set (or the default), and what each of `callers` concurrent callers gets.
int CpuThreads();
int CpuThreadsPerCaller();

// One line for logs: the vector instruction set our kernels run, what multiplies bf16 at prefill
// sizes, and the threads, e.g. "avx512 kernels, bf16 GEMM onednn 2.6.3, 2 threads".
std::string CpuKernelsSummary();

}  // namespace dapq::kernels

#endif  // DAPQ_KERNELS_CPU_THREADS_H_
