// File: kernels/ref/convert_ref.cc
// kernels/convert.h on the CPU. fp16 uses the F16C instructions (8 at a time) where the CPU has
// them; bf16 is integer arithmetic, 16 lanes at a time with AVX-512 (rounding bf16 activations
// for oneDNN is a prefill's largest non-GEMM cost), else as the compiler vectorises it; both
// fall back to types.h's scalar conversions, which define the results.
#include <immintrin.h>

// GCC 12's AVX-512 intrinsics headers warn about their own _mm512_undefined_* placeholders
// wherever they inline (GCC bug 105593); nothing in this file is uninitialised.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

#include <cstdint>
#include <cstring>

#include "kernels/convert.h"
#include "kernels/ref/cpu_isa.h"

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

// types.h's FloatToBf16 on 16 lanes: round to nearest even, NaN kept quiet.
__attribute__((target("avx512f"))) void FloatToBf16Avx512(const float* src, uint16_t* dst, long n) {
  const __m512i abs_mask = _mm512_set1_epi32(0x7fffffff);
  const __m512i inf = _mm512_set1_epi32(0x7f800000);
  const __m512i one = _mm512_set1_epi32(1), half = _mm512_set1_epi32(0x7fff);
  const __m512i quiet = _mm512_set1_epi32(0x40);
  long i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512i bits = _mm512_loadu_si512(src + i);
    const __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(bits, abs_mask), inf);
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(bits, 16), one);
    __m512i h = _mm512_srli_epi32(_mm512_add_epi32(bits, _mm512_add_epi32(half, lsb)), 16);
    h = _mm512_mask_or_epi32(h, nan, _mm512_srli_epi32(bits, 16), quiet);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), _mm512_cvtepi32_epi16(h));
  }
  for (; i < n; ++i) dst[i] = FloatToBf16(src[i]);
}

void FloatToBf16Row(const float* src, uint16_t* dst, long n) {
  if (ref::CpuIsa() == ref::Isa::kAvx512) return FloatToBf16Avx512(src, dst, n);
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
