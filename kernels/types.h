// File: kernels/types.h
// Types shared by every kernel API: the backend a call runs on, an opaque stream handle, and the
// element types of stored tensors with their scalar conversions (kernels/convert.h converts
// whole rows, vectorised).
// No CUDA types: CPU-only builds include every kernel header. A default Stream means the CPU.
#ifndef DAPQ_KERNELS_TYPES_H_
#define DAPQ_KERNELS_TYPES_H_

#include <cstdint>
#include <cstring>

namespace dapq::kernels {

enum class Backend { kCpu = 0, kCuda = 1 };

// Element type of a stored tensor (weights, the KV cache; activations are fp32).
enum class DType { kF32 = 0, kBF16 = 1, kF16 = 2 };
inline const char* DTypeName(DType t) {
  return t == DType::kF32 ? "fp32" : t == DType::kBF16 ? "bf16" : "fp16";
}
inline int DTypeSize(DType t) { return t == DType::kF32 ? 4 : 2; }

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

// IEEE binary16. Conversion rounds to nearest, ties to even; values past 65504 (from 65520 on)
// become infinities, values under 2^-24 gradual subnormals or zero; NaN stays NaN.
inline uint16_t FloatToF16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof(bits));
  const uint32_t sign = (bits >> 16) & 0x8000u;
  const uint32_t abs = bits & 0x7fffffffu;
  if (abs > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u | ((abs >> 13) & 0x3ffu));
  if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // rounds past 65504
  if (abs >= 0x38800000u) {  // a normal fp16 (>= 2^-14): rebias the exponent, round 13 bits
    uint32_t r = abs - ((127u - 15u) << 23);
    r += 0xfffu + ((r >> 13) & 1u);
    return static_cast<uint16_t>(sign | (r >> 13));
  }
  // Subnormal or zero: adding 0.5 makes the float unit at this magnitude 2^-24, the fp16
  // subnormal step, so the hardware's rounding (to nearest, ties to even) is the fp16 rounding.
  float magnitude;
  std::memcpy(&magnitude, &abs, sizeof(magnitude));
  magnitude += 0.5f;
  uint32_t m;
  std::memcpy(&m, &magnitude, sizeof(m));
  return static_cast<uint16_t>(sign | (m - 0x3f000000u));
}
inline float F16ToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1fu;
  const uint32_t mantissa = h & 0x3ffu;
  uint32_t bits;
  if (exponent == 0x1f) {
    bits = sign | 0x7f800000u | (mantissa << 13);  // inf, or NaN with its payload
  } else if (exponent != 0) {
    bits = sign | ((exponent + 127 - 15) << 23) | (mantissa << 13);
  } else {
    // Zero or subnormal: mantissa x 2^-24, exact in fp32.
    float magnitude = static_cast<float>(mantissa) * 5.9604644775390625e-8f;
    std::memcpy(&bits, &magnitude, sizeof(bits));
    bits |= sign;
  }
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
