// File: worker/rank_weights.cc
// A rank's weight views: in place for the CPU, packed and uploaded for a device.
#include "worker/rank_weights.h"

#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "worker/model_runner.h"

namespace dapq::worker {
namespace {

// Where each slice of the rank's shard starts in its matrix, in elements.
struct ShardOffsets {
  long q_row0, kv_row0, f0;
  int q_dim, kv_dim, f;
};

ShardOffsets Offsets(const ModelConfig& c, const RankShard& s) {
  return {static_cast<long>(s.head_begin) * c.head_dim,
          static_cast<long>(s.kv_head_begin) * c.head_dim,
          s.ffn_begin,
          s.heads * c.head_dim,
          s.kv_heads * c.head_dim,
          s.ffn_size};
}

// One linear-layer matrix of the model as its dtype stores it.
const void* Matrix(const ModelWeights& w, const float* f32, const uint16_t* bf16) {
  return w.weights_dtype == kernels::DType::kBF16 ? static_cast<const void*>(bf16)
                                                  : static_cast<const void*>(f32);
}

// A block of `rows` x `cols` elements of `elem_bytes` at `src` (row stride src_ld elements),
// packed at `offset` bytes into the device allocation.
struct Piece {
  const std::byte* src = nullptr;
  size_t elem_bytes = 4;
  long rows = 0, cols = 0, src_ld = 0;
  size_t offset = 0;
  size_t bytes() const { return static_cast<size_t>(rows * cols) * elem_bytes; }
};

// Lays out the pieces of an upload back to back (256-byte aligned, as cuBLASLt prefers) and
// remembers where each landed, so views can be made once the allocation exists.
class Layout {
 public:
  // Returns the piece's index.
  size_t Add(const void* src, size_t elem_bytes, long rows, long cols, long src_ld) {
    Piece p;
    p.src = static_cast<const std::byte*>(src);
    p.elem_bytes = elem_bytes;
    p.rows = rows;
    p.cols = cols;
    p.src_ld = src_ld;
    p.offset = total_;
    total_ += (p.bytes() + kAlign - 1) / kAlign * kAlign;
    pieces_.push_back(p);
    return pieces_.size() - 1;
  }
  size_t AddVector(const float* src, long n) { return Add(src, sizeof(float), 1, n, n); }
  size_t total() const { return total_; }
  const std::vector<Piece>& pieces() const { return pieces_; }

 private:
  static constexpr size_t kAlign = 256;
  size_t total_ = 0;
  std::vector<Piece> pieces_;
};

}  // namespace

RankWeights RankWeights::InPlace(const ModelWeights& w, const RankShard& shard) {
  const ModelConfig& c = w.config;
  const ShardOffsets o = Offsets(c, shard);
  const kernels::DType dt = w.weights_dtype;
  const size_t es = static_cast<size_t>(kernels::DTypeSize(dt));
  // A view at element `offset` of a matrix with row stride ld.
  const auto view = [&](const float* f32, const uint16_t* bf16, long offset, int ld) {
    const auto* base = static_cast<const std::byte*>(Matrix(w, f32, bf16));
    return WeightMatrix{base + static_cast<size_t>(offset) * es, dt, ld};
  };
  RankWeights r;
  r.token_embedding = w.token_embedding;
  r.final_norm = w.final_norm;
  r.classifier = view(w.classifier, w.classifier_bf16, 0, c.dim);
  r.layers.reserve(w.layers.size());
  for (const LayerWeights& lw : w.layers) {
    RankLayerWeights l;
    l.attn_norm = lw.attn_norm;
    l.ffn_norm = lw.ffn_norm;
    l.wq = view(lw.wq, lw.bf16.wq, o.q_row0 * c.dim, c.dim);
    l.wk = view(lw.wk, lw.bf16.wk, o.kv_row0 * c.dim, c.dim);
    l.wv = view(lw.wv, lw.bf16.wv, o.kv_row0 * c.dim, c.dim);
    l.wo = view(lw.wo, lw.bf16.wo, o.q_row0, c.q_dim());
    l.w1 = view(lw.w1, lw.bf16.w1, o.f0 * c.dim, c.dim);
    l.w3 = view(lw.w3, lw.bf16.w3, o.f0 * c.dim, c.dim);
    l.w2 = view(lw.w2, lw.bf16.w2, o.f0, c.hidden_dim);
    l.bq = lw.bq != nullptr ? lw.bq + o.q_row0 : nullptr;
    l.bk = lw.bk != nullptr ? lw.bk + o.kv_row0 : nullptr;
    l.bv = lw.bv != nullptr ? lw.bv + o.kv_row0 : nullptr;
    r.layers.push_back(l);
  }
  return r;
}

absl::StatusOr<RankWeights> RankWeights::Upload(const ModelWeights& w, const RankShard& shard,
                                                kernels::ExecutionContext& context) {
  const ModelConfig& c = w.config;
  const ShardOffsets o = Offsets(c, shard);
  const kernels::DType dt = w.weights_dtype;
  const size_t es = static_cast<size_t>(kernels::DTypeSize(dt));
  // The in-place views name every slice's source; the upload packs each one.
  const RankWeights src = InPlace(w, shard);
  Layout layout;
  const auto add_matrix = [&](const WeightMatrix& m, long rows, long cols) {
    return layout.Add(m.data, es, rows, cols, m.ld);
  };
  const auto add_vector = [&](const float* v, long n) {
    return v == nullptr ? SIZE_MAX : layout.AddVector(v, n);
  };
  const size_t embedding = add_vector(src.token_embedding, static_cast<long>(c.vocab_size) * c.dim);
  const size_t final_norm = add_vector(src.final_norm, c.dim);
  // Only rank 0 computes logits. A tied fp32 classifier is the embedding already uploaded.
  const bool tied = dt == kernels::DType::kF32 && w.classifier == w.token_embedding;
  size_t classifier = SIZE_MAX;
  if (shard.rank == 0 && !tied) classifier = add_matrix(src.classifier, c.vocab_size, c.dim);
  struct LayerPieces {
    size_t attn_norm, ffn_norm, wq, wk, wv, wo, w1, w3, w2, bq, bk, bv;
  };
  std::vector<LayerPieces> lp;
  lp.reserve(src.layers.size());
  for (const RankLayerWeights& l : src.layers) {
    lp.push_back({add_vector(l.attn_norm, c.dim), add_vector(l.ffn_norm, c.dim),
                  add_matrix(l.wq, o.q_dim, c.dim), add_matrix(l.wk, o.kv_dim, c.dim),
                  add_matrix(l.wv, o.kv_dim, c.dim), add_matrix(l.wo, c.dim, o.q_dim),
                  add_matrix(l.w1, o.f, c.dim), add_matrix(l.w3, o.f, c.dim),
                  add_matrix(l.w2, c.dim, o.f), add_vector(l.bq, o.q_dim),
                  add_vector(l.bk, o.kv_dim), add_vector(l.bv, o.kv_dim)});
  }

  RankWeights r;
  auto memory = context.Allocate(layout.total());
  if (!memory.ok()) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "weights: rank ", shard.rank, " of ", shard.tp, " needs ", layout.total(), " bytes on ",
        kernels::DeviceName(context.device()), ": ", memory.status().message()));
  }
  r.memory_ = *std::move(memory);
  auto* base = static_cast<std::byte*>(r.memory_.data());
  // Pack each piece on the host (a column block is strided in the source), then copy it; one
  // staging buffer, reused after each copy has run.
  std::vector<std::byte> staging;
  for (const Piece& p : layout.pieces()) {
    const std::byte* from = p.src;
    const size_t row_bytes = static_cast<size_t>(p.cols) * p.elem_bytes;
    if (p.rows > 1 && p.src_ld != p.cols) {
      staging.resize(p.bytes());
      for (long i = 0; i < p.rows; ++i) {
        std::memcpy(staging.data() + i * row_bytes,
                    p.src + static_cast<size_t>(i * p.src_ld) * p.elem_bytes, row_bytes);
      }
      from = staging.data();
    }
    DAPQ_RETURN_IF_ERROR(
        context.CopyAsync(base + p.offset, from, p.bytes(), kernels::CopyKind::kHostToDevice));
    if (from == staging.data()) DAPQ_RETURN_IF_ERROR(context.Synchronize());
  }
  DAPQ_RETURN_IF_ERROR(context.Synchronize());

  const auto at = [&](size_t piece) -> const std::byte* {
    return piece == SIZE_MAX ? nullptr : base + layout.pieces()[piece].offset;
  };
  const auto vec = [&](size_t piece) { return reinterpret_cast<const float*>(at(piece)); };
  const auto mat = [&](size_t piece, int ld) { return WeightMatrix{at(piece), dt, ld}; };
  r.token_embedding = vec(embedding);
  r.final_norm = vec(final_norm);
  if (tied && shard.rank == 0) {
    r.classifier = WeightMatrix{r.token_embedding, dt, c.dim};
  } else if (classifier != SIZE_MAX) {
    r.classifier = mat(classifier, c.dim);
  }
  r.layers.reserve(lp.size());
  for (const LayerPieces& p : lp) {
    RankLayerWeights l;
    l.attn_norm = vec(p.attn_norm);
    l.ffn_norm = vec(p.ffn_norm);
    l.wq = mat(p.wq, c.dim);
    l.wk = mat(p.wk, c.dim);
    l.wv = mat(p.wv, c.dim);
    l.wo = mat(p.wo, o.q_dim);
    l.w1 = mat(p.w1, c.dim);
    l.w3 = mat(p.w3, c.dim);
    l.w2 = mat(p.w2, o.f);
    l.bq = vec(p.bq);
    l.bk = vec(p.bk);
    l.bv = vec(p.bv);
    r.layers.push_back(l);
  }
  return r;
}

}  // namespace dapq::worker
