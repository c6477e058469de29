// File: kernels/ref/small_gemm.cc
// SmallGemm: register tiles of R weight rows x M activation rows (AVX-512: 4 x 6 accumulators;
// AVX2: 4 x 2), k streamed in vector steps with a zero-padded tail, one horizontal sum per
// output; weight-row tiles split over the kernel threads (at m <= 2, four long sequential
// streams per thread: RunRows). Weights are fp32 or bf16 (widened in registers). AVX-512 widens
// bf16 without a shuffle: one 64-byte load of 32 weights gives the even-indexed ones (a shift into
// the upper half of each lane) and the odd-indexed ones (a mask), against activations split the
// same way once per call (DeinterleavedActivations).
#include "kernels/ref/small_gemm.h"

#include <immintrin.h>

// GCC 12's AVX-512 intrinsics headers warn about their own _mm512_undefined_* placeholders
// wherever they inline (GCC bug 105593); nothing in this file is uninitialised.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

#include <algorithm>
#include <type_traits>
#include <vector>

#include "kernels/ref/cpu_isa.h"
#include "kernels/ref/parallel_for.h"

namespace dapq::kernels::ref {
namespace {

// Below this many multiply-adds one thread does the whole product (waking the pool costs more).
constexpr long kParallelFmas = 1L << 20;

// ---------------------------------------------------------------- AVX-512

// How far ahead in a weight row the next cache line is requested (a hint; reading past the row's
// end, or past the matrix, is harmless).
constexpr int kPrefetchBytes = 2048;

// The line a bf16 weight row requests while its tile reads element kk: kPrefetchBytes further
// along the row or, within the row's last kPrefetchBytes, as far into the same row of the next
// tile (`next` elements on), so that a tile starts with its first lines on their way (a decode's
// rows of 4096 bf16 weights are 8 KiB: a quarter of each would otherwise start cold). fp32 rows
// prefetch kPrefetchBytes ahead in memory, which in a decode's tiles (RunRows) is the next row of
// the same stream; in tiles of consecutive rows, chaining them measured 12-17% slower.
inline const char* PrefetchLine(const uint16_t* b, long ldb, long next, int k, int r, int kk) {
  const int at = kk + kPrefetchBytes / static_cast<int>(sizeof(uint16_t));
  return reinterpret_cast<const char*>(at < k ? b + r * ldb + at : b + r * ldb + next + (at - k));
}

// 16 weights widened to fp32: loaded as they are (fp32) or shifted into the upper half (bf16).
__attribute__((target("avx512f"))) inline __m512 Load512(const float* p) {
  return _mm512_loadu_ps(p);
}
__attribute__((target("avx512f"))) inline __m512 Load512(const uint16_t* p) {
  const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
// The k tail (n < 16 elements), zero-padded.
template <typename T>
__attribute__((target("avx512f"))) inline __m512 LoadTail512(const T* p, int n) {
  T buf[16] = {};
  for (int j = 0; j < n; ++j) buf[j] = p[j];
  return Load512(buf);
}

// bf16 steps of 32 weights: the even-indexed weights of a 64-byte load against the first 16
// activations of the step's de-interleaved block, then the odd-indexed ones against the rest.
template <int R, int M>
__attribute__((target("avx512f"))) inline int PairSteps512(const float* a, long lda,
                                                           const uint16_t* b, long ldb, long next,
                                                           int k, __m512 (&acc)[R][M]) {
  const __m512i odd_mask = _mm512_set1_epi32(static_cast<int>(0xffff0000u));
  int kk = 0;
  for (; kk + 32 <= k; kk += 32) {
    __m512i raw[R];
    for (int r = 0; r < R; ++r) {
      _mm_prefetch(PrefetchLine(b, ldb, next, k, r, kk), _MM_HINT_T0);
      raw[r] = _mm512_loadu_si512(b + r * ldb + kk);
    }
    for (int i = 0; i < M; ++i) {
      const __m512 x = _mm512_loadu_ps(a + i * lda + kk);
      for (int r = 0; r < R; ++r) {
        const __m512 w = _mm512_castsi512_ps(_mm512_slli_epi32(raw[r], 16));
        acc[r][i] = _mm512_fmadd_ps(w, x, acc[r][i]);
      }
    }
    for (int i = 0; i < M; ++i) {
      const __m512 x = _mm512_loadu_ps(a + i * lda + kk + 16);
      for (int r = 0; r < R; ++r) {
        const __m512 w = _mm512_castsi512_ps(_mm512_and_si512(raw[r], odd_mask));
        acc[r][i] = _mm512_fmadd_ps(w, x, acc[r][i]);
      }
    }
  }
  return kk;
}

// `a` holds the activations as Tile512 reads them: for bf16 weights, de-interleaved in blocks of
// 32 (DeinterleavedActivations), the k % 32 tail as it is.
template <int R, int M, typename T>
__attribute__((target("avx512f"))) void Tile512(const float* a, long lda, const T* b, long ldb,
                                                long next, int k, float* c, long ldc, int c_step) {
  __m512 acc[R][M];
  for (int r = 0; r < R; ++r) {
    for (int i = 0; i < M; ++i) acc[r][i] = _mm512_setzero_ps();
  }
  int kk = 0;
  if constexpr (std::is_same_v<T, uint16_t>) kk = PairSteps512<R, M>(a, lda, b, ldb, next, k, acc);
  for (; kk + 16 <= k; kk += 16) {
    __m512 w[R];
    // One prefetch per 64-byte line: every step for fp32, every other one for bf16.
    const bool new_line = (kk * sizeof(T)) % 64 == 0;
    for (int r = 0; r < R; ++r) {
      if (new_line) {
        _mm_prefetch(reinterpret_cast<const char*>(b + r * ldb + kk) + kPrefetchBytes, _MM_HINT_T0);
      }
      w[r] = Load512(b + r * ldb + kk);
    }
    for (int i = 0; i < M; ++i) {
      const __m512 x = _mm512_loadu_ps(a + i * lda + kk);
      for (int r = 0; r < R; ++r) acc[r][i] = _mm512_fmadd_ps(w[r], x, acc[r][i]);
    }
  }
  if (kk < k) {
    __m512 w[R];
    for (int r = 0; r < R; ++r) w[r] = LoadTail512(b + r * ldb + kk, k - kk);
    for (int i = 0; i < M; ++i) {
      const __m512 x = LoadTail512(a + i * lda + kk, k - kk);
      for (int r = 0; r < R; ++r) acc[r][i] = _mm512_fmadd_ps(w[r], x, acc[r][i]);
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int i = 0; i < M; ++i) c[i * ldc + r * c_step] = _mm512_reduce_add_ps(acc[r][i]);
  }
}

// Tiles of R weight rows starting at row n, row_step rows apart (outputs likewise), against all m
// activation rows, kM at a time.
template <int R, typename T>
__attribute__((target("avx512f"))) void Rows512(const GemmParams& p, const T* weights, int n,
                                                int row_step = 1) {
  constexpr int kM = 6;
  const T* b = weights + static_cast<long>(n) * p.ldb;
  const long ldb = p.ldb * row_step;                    // between the tile's rows
  const long next = row_step == 1 ? R * p.ldb : p.ldb;  // to the same row of the next tile
  for (int i0 = 0; i0 < p.m; i0 += kM) {
    const float* a = p.a + static_cast<long>(i0) * p.lda;
    float* c = p.c + static_cast<long>(i0) * p.ldc + n;
    switch (std::min(kM, p.m - i0)) {
      case 1:
        Tile512<R, 1, T>(a, p.lda, b, ldb, next, p.k, c, p.ldc, row_step);
        break;
      case 2:
        Tile512<R, 2, T>(a, p.lda, b, ldb, next, p.k, c, p.ldc, row_step);
        break;
      case 3:
        Tile512<R, 3, T>(a, p.lda, b, ldb, next, p.k, c, p.ldc, row_step);
        break;
      case 4:
        Tile512<R, 4, T>(a, p.lda, b, ldb, next, p.k, c, p.ldc, row_step);
        break;
      case 5:
        Tile512<R, 5, T>(a, p.lda, b, ldb, next, p.k, c, p.ldc, row_step);
        break;
      default:
        Tile512<R, 6, T>(a, p.lda, b, ldb, next, p.k, c, p.ldc, row_step);
        break;
    }
  }
}

// ---------------------------------------------------------------- AVX2

// 8 weights widened to fp32 (see Load512).
__attribute__((target("avx2,fma"))) inline __m256 Load256(const float* p) {
  return _mm256_loadu_ps(p);
}
__attribute__((target("avx2,fma"))) inline __m256 Load256(const uint16_t* p) {
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
// The k tail (< 8) of one row, zero-padded to a full vector.
template <typename T>
__attribute__((target("avx2,fma"))) inline __m256 LoadTail256(const T* p, int n) {
  T buf[8] = {};
  for (int j = 0; j < n; ++j) buf[j] = p[j];
  return Load256(buf);
}

__attribute__((target("avx2,fma"))) inline float Sum256(__m256 v) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_shuffle_ps(t, t, 1)));
}

template <int R, int M, typename T>
__attribute__((target("avx2,fma"))) void Tile256(const float* a, long lda, const T* b, long ldb,
                                                 int k, float* c, long ldc) {
  __m256 acc[R][M];
  for (int r = 0; r < R; ++r) {
    for (int i = 0; i < M; ++i) acc[r][i] = _mm256_setzero_ps();
  }
  int kk = 0;
  for (; kk + 8 <= k; kk += 8) {
    __m256 w[R];
    for (int r = 0; r < R; ++r) w[r] = Load256(b + r * ldb + kk);
    for (int i = 0; i < M; ++i) {
      const __m256 x = _mm256_loadu_ps(a + i * lda + kk);
      for (int r = 0; r < R; ++r) acc[r][i] = _mm256_fmadd_ps(w[r], x, acc[r][i]);
    }
  }
  if (kk < k) {
    __m256 w[R];
    for (int r = 0; r < R; ++r) w[r] = LoadTail256(b + r * ldb + kk, k - kk);
    for (int i = 0; i < M; ++i) {
      const __m256 x = LoadTail256(a + i * lda + kk, k - kk);
      for (int r = 0; r < R; ++r) acc[r][i] = _mm256_fmadd_ps(w[r], x, acc[r][i]);
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int i = 0; i < M; ++i) c[i * ldc + r] = Sum256(acc[r][i]);
  }
}

template <int R, typename T>
__attribute__((target("avx2,fma"))) void Rows256(const GemmParams& p, const T* weights, int n) {
  constexpr int kM = 2;
  const T* b = weights + static_cast<long>(n) * p.ldb;
  for (int i0 = 0; i0 < p.m; i0 += kM) {
    const float* a = p.a + static_cast<long>(i0) * p.lda;
    float* c = p.c + static_cast<long>(i0) * p.ldc + n;
    if (p.m - i0 >= kM) {
      Tile256<R, 2, T>(a, p.lda, b, p.ldb, p.k, c, p.ldc);
    } else {
      Tile256<R, 1, T>(a, p.lda, b, p.ldb, p.k, c, p.ldc);
    }
  }
}

// The rows of A as the AVX-512 bf16 tiles read them: each block of 32 activations as its 16
// even-indexed then its 16 odd-indexed elements, the k % 32 tail unchanged; row stride k. In the
// calling thread's buffer, valid until its next call.
const float* DeinterleavedActivations(const GemmParams& p) {
  thread_local std::vector<float> out;
  out.resize(static_cast<size_t>(p.m) * p.k);
  for (int i = 0; i < p.m; ++i) {
    const float* row = p.a + static_cast<long>(i) * p.lda;
    float* dst = out.data() + static_cast<size_t>(i) * p.k;
    int kk = 0;
    for (; kk + 32 <= p.k; kk += 32) {
      for (int j = 0; j < 16; ++j) {
        dst[kk + j] = row[kk + 2 * j];
        dst[kk + 16 + j] = row[kk + 2 * j + 1];
      }
    }
    std::copy(row + kk, row + p.k, dst + kk);
  }
  return out.data();
}

// Weight rows [n0, n1). AVX-512 at m <= 2 (decode): four streams, each a contiguous quarter of
// the range; tile t holds rows n0 + t, n0 + q + t, n0 + 2q + t and n0 + 3q + t (q a quarter), so
// each of its rows starts where the previous tile's row ended, and a row's prefetches run on into
// the next one: four long sequential reads per thread. A standalone read test read 71-78 GB/s
// that way against 54-61 for one address-order stream and 52-58 for tiles of consecutive rows;
// an engine decode step ran +15% (bf16, 5 of 5 pairs) and +15-25% (fp32, 4 of 4) against tiles
// of consecutive rows (bench/README.md). Then (and otherwise) tiles of four, then single rows.
template <typename T>
void RunRows(Isa isa, const GemmParams& p, const T* weights, int n0, int n1) {
  int n = n0;
  if (isa == Isa::kAvx512 && p.m <= 2) {
    const int quarter = (n1 - n0) / 4;
    for (int t = 0; t < quarter; ++t) Rows512<4>(p, weights, n0 + t, quarter);
    n = n0 + 4 * quarter;
  }
  for (; n + 4 <= n1; n += 4) {
    isa == Isa::kAvx512 ? Rows512<4>(p, weights, n) : Rows256<4>(p, weights, n);
  }
  for (; n < n1; ++n) isa == Isa::kAvx512 ? Rows512<1>(p, weights, n) : Rows256<1>(p, weights, n);
}

}  // namespace

const char* SmallGemmIsa() { return IsaName(CpuIsa()); }

bool SmallGemm(const GemmParams& p) {
  const Isa isa = CpuIsa();
  if (isa == Isa::kNone || !p.trans_b || p.alpha != 1.0f || p.beta != 0.0f || p.m < 1 ||
      p.m > kSmallGemmMaxM) {
    return false;
  }
  const int tiles = (p.n + 3) / 4;
  GemmParams bf16_params = p;
  if (p.b_dtype == DType::kBF16 && isa == Isa::kAvx512) {
    bf16_params.a = DeinterleavedActivations(p);
    bf16_params.lda = p.k;
  }
  const auto run = [&](int t0, int t1) {
    const int n0 = t0 * 4, n1 = std::min(p.n, t1 * 4);
    if (p.b_dtype == DType::kBF16) {
      RunRows(isa, bf16_params, p.b_bf16, n0, n1);
    } else {
      RunRows(isa, p, p.b, n0, n1);
    }
  };
  if (static_cast<long>(p.m) * p.n * p.k < kParallelFmas) {
    run(0, tiles);
  } else {
    ParallelFor(tiles, run);
  }
  return true;
}

}  // namespace dapq::kernels::ref
