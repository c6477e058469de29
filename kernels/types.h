// File: kernels/types.h
// Types shared by every kernel API: the backend a call runs on, an opaque stream handle, and the
// element types of stored tensors with bf16 conversions.
// No CUDA types: CPU-only builds include every kernel header. A default Stream means the CPU.
#ifndef DAPQ_KERNELS_TYPES_H_
#define DAPQ_KERNELS_TYPES_H_

#include <cstdint>
#include <cstring>

namespace dapq::kernels {

enum class Backend { kCpu = 0, kCuda = 1 };

// Element type of a stored tensor (weights; activations are fp32).
enum class DType { kF32 = 0, kBF16 = 1 };
inline const char* DTypeName(DType t) { return t == DType::kF32 ? "fp32" : "bf16"; }

// bf16: the upper half of an fp32. Conversion rounds to nearest, ties to even; NaN stays NaN.
inline uint16_t FloatToBf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof(bits));
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40u);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}
inline float Bf16ToFloat(uint16_t h) {
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

// Where a kernel runs. For kCuda, `handle` is a cudaStream_t (nullptr = the default stream) and
// every pointer in the params is device memory. For kCpu, `handle` is unused.
struct Stream {
  Backend backend = Backend::kCpu;
  void* handle = nullptr;
};

inline const char* BackendName(Backend b) { return b == Backend::kCpu ? "cpu" : "cuda"; }

}  // namespace dapq::kernels

#endif  // DAPQ_KERNELS_TYPES_H_
