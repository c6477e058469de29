// File: kernels/ref/parallel_for.h
// A small persistent pool for the CPU kernels' own loops (the small-m GEMM): ParallelFor splits
// [0, n) into one contiguous range per thread and runs them on the pool's workers and the
// calling thread. The pool has as many threads as OpenBLAS uses (OPENBLAS_NUM_THREADS, else the
// cores), so our kernels and OpenBLAS's share one budget. When another thread is already running
// a loop on the pool (in-process TP ranks each calling kernels), the caller runs its whole range
// itself: ranks then partition the cores instead of oversubscribing them.
// Thread-safety: ParallelFor may be called from any thread.
#ifndef DAPQ_KERNELS_REF_PARALLEL_FOR_H_
#define DAPQ_KERNELS_REF_PARALLEL_FOR_H_

#include <functional>

namespace dapq::kernels::ref {

// Calls fn(begin, end) over disjoint ranges covering [0, n); each index is handled exactly once,
// by one thread. Returns when all ranges are done.
void ParallelFor(int n, const std::function<void(int, int)>& fn);

// Threads ParallelFor uses at most (the caller included).
int KernelThreads();
// Lowers (or restores) that number, between 1 and the pool's size (kernels/cpu_threads.h).
void SetKernelThreads(int threads);

}  // namespace dapq::kernels::ref

#endif  // DAPQ_KERNELS_REF_PARALLEL_FOR_H_
