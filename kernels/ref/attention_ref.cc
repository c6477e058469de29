// File: kernels/ref/attention_ref.cc
// CPU attention. Prefill is tiled with an online softmax (flash-attention form): for each
// (KV head, query tile) it stacks the GQA group's queries and walks key tiles, S = Q.K^T and
// O += P.V through single-threaded GEMMs (tile_sgemm.h), keeping only (kQueryTile x group) x
// kKeyTile scores; the exponentials are vectorised (attention_simd.h). The (KV head, query tile)
// items run on the kernel threads, longest first, each on one thread from start to end, so
// the softmax between a tile's two GEMMs runs in parallel too and the result does not depend on
// the thread count.
// Decode processes one KV head's whole query group at once, chunk by chunk (scores over a
// chunk's keys, then the weighted sum over its values, the chunks merged through their row
// maxima), reading each K and V row once, in slot order (attention_simd.h's DecodeHead), the
// (query token, KV head) pairs split over the kernel threads; when there are fewer pairs than
// threads and the cache is long (a 1M-token sequence on one rank), each pair's cache is split
// too (flash-decoding), the parts combined through their log-sum-exp.
// With AttentionParams::round_to_kv_dtype over a paged bf16 pool (the engine's bf16 cache), on
// a CPU with AVX512-BF16 and oneDNN built in, prefill rounds the queries and softmax weights to
// bf16 and multiplies in oneDNN bf16 GEMMs (PrefillTileBf16), the CUDA tensor-core kernel's
// arithmetic and error bound; every other case is exact fp32.
// Paged K/V (AttentionParams::block_table): prefill gathers block by block into the same
// contiguous key tiles (a range inside one fp32 block is read in place; bf16 and fp16 rows are
// widened into the tile), so its GEMMs and results are bit-identical to the contiguous layout;
// decode walks the blocks in slot order with the same arithmetic as over a slab. Either way the
// result does not depend on the block size.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <limits>
#include <mutex>
#include <utility>
#include <vector>

#include "kernels/convert.h"
#include "kernels/paged_index.h"
#include "kernels/ref/attention_simd.h"
#include "kernels/ref/bf16_matmul.h"
#include "kernels/ref/parallel_for.h"
#include "kernels/ref/ref_ops.h"
#include "kernels/ref/tile_sgemm.h"

namespace dapq::kernels::ref {
namespace {

constexpr int kQueryTile = 64;
constexpr int kKeyTile = 512;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();
// Below this many multiply-adds one thread runs every prefill item.
constexpr long kParallelPrefillFmas = 1L << 22;
// Below this many multiply-adds one thread decodes every head (waking the pool costs more).
constexpr long kParallelDecodeFmas = 1L << 18;
// Split-KV decode cuts a cache into parts of at least this many slots.
constexpr int kMinSplitSlots = 4096;
constexpr int kSplitUnit = 1024;

// Calls f(element offset in the pool, n) for each run of n slots of [begin, begin + count) that
// lies in one block of KV head kv_head's table, in slot order: the run's keys (or values) are
// n * head_dim contiguous elements there.
template <typename F>
void ForEachBlockRun(const AttentionParams& p, int kv_head, int begin, int count, F&& f) {
  const int32_t* table = p.block_table + static_cast<long>(kv_head) * p.blocks_per_head;
  const int tpb = p.tokens_per_block;
  for (int s = begin; s < begin + count;) {
    const int in_block = s % tpb;
    const int n = std::min(tpb - in_block, begin + count - s);
    f(PagedBlockRow(table[s / tpb], in_block, p.block_stride, p.head_dim), n);
    s += n;
  }
}

// Slots [begin, begin + count) of KV head kv_head's keys (values when `values`) as a contiguous
// [count, head_dim] array: in the slab, in the one block holding them all, or gathered from the
// head's block table into `scratch`.
const float* KvRows(const AttentionParams& p, int kv_head, bool values, int begin, int count,
                    std::vector<float>& scratch) {
  const long d = p.head_dim;
  if (p.block_table == nullptr) {
    return (values ? p.v : p.k) + kv_head * p.kv_head_stride + begin * d;
  }
  const int32_t* table = p.block_table + static_cast<long>(kv_head) * p.blocks_per_head;
  const auto* pool = static_cast<const std::byte*>(values ? p.v_pool : p.k_pool);
  const long elem = DTypeSize(p.kv_dtype);
  // Row `row` of block entry b.
  const auto at = [&](int b, int row) {
    return pool + PagedBlockRow(table[b], row, p.block_stride, p.head_dim) * elem;
  };
  const int tpb = p.tokens_per_block;
  if (count <= 0) return reinterpret_cast<const float*>(at(0, 0));
  const int first = begin / tpb, last = (begin + count - 1) / tpb;
  if (first == last && p.kv_dtype == DType::kF32) {
    return reinterpret_cast<const float*>(at(first, begin % tpb));
  }
  if (scratch.size() < static_cast<size_t>(count) * d)
    scratch.resize(static_cast<size_t>(count) * d);
  float* dst = scratch.data();
  ForEachBlockRun(p, kv_head, begin, count, [&](long offset, int n) {
    ConvertToFloat(p.kv_dtype, pool + offset * elem, dst, n * d);
    dst += n * d;
  });
  return scratch.data();
}

// Slots [begin, begin + count) of KV head kv_head's bf16 keys (values when `values`) copied
// into dst [padded, head_dim], rows past count zero (a padded tile's keys score 0 and its values
// add 0).
void GatherBf16Rows(const AttentionParams& p, int kv_head, bool values, int begin, int count,
                    int padded, uint16_t* dst) {
  const long d = p.head_dim;
  const auto* pool = static_cast<const uint16_t*>(values ? p.v_pool : p.k_pool);
  uint16_t* out = dst;
  ForEachBlockRun(p, kv_head, begin, count, [&](long offset, int n) {
    out = std::copy(pool + offset, pool + offset + n * d, out);
  });
  std::fill(out, dst + padded * d, uint16_t{0});
}

struct PrefillScratch {
  std::vector<float> k_tile, v_tile;  // paged K/V gathered for one key tile
  std::vector<float> q;               // [rows, head_dim]: the tile's queries of one KV head's group
  std::vector<float> scores;          // [rows, kKeyTile]
  std::vector<float> acc;             // [rows, head_dim]
  std::vector<float> row_max, row_sum;
  // Bf16Tiles: the queries [max rows, head_dim], K and V tiles [kKeyTile, head_dim] and the
  // softmax weights [max rows, kKeyTile] in bf16.
  std::vector<uint16_t> q16, k16, v16, p16;
};

// The calling thread's scratch, sized for tiles of up to `max_rows` stacked query rows.
PrefillScratch& ThreadPrefillScratch(size_t max_rows, int head_dim, bool bf16) {
  thread_local PrefillScratch s;
  if (bf16) {
    s.q16.resize(max_rows * head_dim);
    s.k16.resize(static_cast<size_t>(kKeyTile) * head_dim);
    s.v16.resize(static_cast<size_t>(kKeyTile) * head_dim);
    s.p16.resize(max_rows * kKeyTile);
  }
  s.q.resize(max_rows * head_dim);
  s.scores.resize(max_rows * kKeyTile);
  s.acc.resize(max_rows * head_dim);
  s.row_max.resize(max_rows);
  s.row_sum.resize(max_rows);
  return s;
}

// Folds a key tile into stacked row r's running statistics (online softmax): new_max is the
// row's maximum over the tiles so far and tile_sum the tile's exponentials against it; the sum
// and the output so far are scaled down when the maximum rose.
void FoldRow(PrefillScratch& s, int r, int d, float new_max, float tile_sum) {
  const float correction = std::exp(s.row_max[r] - new_max);  // exp(-inf) = 0 on the first tile
  s.row_sum[r] = s.row_sum[r] * correction + tile_sum;
  s.row_max[r] = new_max;
  if (correction != 1.0f) {
    float* arow = s.acc.data() + static_cast<long>(r) * d;
    for (int i = 0; i < d; ++i) arow[i] *= correction;
  }
}

// The tile's stacked rows, normalised, to their tokens' and heads' places in p.out.
void WriteStackedRows(const AttentionParams& p, int kv_head, int t0, int rows,
                      const PrefillScratch& s) {
  const int d = p.head_dim;
  const int group = p.q_heads / p.kv_heads;
  for (int r = 0; r < rows; ++r) {
    float* out = p.out + static_cast<long>(t0) * p.out_stride +
                 StackedRowOffset(r, group, kv_head, p.out_stride, d);
    const float inv = 1.0f / s.row_sum[r];
    const float* arow = s.acc.data() + static_cast<long>(r) * d;
    for (int i = 0; i < d; ++i) out[i] = arow[i] * inv;
  }
}

// One KV head and query tokens [t0, t1): the group's g query heads are stacked into
// rows = (t1 - t0) * g rows (row r = token t0 + r / g, head kv_head * g + r % g), so every key
// tile is multiplied once for the whole group in one larger GEMM.
absl::Status PrefillTile(const AttentionParams& p, int kv_head, int t0, int t1, PrefillScratch& s) {
  const int d = p.head_dim;
  const int group = p.q_heads / p.kv_heads;
  const int past = KvLength(p, kv_head) - p.q_tokens;
  const int rows = (t1 - t0) * group;
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  for (int t = t0; t < t1; ++t) {
    const float* src =
        p.q + static_cast<long>(t) * p.q_stride + static_cast<long>(kv_head) * group * d;
    std::copy(src, src + static_cast<long>(group) * d,
              s.q.begin() + static_cast<long>(t - t0) * group * d);
  }
  std::fill(s.acc.begin(), s.acc.begin() + static_cast<long>(rows) * d, 0.0f);
  std::fill(s.row_max.begin(), s.row_max.begin() + rows, kNegInf);
  std::fill(s.row_sum.begin(), s.row_sum.begin() + rows, 0.0f);

  const int key_end = past + t1;  // exclusive: the last query token sees slot past + t1 - 1
  for (int j0 = 0; j0 < key_end; j0 += kKeyTile) {
    const int j1 = std::min(j0 + kKeyTile, key_end);
    const int cols = j1 - j0;
    const float* k = KvRows(p, kv_head, false, j0, cols, s.k_tile);
    const float* v = KvRows(p, kv_head, true, j0, cols, s.v_tile);
    absl::Status status =
        TileSgemm(true, rows, cols, d, scale, s.q.data(), d, k, d, 0.0f, s.scores.data(), kKeyTile);
    if (!status.ok()) return status;
    for (int r = 0; r < rows; ++r) {
      float* srow = s.scores.data() + static_cast<long>(r) * kKeyTile;
      const int t = t0 + r / group;
      const int visible = std::min(cols, past + t + 1 - j0);  // keys j0..j0+visible-1
      if (visible <= 0) {
        std::fill(srow, srow + cols, 0.0f);
        continue;
      }
      const float new_max = std::max(s.row_max[r], RowMax(srow, visible));
      const float sum = ExpShiftedSum(srow, visible, new_max);
      std::fill(srow + visible, srow + cols, 0.0f);
      FoldRow(s, r, d, new_max, sum);
    }
    status = TileSgemm(false, rows, d, cols, 1.0f, s.scores.data(), kKeyTile, v, d, 1.0f,
                       s.acc.data(), d);
    if (!status.ok()) return status;
  }
  WriteStackedRows(p, kv_head, t0, rows, s);
  return absl::OkStatus();
}

// PrefillTile over a paged bf16 pool with AttentionParams::round_to_kv_dtype: the queries and
// the softmax weights are rounded to bf16 and both products are oneDNN bf16 GEMMs with fp32
// accumulation (TileGemmBf16), the row sums adding the rounded weights. The GEMMs always have
// kQueryTile * group rows (zero queries past the tile's) and a multiple of kBf16Cols key
// columns (zero keys and values past the visible ones), so a few primitives serve every
// prompt; the results depend on neither the block size nor the thread count.
constexpr int kBf16Cols = 64;

absl::Status PrefillTileBf16(const AttentionParams& p, int kv_head, int t0, int t1,
                             PrefillScratch& s) {
  const int d = p.head_dim;
  const int group = p.q_heads / p.kv_heads;
  const int past = KvLength(p, kv_head) - p.q_tokens;
  const int rows = (t1 - t0) * group;
  const int gemm_rows = kQueryTile * group;
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  for (int t = t0; t < t1; ++t) {
    ConvertFromFloat(
        p.q + static_cast<long>(t) * p.q_stride + static_cast<long>(kv_head) * group * d,
        DType::kBF16, s.q16.data() + static_cast<long>(t - t0) * group * d,
        static_cast<long>(group) * d);
  }
  std::fill(s.q16.begin() + static_cast<long>(rows) * d,
            s.q16.begin() + static_cast<long>(gemm_rows) * d, uint16_t{0});
  std::fill(s.p16.begin() + static_cast<long>(rows) * kKeyTile,
            s.p16.begin() + static_cast<long>(gemm_rows) * kKeyTile, uint16_t{0});
  std::fill(s.acc.begin(), s.acc.begin() + static_cast<long>(gemm_rows) * d, 0.0f);
  std::fill(s.row_max.begin(), s.row_max.begin() + rows, kNegInf);
  std::fill(s.row_sum.begin(), s.row_sum.begin() + rows, 0.0f);

  const int key_end = past + t1;
  for (int j0 = 0; j0 < key_end; j0 += kKeyTile) {
    const int j1 = std::min(j0 + kKeyTile, key_end);
    const int cols = j1 - j0;
    const int gemm_cols = (cols + kBf16Cols - 1) / kBf16Cols * kBf16Cols;
    GatherBf16Rows(p, kv_head, false, j0, cols, gemm_cols, s.k16.data());
    GatherBf16Rows(p, kv_head, true, j0, cols, gemm_cols, s.v16.data());
    absl::Status status = TileGemmBf16(true, gemm_rows, gemm_cols, d, scale, s.q16.data(), d,
                                       s.k16.data(), d, false, s.scores.data(), kKeyTile);
    if (!status.ok()) return status;
    for (int r = 0; r < rows; ++r) {
      const float* srow = s.scores.data() + static_cast<long>(r) * kKeyTile;
      uint16_t* prow = s.p16.data() + static_cast<long>(r) * kKeyTile;
      const int t = t0 + r / group;
      const int visible = std::clamp(past + t + 1 - j0, 0, cols);
      std::fill(prow + visible, prow + gemm_cols, uint16_t{0});
      if (visible == 0) continue;
      const float new_max = std::max(s.row_max[r], RowMax(srow, visible));
      FoldRow(s, r, d, new_max, ExpShiftedSumBf16(srow, visible, new_max, prow));
    }
    status = TileGemmBf16(false, gemm_rows, d, gemm_cols, 1.0f, s.p16.data(), kKeyTile,
                          s.v16.data(), d, true, s.acc.data(), d);
    if (!status.ok()) return status;
  }
  WriteStackedRows(p, kv_head, t0, rows, s);
  return absl::OkStatus();
}

// Whether prefill over p runs PrefillTileBf16.
bool UsesBf16Tiles(const AttentionParams& p) {
  return p.round_to_kv_dtype && p.block_table != nullptr && p.kv_dtype == DType::kBF16 &&
         HaveTileGemmBf16();
}

}  // namespace

absl::Status AttentionPrefillRef(const AttentionParams& p) {
  const int group = p.q_heads / p.kv_heads;
  const size_t max_rows = static_cast<size_t>(kQueryTile) * group;
  const int tiles = (p.q_tokens + kQueryTile - 1) / kQueryTile;
  const int items = tiles * p.kv_heads;
  // Item i: query tiles from the last (it sees the most keys) to the first, KV heads within.
  const bool bf16 = UsesBf16Tiles(p);
  const auto run_item = [&](int i, PrefillScratch& s) {
    const int t0 = (tiles - 1 - i / p.kv_heads) * kQueryTile;
    const int t1 = std::min(t0 + kQueryTile, p.q_tokens);
    return bf16 ? PrefillTileBf16(p, i % p.kv_heads, t0, t1, s)
                : PrefillTile(p, i % p.kv_heads, t0, t1, s);
  };
  long fmas = 0;  // Q.K^T and P.V over every visible key, roughly
  for (int h = 0; h < p.kv_heads; ++h) {
    fmas += 2L * group * p.q_tokens * KvLength(p, h) * p.head_dim;
  }
  if (!TileSgemmRunsOnCaller() || items == 1 || KernelThreads() == 1 ||
      fmas < kParallelPrefillFmas) {
    PrefillScratch& s = ThreadPrefillScratch(max_rows, p.head_dim, bf16);
    for (int i = 0; i < items; ++i) {
      if (absl::Status status = run_item(i, s); !status.ok()) return status;
    }
    return absl::OkStatus();
  }
  // Each thread takes the next item until none is left (items differ in length).
  std::atomic<int> next{0};
  std::mutex mu;
  absl::Status first_error;
  ParallelFor(KernelThreads(), [&](int, int) {
    PrefillScratch& s = ThreadPrefillScratch(max_rows, p.head_dim, bf16);
    for (int i = next.fetch_add(1); i < items; i = next.fetch_add(1)) {
      if (absl::Status status = run_item(i, s); !status.ok()) {
        std::lock_guard<std::mutex> lock(mu);
        if (first_error.ok()) first_error = std::move(status);
        next.store(items);
      }
    }
  });
  return first_error;
}

absl::Status AttentionDecodeRef(const AttentionParams& p) {
  const int d = p.head_dim;
  const int group = p.q_heads / p.kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  const bool paged = p.block_table != nullptr;
  const int tasks = p.q_tokens * p.kv_heads;
  long work = 0;  // multiply-adds
  int longest = 0;
  for (int h = 0; h < p.kv_heads; ++h) {
    work += 2L * KvLength(p, h) * d * group * p.q_tokens;
    longest = std::max(longest, KvLength(p, h));
  }
  // Split-KV (flash-decoding): when there are fewer (query token, KV head) pairs than threads
  // and the cache is long, each pair's slots are cut into parts (whole blocks) that threads
  // decode on their own; the parts' outputs are then combined through their row maxima and
  // exponential sums. Otherwise one task per pair, each over its whole cache.
  const int threads = KernelThreads();
  const int parts =
      work >= kParallelDecodeFmas ? SplitCount(tasks, threads, longest, kMinSplitSlots) : 1;
  // Parts start on multiples of kSplitUnit slots (of whole blocks when they are larger), so
  // paged and contiguous caches split alike and stay bit-identical for blocks up to that size.
  const int unit = paged ? std::max(kSplitUnit, p.tokens_per_block) : kSplitUnit;
  // Per (task, part): the normalised output [group, d], each query's row max and 1 / sum.
  std::vector<float> part_out, part_max, part_inv;
  if (parts > 1) {
    part_out.resize(static_cast<size_t>(tasks) * parts * group * d);
    part_max.resize(static_cast<size_t>(tasks) * parts * group);
    part_inv.resize(part_max.size());
  }
  const auto run = [&](int item0, int item1) {
    thread_local std::vector<float> scores, acc, stats, inv_sums;
    for (int item = item0; item < item1; ++item) {
      const int task = item / parts, part = item % parts;
      const int t = task / p.kv_heads, kvh = task % p.kv_heads;
      const int len = CausalVisible(KvLength(p, kvh), p.q_tokens, t);
      const SlotRange range = SplitPart(len, part, parts, unit);
      const int begin = range.begin, end = range.end;
      DecodeHeadArgs a;
      a.head_dim = d;
      a.group = group;
      a.len = end - begin;
      a.scale = scale;
      a.q = p.q + static_cast<long>(t) * p.q_stride + static_cast<long>(kvh) * group * d;
      a.dtype = paged ? p.kv_dtype : DType::kF32;
      if (paged) {
        a.k = p.k_pool;
        a.v = p.v_pool;
        a.table =
            p.block_table + static_cast<long>(kvh) * p.blocks_per_head + begin / p.tokens_per_block;
        a.block_stride = p.block_stride;
        a.tokens_per_block = p.tokens_per_block;
      } else {
        a.k = p.k + kvh * p.kv_head_stride + static_cast<long>(begin) * d;
        a.v = p.v + kvh * p.kv_head_stride + static_cast<long>(begin) * d;
      }
      scores.resize(static_cast<size_t>(group) * std::clamp(a.len, 1, kDecodeChunkSlots));
      acc.resize(static_cast<size_t>(group) * d);
      stats.resize(2 * static_cast<size_t>(group));
      inv_sums.resize(group);
      a.scores = scores.data();
      a.acc = acc.data();
      a.stats = stats.data();
      a.inv_sums = inv_sums.data();
      if (parts == 1) {
        a.out = p.out + static_cast<long>(t) * p.out_stride + static_cast<long>(kvh) * group * d;
        DecodeHead(a);
        continue;
      }
      const long at = static_cast<long>(item) * group;
      if (a.len == 0) {  // an empty part (a short head): weight zero in the combination
        std::fill(part_max.begin() + at, part_max.begin() + at + group, kNegInf);
        std::fill(part_inv.begin() + at, part_inv.begin() + at + group, 0.0f);
        continue;
      }
      a.out = part_out.data() + at * d;
      a.row_max = part_max.data() + at;
      DecodeHead(a);
      std::copy(inv_sums.begin(), inv_sums.end(), part_inv.begin() + at);
    }
  };
  const int items = tasks * parts;
  if (items > 1 && work >= kParallelDecodeFmas) {
    ParallelFor(items, run);
  } else {
    run(0, items);
  }
  if (parts == 1) return absl::OkStatus();
  // out = sum_p w_p out_p / sum_p w_p, w_p = sum_p exp(max_p - max): the softmax over every
  // slot, from the parts' own softmaxes.
  for (int task = 0; task < tasks; ++task) {
    const int t = task / p.kv_heads, kvh = task % p.kv_heads;
    for (int g = 0; g < group; ++g) {
      float max = kNegInf;
      for (int part = 0; part < parts; ++part) {
        max = std::max(max, part_max[(static_cast<long>(task) * parts + part) * group + g]);
      }
      float* out =
          p.out + static_cast<long>(t) * p.out_stride + (static_cast<long>(kvh) * group + g) * d;
      std::fill(out, out + d, 0.0f);
      double total = 0;
      for (int part = 0; part < parts; ++part) {
        const long at = (static_cast<long>(task) * parts + part) * group + g;
        if (part_inv[at] == 0.0f) continue;
        const float w = std::exp(part_max[at] - max) / part_inv[at];
        total += w;
        const float* o = part_out.data() + at * d;
        for (int i = 0; i < d; ++i) out[i] += w * o[i];
      }
      const float inv = static_cast<float>(1.0 / total);
      for (int i = 0; i < d; ++i) out[i] *= inv;
    }
  }
  return absl::OkStatus();
}

}  // namespace dapq::kernels::ref
