// File: kernels/ref/attention_ref.cc
// CPU attention. Prefill is tiled with an online softmax (flash-attention form): for each
// (KV head, query tile) it stacks the GQA group's queries and walks key tiles, S = Q.K^T and
// O += P.V through OpenBLAS, keeping only (kQueryTile x group) x kKeyTile scores. Decode
// processes one KV head's whole query group at once in two streaming passes (scores over the
// keys, then the weighted sum over the values), reading each K and V row once, in slot order.
// Paged K/V (AttentionParams::block_table): prefill gathers block by block into the same
// contiguous key tiles (a range inside one block is read in place), so its GEMMs and results are
// bit-identical to the contiguous layout; decode walks the blocks in slot order with the same
// arithmetic as over a slab. Either way the result does not depend on the block size.
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/ref/ref_ops.h"

namespace dapq::kernels::ref {
namespace {

constexpr int kQueryTile = 64;
constexpr int kKeyTile = 256;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

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
  const float* pool = values ? p.v_pool : p.k_pool;
  const auto block = [&](int b) { return pool + table[b] * p.block_stride; };
  const int tpb = p.tokens_per_block;
  if (count <= 0) return block(0);
  const int first = begin / tpb, last = (begin + count - 1) / tpb;
  if (first == last) return block(first) + (begin % tpb) * d;
  if (scratch.size() < static_cast<size_t>(count) * d)
    scratch.resize(static_cast<size_t>(count) * d);
  float* dst = scratch.data();
  for (int s = begin; s < begin + count;) {
    const int in_block = s % tpb;
    const int n = std::min(tpb - in_block, begin + count - s);
    std::copy_n(block(s / tpb) + in_block * d, n * d, dst);
    dst += n * d;
    s += n;
  }
  return scratch.data();
}

// Calls fn(first_slot, count, rows) over slots [0, len) of KV head kv_head's keys (values when
// `values`) in slot order, each call a contiguous [count, head_dim] run (the slab at once, or
// one block at a time).
template <typename F>
void ForEachKvRun(const AttentionParams& p, int kv_head, bool values, int len, F&& fn) {
  if (p.block_table == nullptr) {
    fn(0, len, (values ? p.v : p.k) + kv_head * p.kv_head_stride);
    return;
  }
  const int32_t* table = p.block_table + static_cast<long>(kv_head) * p.blocks_per_head;
  const float* pool = values ? p.v_pool : p.k_pool;
  for (int b = 0, j0 = 0; j0 < len; ++b, j0 += p.tokens_per_block) {
    fn(j0, std::min(p.tokens_per_block, len - j0), pool + table[b] * p.block_stride);
  }
}

// a . b over n floats in a fixed order: 8 interleaved partial sums (vectorised by the compiler
// without reassociation), combined pairwise, then the tail.
inline float Dot(const float* a, const float* b, int n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int l = 0; l < 8; ++l) acc[l] += a[i + l] * b[i + l];
  }
  float sum = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
  for (; i < n; ++i) sum += a[i] * b[i];
  return sum;
}

struct PrefillScratch {
  std::vector<float> k_tile, v_tile;  // paged K/V gathered for one key tile
  std::vector<float> q;               // [rows, head_dim]: the tile's queries of one KV head's group
  std::vector<float> scores;          // [rows, kKeyTile]
  std::vector<float> acc;             // [rows, head_dim]
  std::vector<float> row_max, row_sum;
};

// One KV head and query tokens [t0, t1): the group's g query heads are stacked into
// rows = (t1 - t0) * g rows (row r = token t0 + r / g, head kv_head * g + r % g), so every key
// tile is multiplied once for the whole group in one larger GEMM.
void PrefillTile(const AttentionParams& p, int kv_head, int t0, int t1, PrefillScratch& s) {
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
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, cols, d, scale, s.q.data(), d, k, d,
                0.0f, s.scores.data(), kKeyTile);
    for (int r = 0; r < rows; ++r) {
      float* srow = s.scores.data() + static_cast<long>(r) * kKeyTile;
      const int t = t0 + r / group;
      const int visible = std::min(cols, past + t + 1 - j0);  // keys j0..j0+visible-1
      if (visible <= 0) {
        std::fill(srow, srow + cols, 0.0f);
        continue;
      }
      float tile_max = kNegInf;
      for (int c = 0; c < visible; ++c) tile_max = std::max(tile_max, srow[c]);
      const float new_max = std::max(s.row_max[r], tile_max);
      const float correction = std::exp(s.row_max[r] - new_max);  // exp(-inf) = 0 on first tile
      float sum = 0.0f;
      for (int c = 0; c < visible; ++c) {
        srow[c] = std::exp(srow[c] - new_max);
        sum += srow[c];
      }
      std::fill(srow + visible, srow + cols, 0.0f);
      s.row_sum[r] = s.row_sum[r] * correction + sum;
      s.row_max[r] = new_max;
      if (correction != 1.0f) {
        float* arow = s.acc.data() + static_cast<long>(r) * d;
        for (int i = 0; i < d; ++i) arow[i] *= correction;
      }
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, d, cols, 1.0f, s.scores.data(),
                kKeyTile, v, d, 1.0f, s.acc.data(), d);
  }
  for (int r = 0; r < rows; ++r) {
    const int t = t0 + r / group, head = kv_head * group + r % group;
    float* out = p.out + static_cast<long>(t) * p.out_stride + static_cast<long>(head) * d;
    const float inv = 1.0f / s.row_sum[r];
    const float* arow = s.acc.data() + static_cast<long>(r) * d;
    for (int i = 0; i < d; ++i) out[i] = arow[i] * inv;
  }
}

}  // namespace

absl::Status AttentionPrefillRef(const AttentionParams& p) {
  thread_local PrefillScratch s;
  const int group = p.q_heads / p.kv_heads;
  const size_t max_rows = static_cast<size_t>(kQueryTile) * group;
  s.q.resize(max_rows * p.head_dim);
  s.scores.resize(max_rows * kKeyTile);
  s.acc.resize(max_rows * p.head_dim);
  s.row_max.resize(max_rows);
  s.row_sum.resize(max_rows);
  for (int h = 0; h < p.kv_heads; ++h) {
    for (int t0 = 0; t0 < p.q_tokens; t0 += kQueryTile) {
      PrefillTile(p, h, t0, std::min(t0 + kQueryTile, p.q_tokens), s);
    }
  }
  return absl::OkStatus();
}

absl::Status AttentionDecodeRef(const AttentionParams& p) {
  const int d = p.head_dim;
  const int group = p.q_heads / p.kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  thread_local std::vector<float> scores;
  for (int t = 0; t < p.q_tokens; ++t) {
    for (int kvh = 0; kvh < p.kv_heads; ++kvh) {
      const int len = KvLength(p, kvh) - p.q_tokens + t + 1;
      scores.resize(static_cast<size_t>(group) * len);
      const float* q = p.q + static_cast<long>(t) * p.q_stride + static_cast<long>(kvh) * group * d;
      float* out = p.out + static_cast<long>(t) * p.out_stride + static_cast<long>(kvh) * group * d;
      // scores[g, j] = scale * q_g . k_j, one pass over the keys for the whole group.
      ForEachKvRun(p, kvh, false, len, [&](int j0, int n, const float* k) {
        for (int j = 0; j < n; ++j) {
          const float* kj = k + static_cast<long>(j) * d;
          for (int g = 0; g < group; ++g) {
            scores[static_cast<long>(g) * len + j0 + j] =
                scale * Dot(q + static_cast<long>(g) * d, kj, d);
          }
        }
      });
      SoftmaxParams sm{group, len, scores.data(), len};
      SoftmaxRef(sm).IgnoreError();  // validated shapes; the reference cannot fail
      // out_g = sum_j p[g, j] v_j in slot order, one pass over the values.
      for (int g = 0; g < group; ++g) {
        std::fill(out + static_cast<long>(g) * d, out + static_cast<long>(g + 1) * d, 0.0f);
      }
      ForEachKvRun(p, kvh, true, len, [&](int j0, int n, const float* v) {
        for (int j = 0; j < n; ++j) {
          const float* vj = v + static_cast<long>(j) * d;
          for (int g = 0; g < group; ++g) {
            const float w = scores[static_cast<long>(g) * len + j0 + j];
            float* o = out + static_cast<long>(g) * d;
            for (int i = 0; i < d; ++i) o[i] += w * vj[i];
          }
        }
      });
    }
  }
  return absl::OkStatus();
}

}  // namespace dapq::kernels::ref
