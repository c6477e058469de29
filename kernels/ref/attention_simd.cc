// File: kernels/ref/attention_simd.cc
// attention_simd.h for each instruction set: the vector operations of AVX-512F (16 lanes) and
// AVX2+FMA+F16C (8 lanes) with attention_simd.inc's loops over them, and a portable version
// with the same structure on scalars; dispatched on cpu_isa.h's level.
// The exponential is the Cephes single-precision one (range reduction by ln 2 in two parts, a
// degree-6 polynomial, scaling by 2^n through the exponent bits; about 1 ulp); arguments under
// -87.3 give 0, as expf's result would be subnormal there.
#include "kernels/ref/attention_simd.h"

#include <immintrin.h>

// GCC 12's AVX-512 intrinsics headers warn about their own _mm512_undefined_* placeholders
// wherever they inline (GCC bug 105593); nothing in this file is uninitialised.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "kernels/paged_index.h"
#include "kernels/ref/cpu_isa.h"

namespace dapq::kernels::ref {
namespace {

constexpr float kExpHi = 88.3762626647949f;
constexpr float kExpLo = -87.3365447504f;  // below: exp underflows to a subnormal; we return 0
constexpr float kLog2e = 1.44269504088896341f;
constexpr float kLn2Hi = 0.693359375f;
constexpr float kLn2Lo = -2.12194440e-4f;
constexpr float kP0 = 1.9875691500e-4f, kP1 = 1.3981999507e-3f, kP2 = 8.3334519073e-3f,
                kP3 = 4.1665795894e-2f, kP4 = 1.6666665459e-1f, kP5 = 5.0000001201e-1f;

// Folds one decode chunk's row max and sum of exponentials (against that max) into the running
// ones of its query (first: the first chunk, which starts them). Returns the factor the output
// so far must be scaled by (1: unchanged; smaller when this chunk's max leads) and sets
// *weight, the factor for this chunk's own weighted values: the side with the smaller max is
// scaled down, as flash-decoding merges split parts. Every instruction set's decode uses it.
float MergeChunk(float max, float sum, bool first, float* run_max, float* run_sum, float* weight) {
  if (first) {
    *run_max = max;
    *run_sum = sum;
    *weight = 1.0f;
    return 1.0f;
  }
  if (max > *run_max) {
    const float r = std::exp(*run_max - max);
    *run_sum = std::fma(*run_sum, r, sum);
    *run_max = max;
    *weight = 1.0f;
    return r;
  }
  *weight = std::exp(max - *run_max);
  *run_sum = std::fma(sum, *weight, *run_sum);
  return 1.0f;
}

namespace avx512 {
#define DAPQ_SIMD __attribute__((target("avx512f,fma")))
struct V {
  using Reg = __m512;
  static constexpr int kWidth = 16;
  DAPQ_SIMD static Reg Zero() { return _mm512_setzero_ps(); }
  DAPQ_SIMD static Reg Set(float x) { return _mm512_set1_ps(x); }
  DAPQ_SIMD static Reg Load(const float* p) { return _mm512_loadu_ps(p); }
  DAPQ_SIMD static Reg LoadBf16(const uint16_t* p) {
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  }
  DAPQ_SIMD static Reg LoadF16(const uint16_t* p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
  DAPQ_SIMD static void Store(float* p, Reg x) { _mm512_storeu_ps(p, x); }
  // x (finite) rounded to bf16, to nearest even, still in fp32 lanes.
  DAPQ_SIMD static Reg RoundBf16(Reg x) {
    const __m512i b = _mm512_castps_si512(x);
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(b, 16), _mm512_set1_epi32(1));
    const __m512i r = _mm512_add_epi32(b, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff)));
    return _mm512_castsi512_ps(_mm512_and_si512(r, _mm512_set1_epi32(~0xffff)));
  }
  // The bf16 halves of x's lanes (x bf16-exact, as RoundBf16 gives) to p[0..kWidth).
  DAPQ_SIMD static void StoreBf16(uint16_t* p, Reg x) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p),
                        _mm512_cvtepi32_epi16(_mm512_srli_epi32(_mm512_castps_si512(x), 16)));
  }
  DAPQ_SIMD static Reg Fma(Reg a, Reg b, Reg c) { return _mm512_fmadd_ps(a, b, c); }
  DAPQ_SIMD static Reg Add(Reg a, Reg b) { return _mm512_add_ps(a, b); }
  DAPQ_SIMD static Reg Mul(Reg a, Reg b) { return _mm512_mul_ps(a, b); }
  DAPQ_SIMD static Reg Max(Reg a, Reg b) { return _mm512_max_ps(a, b); }
  DAPQ_SIMD static float ReduceAdd(Reg x) { return _mm512_reduce_add_ps(x); }
  DAPQ_SIMD static float ReduceMax(Reg x) { return _mm512_reduce_max_ps(x); }
  // Element i of the result is the sum of x[i]'s 16 elements, for i < kTile: pairs of vectors
  // interleaved and added, then quads, then the 128-bit lanes; every x[i] takes the same
  // additions ((e0 + e2) + (e1 + e3) within a lane, then (l0 + l1) + (l2 + l3)).
  static constexpr int kTile = 16;
  // (Written out without loops or arrays: GCC then keeps the tile's sums in registers.)
  DAPQ_SIMD static Reg AddPair(Reg a, Reg b) {
    return _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
  }
  DAPQ_SIMD static Reg AddQuad(Reg a, Reg b) {
    const __m512d lo = _mm512_castps_pd(a), hi = _mm512_castps_pd(b);
    return _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(lo, hi)),
                         _mm512_castpd_ps(_mm512_unpackhi_pd(lo, hi)));
  }
  DAPQ_SIMD static Reg AddLanes(Reg a, Reg b) {
    return _mm512_add_ps(_mm512_shuffle_f32x4(a, b, 0x88), _mm512_shuffle_f32x4(a, b, 0xDD));
  }
  DAPQ_SIMD __attribute__((always_inline)) static Reg TransposeSum(const Reg* x) {
    const Reg q0 = AddQuad(AddPair(x[0], x[1]), AddPair(x[2], x[3]));
    const Reg q1 = AddQuad(AddPair(x[4], x[5]), AddPair(x[6], x[7]));
    const Reg q2 = AddQuad(AddPair(x[8], x[9]), AddPair(x[10], x[11]));
    const Reg q3 = AddQuad(AddPair(x[12], x[13]), AddPair(x[14], x[15]));
    // q_i's lane l holds lane l's partial sums of x[4i..4i+4); add the lanes pairwise.
    return AddLanes(AddLanes(q0, q1), AddLanes(q2, q3));
  }
  DAPQ_SIMD static Reg Exp(Reg x) {
    const __mmask16 live = _mm512_cmp_ps_mask(x, _mm512_set1_ps(kExpLo), _CMP_GE_OQ);
    x = _mm512_min_ps(x, _mm512_set1_ps(kExpHi));
    x = _mm512_max_ps(x, _mm512_set1_ps(kExpLo));
    const Reg n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(kLog2e)),
                                       _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    x = _mm512_fnmadd_ps(n, _mm512_set1_ps(kLn2Hi), x);
    x = _mm512_fnmadd_ps(n, _mm512_set1_ps(kLn2Lo), x);
    Reg y = _mm512_set1_ps(kP0);
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(kP1));
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(kP2));
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(kP3));
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(kP4));
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(kP5));
    y = _mm512_fmadd_ps(y, _mm512_mul_ps(x, x), _mm512_add_ps(x, _mm512_set1_ps(1.0f)));
    const __m512i e =
        _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
    return _mm512_maskz_mul_ps(live, y, _mm512_castsi512_ps(e));
  }
};
#include "kernels/ref/attention_simd.inc"
#undef DAPQ_SIMD
}  // namespace avx512

namespace avx2 {
#define DAPQ_SIMD __attribute__((target("avx2,fma,f16c")))
struct V {
  using Reg = __m256;
  static constexpr int kWidth = 8;
  DAPQ_SIMD static Reg Zero() { return _mm256_setzero_ps(); }
  DAPQ_SIMD static Reg Set(float x) { return _mm256_set1_ps(x); }
  DAPQ_SIMD static Reg Load(const float* p) { return _mm256_loadu_ps(p); }
  DAPQ_SIMD static Reg LoadBf16(const uint16_t* p) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
  DAPQ_SIMD static Reg LoadF16(const uint16_t* p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  DAPQ_SIMD static void Store(float* p, Reg x) { _mm256_storeu_ps(p, x); }
  // See the AVX-512 V.
  DAPQ_SIMD static Reg RoundBf16(Reg x) {
    const __m256i b = _mm256_castps_si256(x);
    const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(b, 16), _mm256_set1_epi32(1));
    const __m256i r = _mm256_add_epi32(b, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff)));
    return _mm256_castsi256_ps(_mm256_and_si256(r, _mm256_set1_epi32(~0xffff)));
  }
  DAPQ_SIMD static void StoreBf16(uint16_t* p, Reg x) {
    const __m256i h = _mm256_srli_epi32(_mm256_castps_si256(x), 16);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p),
                     _mm_packus_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1)));
  }
  DAPQ_SIMD static Reg Fma(Reg a, Reg b, Reg c) { return _mm256_fmadd_ps(a, b, c); }
  DAPQ_SIMD static Reg Add(Reg a, Reg b) { return _mm256_add_ps(a, b); }
  DAPQ_SIMD static Reg Mul(Reg a, Reg b) { return _mm256_mul_ps(a, b); }
  DAPQ_SIMD static Reg Max(Reg a, Reg b) { return _mm256_max_ps(a, b); }
  DAPQ_SIMD static float ReduceAdd(Reg x) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  DAPQ_SIMD static float ReduceMax(Reg x) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  // Element i of the result is the sum of x[i]'s 8 elements, for i < kTile, every x[i] through
  // the same additions ((e0 + e2) + (e1 + e3) within a 128-bit lane, then the two lanes).
  static constexpr int kTile = 8;
  DAPQ_SIMD __attribute__((always_inline)) static Reg TransposeSum(const Reg* x) {
    Reg pairs[4], quads[2];
    for (int i = 0; i < 4; ++i) {
      pairs[i] = _mm256_add_ps(_mm256_unpacklo_ps(x[2 * i], x[2 * i + 1]),
                               _mm256_unpackhi_ps(x[2 * i], x[2 * i + 1]));
    }
    for (int i = 0; i < 2; ++i) {
      const __m256d lo = _mm256_castps_pd(pairs[2 * i]), hi = _mm256_castps_pd(pairs[2 * i + 1]);
      quads[i] = _mm256_add_ps(_mm256_castpd_ps(_mm256_unpacklo_pd(lo, hi)),
                               _mm256_castpd_ps(_mm256_unpackhi_pd(lo, hi)));
    }
    return _mm256_add_ps(_mm256_permute2f128_ps(quads[0], quads[1], 0x20),
                         _mm256_permute2f128_ps(quads[0], quads[1], 0x31));
  }
  DAPQ_SIMD static Reg Exp(Reg x) {
    const Reg live = _mm256_cmp_ps(x, _mm256_set1_ps(kExpLo), _CMP_GE_OQ);
    x = _mm256_min_ps(x, _mm256_set1_ps(kExpHi));
    x = _mm256_max_ps(x, _mm256_set1_ps(kExpLo));
    const Reg n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(kLog2e)),
                                  _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    x = _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2Hi), x);
    x = _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2Lo), x);
    Reg y = _mm256_set1_ps(kP0);
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(kP1));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(kP2));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(kP3));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(kP4));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(kP5));
    y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
    const __m256i e =
        _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_and_ps(_mm256_mul_ps(y, _mm256_castsi256_ps(e)), live);
  }
};
#include "kernels/ref/attention_simd.inc"
#undef DAPQ_SIMD
}  // namespace avx2

// Portable: the same loops on one float at a time (std::exp; dot products in 8 interleaved
// partial sums, which the compiler vectorises without reassociating).
namespace portable {

template <DType kType>
float At(const void* rows, long i) {
  if constexpr (kType == DType::kF32) {
    return static_cast<const float*>(rows)[i];
  } else if constexpr (kType == DType::kBF16) {
    return Bf16ToFloat(static_cast<const uint16_t*>(rows)[i]);
  } else {
    return F16ToFloat(static_cast<const uint16_t*>(rows)[i]);
  }
}

// Slot s's row (keys when !values) as an element offset and base.
long RowOffset(const DecodeHeadArgs& a, int s) {
  if (a.table == nullptr) return static_cast<long>(s) * a.head_dim;
  return PagedSlot(a.table, s, a.tokens_per_block, a.block_stride, a.head_dim);
}

// Scores of slots c0..c1 for every query into a.scores[g * (c1 - c0) + j - c0].
template <DType kType>
void Scores(const DecodeHeadArgs& a, int c0, int c1) {
  const int d = a.head_dim;
  for (int j = c0; j < c1; ++j) {
    const long row = RowOffset(a, j);
    for (int g = 0; g < a.group; ++g) {
      const float* q = a.q + static_cast<long>(g) * d;
      float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      int i = 0;
      for (; i + 8 <= d; i += 8) {
        for (int l = 0; l < 8; ++l) acc[l] += q[i + l] * At<kType>(a.k, row + i + l);
      }
      float s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
      for (; i < d; ++i) s += q[i] * At<kType>(a.k, row + i);
      a.scores[static_cast<long>(g) * (c1 - c0) + (j - c0)] = a.scale * s;
    }
  }
}

// attention_simd.inc's DecodeHeadT on scalars: chunks of kDecodeChunkSlots slots merged alike.
template <DType kType>
void DecodeHeadT(const DecodeHeadArgs& a) {
  const int d = a.head_dim;
  float* run_max = a.stats;
  float* weight = a.stats + a.group;
  for (int c0 = 0; c0 < a.len; c0 += kDecodeChunkSlots) {
    const int c1 = std::min(a.len, c0 + kDecodeChunkSlots), n = c1 - c0;
    Scores<kType>(a, c0, c1);
    for (int g = 0; g < a.group; ++g) {
      float* row = a.scores + static_cast<long>(g) * n;
      const float max = RowMax(row, n);
      const float sum = ExpShiftedSum(row, n, max);
      const float r = MergeChunk(max, sum, c0 == 0, &run_max[g], &a.inv_sums[g], &weight[g]);
      if (r != 1.0f) {
        for (int i = 0; i < d; ++i) a.out[static_cast<long>(g) * d + i] *= r;
      }
      std::fill(a.acc + static_cast<long>(g) * d, a.acc + static_cast<long>(g + 1) * d, 0.0f);
    }
    for (int j = c0; j < c1; ++j) {
      const long row = RowOffset(a, j);
      for (int g = 0; g < a.group; ++g) {
        const float w = a.scores[static_cast<long>(g) * n + (j - c0)];
        float* acc = a.acc + static_cast<long>(g) * d;
        for (int i = 0; i < d; ++i) acc[i] += w * At<kType>(a.v, row + i);
      }
    }
    for (int g = 0; g < a.group; ++g) {
      const float* acc = a.acc + static_cast<long>(g) * d;
      float* out = a.out + static_cast<long>(g) * d;
      for (int i = 0; i < d; ++i) out[i] = c0 == 0 ? acc[i] : std::fma(acc[i], weight[g], out[i]);
    }
  }
  for (int g = 0; g < a.group; ++g) {
    a.inv_sums[g] = 1.0f / a.inv_sums[g];
    if (a.row_max != nullptr) a.row_max[g] = run_max[g];
    for (int i = 0; i < d; ++i) a.out[static_cast<long>(g) * d + i] *= a.inv_sums[g];
  }
}

}  // namespace portable
}  // namespace

void DecodeHead(const DecodeHeadArgs& a) {
  switch (CpuIsa()) {
    case Isa::kAvx512:
      return avx512::DecodeHeadV(a);
    case Isa::kAvx2:
      return avx2::DecodeHeadV(a);
    default:
      break;
  }
  switch (a.dtype) {
    case DType::kBF16:
      return portable::DecodeHeadT<DType::kBF16>(a);
    case DType::kF16:
      return portable::DecodeHeadT<DType::kF16>(a);
    default:
      return portable::DecodeHeadT<DType::kF32>(a);
  }
}

float ExpShiftedSum(float* x, int n, float shift) {
  switch (CpuIsa()) {
    case Isa::kAvx512:
      return avx512::ExpShiftedSumV(x, n, shift);
    case Isa::kAvx2:
      return avx2::ExpShiftedSumV(x, n, shift);
    default:
      break;
  }
  float sum = 0.0f;
  for (int i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - shift);
    sum += x[i];
  }
  return sum;
}

float ExpShiftedSumBf16(const float* x, int n, float shift, uint16_t* out) {
  switch (CpuIsa()) {
    case Isa::kAvx512:
      return avx512::ExpShiftedSumBf16V(x, n, shift, out);
    case Isa::kAvx2:
      return avx2::ExpShiftedSumBf16V(x, n, shift, out);
    default:
      break;
  }
  float sum = 0.0f;
  for (int i = 0; i < n; ++i) {
    out[i] = FloatToBf16(std::exp(x[i] - shift));
    sum += Bf16ToFloat(out[i]);
  }
  return sum;
}

float RowMax(const float* x, int n) {
  switch (CpuIsa()) {
    case Isa::kAvx512:
      return avx512::RowMaxV(x, n);
    case Isa::kAvx2:
      return avx2::RowMaxV(x, n);
    default:
      break;
  }
  float m = x[0];
  for (int i = 1; i < n; ++i) m = x[i] > m ? x[i] : m;
  return m;
}

}  // namespace dapq::kernels::ref
