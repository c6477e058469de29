// File: kernels/validate.cc
// Shape, stride and pointer validation shared by every backend; errors name the field.
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "kernels/activation.h"
#include "kernels/attention.h"
#include "kernels/attention_scores.h"
#include "kernels/embedding.h"
#include "kernels/fixed_point.h"
#include "kernels/gemm.h"
#include "kernels/kv_append.h"
#include "kernels/kv_compact.h"
#include "kernels/pooling.h"
#include "kernels/rms_norm.h"
#include "kernels/rope.h"
#include "kernels/softmax.h"

namespace dapq::kernels {
namespace {
absl::Status Bad(const char* op, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(op, ": ", what));
}
}  // namespace

absl::Status ValidateGemm(const GemmParams& p) {
  if (p.m < 0 || p.n < 0 || p.k < 0)
    return Bad("Gemm", absl::StrCat("negative shape m=", p.m, " n=", p.n, " k=", p.k));
  const bool bf16 = p.b_dtype == DType::kBF16;
  if (!p.a || !p.c || (bf16 ? !p.b_bf16 : !p.b)) return Bad("Gemm", "null pointer");
  if (bf16 && (!p.trans_b || p.alpha != 1.0f || p.beta != 0.0f)) {
    return Bad("Gemm", "bf16 weights need trans_b, alpha 1 and beta 0 (a linear layer)");
  }
  if (p.lda < p.k) return Bad("Gemm", absl::StrCat("lda=", p.lda, " < k=", p.k));
  if (p.ldb < (p.trans_b ? p.k : p.n))
    return Bad("Gemm", absl::StrCat("ldb=", p.ldb, " too small"));
  if (p.ldc < p.n) return Bad("Gemm", absl::StrCat("ldc=", p.ldc, " < n=", p.n));
  return absl::OkStatus();
}

absl::Status ValidateRmsNorm(const RmsNormParams& p) {
  if (p.rows < 0 || p.dim <= 0)
    return Bad("RmsNorm", absl::StrCat("rows=", p.rows, " dim=", p.dim));
  if (!p.x || !p.weight || !p.out) return Bad("RmsNorm", "null pointer");
  if (p.x_stride < p.dim || p.out_stride < p.dim) return Bad("RmsNorm", "row stride < dim");
  if (!(p.eps >= 0.0f)) return Bad("RmsNorm", absl::StrCat("eps=", p.eps));
  return absl::OkStatus();
}

absl::Status ValidateAddRmsNorm(const AddRmsNormParams& p) {
  if (p.rows < 0 || p.dim <= 0)
    return Bad("AddRmsNorm", absl::StrCat("rows=", p.rows, " dim=", p.dim));
  if (!p.x || !p.residual || (p.out && !p.weight)) return Bad("AddRmsNorm", "null pointer");
  if (p.x_stride < p.dim || p.residual_stride < p.dim || (p.out && p.out_stride < p.dim)) {
    return Bad("AddRmsNorm", "row stride < dim");
  }
  if (p.out != nullptr && (p.out == p.x || p.out == p.residual)) {
    return Bad("AddRmsNorm", "out aliases x or residual");
  }
  if (!(p.eps >= 0.0f)) return Bad("AddRmsNorm", absl::StrCat("eps=", p.eps));
  return absl::OkStatus();
}

absl::Status ValidateEmbeddingDevice(const EmbeddingParams& p) {
  if (p.rows < 0 || p.dim <= 0 || p.vocab <= 0) {
    return Bad("Embedding", absl::StrCat("rows=", p.rows, " dim=", p.dim, " vocab=", p.vocab));
  }
  if (!p.tokens || !p.table || !p.out) return Bad("Embedding", "null pointer");
  if (p.out_stride < p.dim) return Bad("Embedding", "out_stride < dim");
  if (p.table_dtype == DType::kF16) return Bad("Embedding", "fp16 tables are not supported");
  return absl::OkStatus();
}

absl::Status ValidateEmbedding(const EmbeddingParams& p) {
  DAPQ_RETURN_IF_ERROR(ValidateEmbeddingDevice(p));
  for (int r = 0; r < p.rows; ++r) {
    if (p.tokens[r] < 0 || p.tokens[r] >= p.vocab) {
      return Bad("Embedding", absl::StrCat("token ", p.tokens[r], " at row ", r,
                                           " outside the vocabulary [0, ", p.vocab, ")"));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateKvAppendDevice(const KvAppendParams& p) {
  if (p.tokens < 0 || p.kv_heads <= 0 || p.head_dim <= 0) {
    return Bad("KvAppend", absl::StrCat("tokens=", p.tokens, " kv_heads=", p.kv_heads,
                                        " head_dim=", p.head_dim));
  }
  if (!p.k || !p.v || !p.first_slots || !p.block_table || !p.k_pool || !p.v_pool) {
    return Bad("KvAppend", "null pointer");
  }
  if (p.src_stride < p.kv_heads * p.head_dim) {
    return Bad("KvAppend", absl::StrCat("src_stride=", p.src_stride, " < kv_heads x head_dim"));
  }
  if (p.tokens_per_block <= 0 || (p.tokens_per_block & (p.tokens_per_block - 1)) != 0) {
    return Bad("KvAppend",
               absl::StrCat("tokens_per_block=", p.tokens_per_block, " not a power of two"));
  }
  if (p.block_stride < static_cast<long>(p.tokens_per_block) * p.head_dim) {
    return Bad("KvAppend",
               absl::StrCat("block_stride=", p.block_stride, " < tokens_per_block x head_dim"));
  }
  if (p.blocks_per_head <= 0 || p.pool_blocks <= 0) {
    return Bad("KvAppend",
               absl::StrCat("blocks_per_head=", p.blocks_per_head, " pool_blocks=", p.pool_blocks));
  }
  return absl::OkStatus();
}

absl::Status ValidateKvAppend(const KvAppendParams& p) {
  DAPQ_RETURN_IF_ERROR(ValidateKvAppendDevice(p));
  if (p.tokens == 0) return absl::OkStatus();
  for (int h = 0; h < p.kv_heads; ++h) {
    const long first = p.first_slots[h], last = first + p.tokens - 1;
    if (first < 0 || last >= static_cast<long>(p.blocks_per_head) * p.tokens_per_block) {
      return Bad("KvAppend", absl::StrCat("KV head ", h, " slots [", first, ", ", last + 1,
                                          ") outside its table of ", p.blocks_per_head,
                                          " blocks of ", p.tokens_per_block));
    }
    const int32_t* table = p.block_table + static_cast<long>(h) * p.blocks_per_head;
    for (long b = first / p.tokens_per_block; b <= last / p.tokens_per_block; ++b) {
      if (table[b] < 0 || table[b] >= p.pool_blocks) {
        return Bad("KvAppend", absl::StrCat("KV head ", h, " block ", b, " has id ", table[b],
                                            " outside the pool [0, ", p.pool_blocks, ")"));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateKvCompactDevice(const KvCompactParams& p) {
  if (p.heads <= 0 || p.head_dim <= 0 || p.keep_stride < 0) {
    return Bad("KvCompact", absl::StrCat("heads=", p.heads, " head_dim=", p.head_dim,
                                         " keep_stride=", p.keep_stride));
  }
  if (!p.keep || !p.counts || !p.block_table || !p.k_pool || !p.v_pool) {
    return Bad("KvCompact", "null pointer");
  }
  if (p.tokens_per_block <= 0 || (p.tokens_per_block & (p.tokens_per_block - 1)) != 0) {
    return Bad("KvCompact",
               absl::StrCat("tokens_per_block=", p.tokens_per_block, " not a power of two"));
  }
  if (p.block_stride < static_cast<long>(p.tokens_per_block) * p.head_dim) {
    return Bad("KvCompact",
               absl::StrCat("block_stride=", p.block_stride, " < tokens_per_block x head_dim"));
  }
  if (p.blocks_per_head <= 0 || p.pool_blocks <= 0) {
    return Bad("KvCompact",
               absl::StrCat("blocks_per_head=", p.blocks_per_head, " pool_blocks=", p.pool_blocks));
  }
  return absl::OkStatus();
}

absl::Status ValidateKvCompact(const KvCompactParams& p) {
  DAPQ_RETURN_IF_ERROR(ValidateKvCompactDevice(p));
  const long slots = static_cast<long>(p.blocks_per_head) * p.tokens_per_block;
  for (int h = 0; h < p.heads; ++h) {
    const int count = p.counts[h];
    if (count < 0 || count > p.keep_stride) {
      return Bad("KvCompact",
                 absl::StrCat("head ", h, " count=", count, " outside [0, ", p.keep_stride, "]"));
    }
    const int32_t* keep = p.keep + static_cast<long>(h) * p.keep_stride;
    const int32_t* table = p.block_table + static_cast<long>(h) * p.blocks_per_head;
    for (int i = 0; i < count; ++i) {
      if (keep[i] < i || keep[i] >= slots || (i > 0 && keep[i] <= keep[i - 1])) {
        return Bad("KvCompact",
                   absl::StrCat("head ", h, " keep[", i, "]=", keep[i],
                                ": not ascending inside the table's ", slots, " slots"));
      }
      for (const long slot : {static_cast<long>(i), static_cast<long>(keep[i])}) {
        const int32_t id = table[slot / p.tokens_per_block];
        if (id < 0 || id >= p.pool_blocks) {
          return Bad("KvCompact",
                     absl::StrCat("head ", h, " block ", slot / p.tokens_per_block, " has id ", id,
                                  " outside the pool [0, ", p.pool_blocks, ")"));
        }
      }
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateFixedPoint(const FixedPointParams& p) {
  if (p.n < 0) return Bad("ScoresToFixedPoint", absl::StrCat("n=", p.n));
  if (p.n > 0 && (!p.scores || !p.out)) return Bad("ScoresToFixedPoint", "null pointer");
  return absl::OkStatus();
}

absl::Status ValidateRope(const RopeParams& p) {
  if (p.tokens < 0 || p.heads <= 0)
    return Bad("Rope", absl::StrCat("tokens=", p.tokens, " heads=", p.heads));
  if (p.head_dim <= 0 || p.head_dim % 2 != 0)
    return Bad("Rope", absl::StrCat("head_dim=", p.head_dim, " must be even and positive"));
  if (!p.x || !p.positions || !p.inv_freq) return Bad("Rope", "null pointer");
  if (p.x_stride < p.heads * p.head_dim) return Bad("Rope", "x_stride < heads * head_dim");
  return absl::OkStatus();
}

absl::Status ValidateSoftmax(const SoftmaxParams& p) {
  if (p.rows < 0 || p.cols <= 0)
    return Bad("Softmax", absl::StrCat("rows=", p.rows, " cols=", p.cols));
  if (!p.x) return Bad("Softmax", "null pointer");
  if (p.stride < p.cols) return Bad("Softmax", "stride < cols");
  return absl::OkStatus();
}

absl::Status ValidateSwiGlu(const SwiGluParams& p) {
  if (p.rows < 0 || p.cols <= 0)
    return Bad("SwiGlu", absl::StrCat("rows=", p.rows, " cols=", p.cols));
  if (!p.gate || !p.up || !p.out) return Bad("SwiGlu", "null pointer");
  if (p.gate_stride < p.cols || p.up_stride < p.cols || p.out_stride < p.cols)
    return Bad("SwiGlu", "row stride < cols");
  return absl::OkStatus();
}

namespace {

// What both ValidateAttention and ValidateAttentionDevice check: everything but the lengths.
absl::Status ValidateAttentionShape(const AttentionParams& p) {
  if (p.q_tokens <= 0 || p.q_heads <= 0 || p.kv_heads <= 0 || p.head_dim <= 0) {
    return Bad("Attention", absl::StrCat("q_tokens=", p.q_tokens, " q_heads=", p.q_heads,
                                         " kv_heads=", p.kv_heads, " head_dim=", p.head_dim));
  }
  if (p.q_heads % p.kv_heads != 0)
    return Bad("Attention",
               absl::StrCat("q_heads=", p.q_heads, " not a multiple of kv_heads=", p.kv_heads));
  const bool paged = p.block_table != nullptr;
  if (!p.q || !p.out || (paged ? (!p.k_pool || !p.v_pool) : (!p.k || !p.v))) {
    return Bad("Attention", "null pointer");
  }
  if (!paged && p.kv_dtype != DType::kF32) {
    return Bad("Attention", absl::StrCat("kv_dtype=", DTypeName(p.kv_dtype),
                                         " needs paged K/V (block_table); contiguous K/V is fp32"));
  }
  if (paged && (p.tokens_per_block <= 0 || (p.tokens_per_block & (p.tokens_per_block - 1)) != 0)) {
    return Bad("Attention",
               absl::StrCat("tokens_per_block=", p.tokens_per_block, " not a power of two"));
  }
  if (paged && p.block_stride < static_cast<long>(p.tokens_per_block) * p.head_dim) {
    return Bad("Attention",
               absl::StrCat("block_stride=", p.block_stride, " < tokens_per_block x head_dim"));
  }
  if (p.q_stride < p.q_heads * p.head_dim || p.out_stride < p.q_heads * p.head_dim) {
    return Bad("Attention", "token stride < q_heads * head_dim");
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateAttentionDevice(const AttentionParams& p) {
  DAPQ_RETURN_IF_ERROR(ValidateAttentionShape(p));
  // Per-head lengths and block ids live in device memory on the GPU: there, kv_len bounds them.
  if (p.kv_len < p.q_tokens) {
    return Bad("Attention", absl::StrCat("kv_len=", p.kv_len, " < q_tokens=", p.q_tokens));
  }
  if (p.block_table != nullptr &&
      static_cast<long>(p.blocks_per_head) * p.tokens_per_block < p.kv_len) {
    return Bad("Attention", absl::StrCat("blocks_per_head=", p.blocks_per_head, " x ",
                                         p.tokens_per_block, " < kv_len=", p.kv_len));
  }
  return absl::OkStatus();
}

absl::Status ValidateAttention(const AttentionParams& p) {
  DAPQ_RETURN_IF_ERROR(ValidateAttentionShape(p));
  const bool paged = p.block_table != nullptr;
  for (int h = 0; h < p.kv_heads; ++h) {
    const int len = KvLength(p, h);
    if (len < p.q_tokens) {
      return Bad("Attention",
                 absl::StrCat("kv_len=", len, " (KV head ", h, ") < q_tokens=", p.q_tokens));
    }
    if (paged) {
      if (static_cast<long>(p.blocks_per_head) * p.tokens_per_block < len) {
        return Bad("Attention",
                   absl::StrCat("blocks_per_head=", p.blocks_per_head, " x ", p.tokens_per_block,
                                " < kv_len=", len, " (KV head ", h, ")"));
      }
      const long first = static_cast<long>(h) * p.blocks_per_head;
      const int needed = (len + p.tokens_per_block - 1) / p.tokens_per_block;
      for (int b = 0; b < needed; ++b) {
        const int32_t id = p.block_table[first + b];
        if (id < 0 || id >= p.pool_blocks) {
          return Bad("Attention", absl::StrCat("block id ", id, " (entry ", b, " of KV head ", h,
                                               ") outside the pool's ", p.pool_blocks, " blocks"));
        }
      }
    } else if (p.kv_heads > 1 && p.kv_head_stride < static_cast<long>(len) * p.head_dim) {
      return Bad("Attention", "kv_head_stride < kv_len * head_dim");
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateAttentionScoresDevice(const AttentionScoresParams& p) {
  if (p.queries < 0 || p.keys <= 0 || p.head_dim <= 0) {
    return Bad("AttentionScores",
               absl::StrCat("queries=", p.queries, " keys=", p.keys, " head_dim=", p.head_dim));
  }
  if (!p.q || !p.k || !p.scores) return Bad("AttentionScores", "null pointer");
  if (p.q_stride < p.head_dim) return Bad("AttentionScores", "q_stride < head_dim");
  return absl::OkStatus();
}

absl::Status ValidateAttentionScores(const AttentionScoresParams& p) {
  DAPQ_RETURN_IF_ERROR(ValidateAttentionScoresDevice(p));
  if (p.key_limits != nullptr) {
    for (int i = 0; i < p.queries; ++i) {
      if (p.key_limits[i] < 1 || p.key_limits[i] > p.keys) {
        return Bad("AttentionScores", absl::StrCat("key_limits[", i, "]=", p.key_limits[i],
                                                   " outside [1, ", p.keys, "]"));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status ValidatePool1d(const Pool1dParams& p) {
  if (p.rows < 0 || p.cols < 0)
    return Bad("Pool1d", absl::StrCat("rows=", p.rows, " cols=", p.cols));
  if (p.kernel < 1 || p.kernel % 2 == 0) {
    return Bad("Pool1d", absl::StrCat("kernel=", p.kernel, " must be odd and >= 1"));
  }
  if (!p.x || !p.out) return Bad("Pool1d", "null pointer");
  if (p.x == p.out) return Bad("Pool1d", "out must not alias x");
  return absl::OkStatus();
}

}  // namespace dapq::kernels
