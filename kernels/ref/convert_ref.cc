// File: kernels/ref/convert_ref.cc
// kernels/convert.h on the CPU. fp16 uses the F16C instructions (8 at a time) where the CPU has
// them; bf16 is integer arithmetic the compiler vectorises; both fall back to types.h's scalar
// conversions, which define the results.
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "kernels/convert.h"

namespace dapq::kernels {
namespace {

bool HasF16c() {
  static const bool has = __builtin_cpu_supports("f16c") && __builtin_cpu_supports("avx");
  return has;
}

__attribute__((target("avx,f16c"))) void F16ToFloatF16c(const uint16_t* src, float* dst, long n) {
  long i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i));
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(h));
  }
  for (; i < n; ++i) dst[i] = F16ToFloat(src[i]);
}

__attribute__((target("avx,f16c"))) void FloatToF16F16c(const float* src, uint16_t* dst, long n) {
  long i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), h);
  }
  for (; i < n; ++i) dst[i] = FloatToF16(src[i]);
}

void Bf16ToFloatRow(const uint16_t* src, float* dst, long n) {
  for (long i = 0; i < n; ++i) dst[i] = Bf16ToFloat(src[i]);
}

void FloatToBf16Row(const float* src, uint16_t* dst, long n) {
  for (long i = 0; i < n; ++i) dst[i] = FloatToBf16(src[i]);
}

}  // namespace

void ConvertToFloat(DType type, const void* src, float* dst, long n) {
  if (n <= 0) return;
  if (type == DType::kF32) {
    std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
    return;
  }
  const auto* s = static_cast<const uint16_t*>(src);
  if (type == DType::kBF16) {
    Bf16ToFloatRow(s, dst, n);
  } else if (HasF16c()) {
    F16ToFloatF16c(s, dst, n);
  } else {
    for (long i = 0; i < n; ++i) dst[i] = F16ToFloat(s[i]);
  }
}

void ConvertFromFloat(const float* src, DType type, void* dst, long n) {
  if (n <= 0) return;
  if (type == DType::kF32) {
    std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
    return;
  }
  auto* d = static_cast<uint16_t*>(dst);
  if (type == DType::kBF16) {
    FloatToBf16Row(src, d, n);
  } else if (HasF16c()) {
    FloatToF16F16c(src, d, n);
  } else {
    for (long i = 0; i < n; ++i) d[i] = FloatToF16(src[i]);
  }
}

}  // namespace dapq::kernels
