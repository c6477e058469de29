// File: bench/results/issue12/gemv_four_streams_20261208/read_streams.cc
// A standalone read-pattern experiment (not part of the build): 2 threads each read half of a
// 1 GiB buffer (2 MiB pages): seq = 1 in address order; seq = S >= 2 as S contiguous parts of the
// half read line by line in turn; seq = 0 as a decode GEMV does, tiles of R rows of L bytes with a
// software prefetch D bytes ahead (chained into the next tile or not; hint 0-3 = T0, T1, T2, NTA),
// B bytes of one row before the next (B = 64: line by line).
// Build: g++ -O2 -march=x86-64-v4 -pthread read_streams.cc. Args: seq R L D chain hint B.
#include <immintrin.h>
#include <sys/mman.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>
long kBytes = 1L << 30;
int R = 8, L = 8192, D = 2048, chain = 1, hint = 0, seq = 0, B = 64;
char* buf;
__attribute__((target("avx512f"))) long Part(long lo, long hi) {  // byte range of whole tiles
  __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
  if (seq >= 2) {  // seq streams, each a contiguous part of [lo, hi), interleaved per line
    const int S = seq;
    const long part = (hi - lo) / S / 4096 * 4096;
    for (long o = 0; o < part; o += 64) {
      for (int i = 0; i < S; ++i) {
        const char* p = buf + lo + i * part + o;
        if (D > 0) _mm_prefetch(p + D, _MM_HINT_T0);
        a0 = _mm512_add_epi32(a0, _mm512_load_si512(p));
      }
    }
  } else if (seq) {
    for (long o = lo; o < hi; o += 256) {
      a0 = _mm512_add_epi32(a0, _mm512_load_si512(buf + o));
      a1 = _mm512_add_epi32(a1, _mm512_load_si512(buf + o + 64));
      a2 = _mm512_add_epi32(a2, _mm512_load_si512(buf + o + 128));
      a3 = _mm512_add_epi32(a3, _mm512_load_si512(buf + o + 192));
    }
  } else {
    const long tile = static_cast<long>(R) * L;
    for (long t = lo; t < hi; t += tile) {
      for (int k0 = 0; k0 < L; k0 += B) {
        for (int r = 0; r < R; ++r)
          for (int kk = k0; kk < k0 + B; kk += 64) {
            const char* row = buf + t + static_cast<long>(r) * L;
            if (D > 0) {
              const int at = kk + D;
              const char* p = at < L || !chain ? row + at : row + tile + (at - L);
              if (hint == 0)
                _mm_prefetch(p, _MM_HINT_T0);
              else if (hint == 1)
                _mm_prefetch(p, _MM_HINT_T1);
              else if (hint == 2)
                _mm_prefetch(p, _MM_HINT_T2);
              else
                _mm_prefetch(p, _MM_HINT_NTA);
            }
            a0 = _mm512_add_epi32(a0, _mm512_load_si512(row + kk));
          }
      }
    }
  }
  a0 = _mm512_add_epi32(_mm512_add_epi32(a0, a1), _mm512_add_epi32(a2, a3));
  return _mm512_reduce_add_epi32(a0);
}
int main(int argc, char** argv) {
  // args: seq R L D chain hint [GiB*4]
  seq = atoi(argv[1]);
  R = atoi(argv[2]);
  L = atoi(argv[3]);
  D = atoi(argv[4]);
  chain = atoi(argv[5]);
  hint = atoi(argv[6]);
  if (argc > 7) B = atoi(argv[7]);
  buf = static_cast<char*>(aligned_alloc(2 << 20, kBytes + (2 << 20)));
  madvise(buf, kBytes + (2 << 20), MADV_HUGEPAGE);
  memset(buf, 1, kBytes + (2 << 20));
  const long tile = static_cast<long>(R) * L, tiles = kBytes / tile, half = tiles / 2 * tile;
  double best = 0;
  volatile long sink = 0;
  for (int rep = 0; rep < 8; ++rep) {
    auto t0 = std::chrono::steady_clock::now();
    long r1 = 0;
    std::thread th([&] { r1 = Part(half, tiles * tile); });
    long r0 = Part(0, half);
    th.join();
    sink = r0 + r1;
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, tiles * tile / s / 1e9);
  }
  printf("seq=%d R=%d L=%d D=%d chain=%d hint=%d B=%d GB=%.2f  %.1f GB/s\n", seq, R, L, D, chain,
         hint, B, kBytes / 1e9, best);
}
