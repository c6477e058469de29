// File: kernels/types.h
// Types shared by every kernel API: the backend a call runs on and an opaque stream handle.
// No CUDA types: CPU-only builds include every kernel header. A default Stream means the CPU.
#ifndef DAPQ_KERNELS_TYPES_H_
#define DAPQ_KERNELS_TYPES_H_

namespace dapq::kernels {

enum class Backend { kCpu = 0, kCuda = 1 };

// Where a kernel runs. For kCuda, `handle` is a cudaStream_t (nullptr = the default stream) and
// every pointer in the params is device memory. For kCpu, `handle` is unused.
struct Stream {
  Backend backend = Backend::kCpu;
  void* handle = nullptr;
};

inline const char* BackendName(Backend b) { return b == Backend::kCpu ? "cpu" : "cuda"; }

}  // namespace dapq::kernels

#endif  // DAPQ_KERNELS_TYPES_H_
