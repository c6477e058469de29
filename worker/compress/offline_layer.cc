// File: worker/compress/offline_layer.cc
// Scoring inputs from [heads, n, d] tensors, RoPE in either direction, scoring and selection.
#include "worker/compress/offline_layer.h"

#include <algorithm>
#include <memory>
#include <numeric>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "worker/comm/in_process_communicator.h"
#include "worker/compress/allocator.h"
#include "worker/compress/internal/query_stats.h"
#include "worker/compress/scorer.h"
#include "worker/compress/selector.h"

namespace dapq::worker::compress {
namespace {

namespace wc = ::dapq::worker::compress;

// [heads, n, d] -> [n, heads, d] (the layout of ScoringInputs' queries).
std::vector<float> TokenMajor(const float* x, int heads, int n, int d) {
  std::vector<float> out(static_cast<size_t>(heads) * n * d);
  for (int h = 0; h < heads; ++h) {
    for (int t = 0; t < n; ++t) {
      const float* src = x + (static_cast<long>(h) * n + t) * d;
      std::copy(src, src + d, out.begin() + (static_cast<long>(t) * heads + h) * d);
    }
  }
  return out;
}

// Rotates every token t of x ([n, heads, d]) to position sign * t: +1 applies RoPE, -1 undoes it.
absl::Status RotateAll(std::vector<float>& x, int n, int heads, int d, int sign,
                       const LayerTensors& t) {
  std::vector<int32_t> positions(n);
  for (int i = 0; i < n; ++i) positions[i] = sign * i;
  kernels::RopeParams p{n,          heads,        d, x.data(), heads * d, positions.data(),
                        t.inv_freq, t.rope_layout};
  return kernels::Rope(p);
}

// What the method reads of the queries.
struct QueryUse {
  bool pre = false;   // pre-RoPE content (DapQ re-rotates it; ExpectedAttention moments)
  bool post = false;  // post-RoPE queries as the model attended with them
};

QueryUse UseOf(const wc::CompressionConfig& c, const wc::ScorerNeeds& needs) {
  QueryUse use;
  // DapQ with the window's own positions and content re-applies the RoPE the queries already
  // carry: post-RoPE queries serve as they are (rotated by zero frequencies below).
  const bool dapq_rope_free = c.method == wc::Method::kDapq &&
                              c.positions == wc::Positions::kActual &&
                              c.content == wc::Content::kLast;
  use.pre = needs.query_statistics || (c.method == wc::Method::kDapq && !dapq_rope_free);
  use.post = needs.accumulated_attention || (needs.window_rows > 0 && !use.pre);
  return use;
}

absl::Status CheckRopeKnown(const wc::CompressionConfig& c, const QueryUse& use,
                            const LayerTensors& t) {
  if (t.inv_freq != nullptr) return absl::OkStatus();
  const std::string method(wc::MethodName(c.method));
  if (use.pre) {
    const char* why = c.method == wc::Method::kDapq
                          ? " rotates pre-RoPE query content to its pseudo-query positions"
                          : " averages RoPE over future positions of pre-RoPE query statistics";
    return absl::InvalidArgumentError(
        absl::StrCat("method ", method, why, ": give --rope-theta (and --rope-layout)",
                     t.queries_pre_rope ? "" : " so the post-RoPE --queries can be un-rotated"));
  }
  if (use.post && t.queries_pre_rope) {
    return absl::InvalidArgumentError(
        absl::StrCat("method ", method,
                     " scores with post-RoPE queries but --queries-pre-rope was given: add "
                     "--rope-theta (and --rope-layout) to rotate them"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<LayerResult> CompressLayerTensors(const wc::CompressionConfig& c,
                                                 const LayerTensors& t) {
  const int n = t.n, d = t.head_dim, q_heads = t.q_heads, kv_heads = t.kv_heads;
  LayerResult result;
  result.scores.assign(static_cast<size_t>(kv_heads) * n, 0.0f);
  if (c.method == wc::Method::kFull) {
    std::vector<int32_t> all(n);
    std::iota(all.begin(), all.end(), 0);
    result.keep.assign(kv_heads, all);
    result.budget = n;
    return result;
  }
  if (c.method == wc::Method::kDapq && c.mode == wc::DapqMode::kForward) {
    return absl::UnimplementedError(
        "dapq --mode forward runs placeholder tokens through the model's layers: it is not "
        "available from .npy tensors (use --mode pseudo)");
  }
  DAPQ_ASSIGN_OR_RETURN(std::unique_ptr<wc::Scorer> scorer, wc::MakeScorer(c));
  const wc::ScorerNeeds needs = scorer->Needs();
  const QueryUse use = UseOf(c, needs);
  DAPQ_RETURN_IF_ERROR(CheckRopeKnown(c, use, t));
  if (c.method == wc::Method::kExpectedAttention && t.values == nullptr) {
    return absl::InvalidArgumentError(
        "method expected_attention weighs each key by the norm of its value: give --values");
  }

  // Queries before and after RoPE, [n, q_heads, d]. Without a known RoPE only the given form
  // exists, and CheckRopeKnown ensured the method reads no other (zero frequencies rotate by 0).
  std::vector<float> given = TokenMajor(t.queries, q_heads, n, d);
  std::vector<float> other;
  std::vector<float> zero_freq;
  const float* inv_freq = t.inv_freq;
  if (inv_freq != nullptr && (use.pre || use.post)) {
    other = given;
    DAPQ_RETURN_IF_ERROR(RotateAll(other, n, q_heads, d, t.queries_pre_rope ? 1 : -1, t));
  } else {
    zero_freq.assign(std::max(d / 2, 1), 0.0f);
    if (inv_freq == nullptr) inv_freq = zero_freq.data();
  }
  const std::vector<float>& q_pre = t.queries_pre_rope || other.empty() ? given : other;
  const std::vector<float>& q_post = !t.queries_pre_rope || other.empty() ? given : other;

  std::vector<float> values;
  if (t.values == nullptr) values.assign(static_cast<size_t>(kv_heads) * n * d, 0.0f);

  wc::ScoringInputs in;
  in.layer = 0;
  in.n = n;
  in.next_position = n;
  in.q_heads = q_heads;
  in.kv_heads = kv_heads;
  in.head_dim = d;
  in.keys = t.keys;
  in.values = t.values != nullptr ? t.values : values.data();
  in.kv_head_stride = static_cast<long>(n) * d;
  in.inv_freq = inv_freq;
  in.rope_layout = t.rope_layout;

  const long row = static_cast<long>(q_heads) * d;
  const int rows = std::min(needs.window_rows, n);
  std::vector<int32_t> window_positions(rows);
  for (int i = 0; i < rows; ++i) window_positions[i] = n - rows + i;
  if (rows > 0) {
    in.window_q_pre = q_pre.data() + (n - rows) * row;
    in.window_q_post = q_post.data() + (n - rows) * row;
    in.window_positions = window_positions.data();
    in.window_rows = rows;
  }
  std::vector<float> attention;
  if (needs.accumulated_attention) {
    attention.assign(static_cast<size_t>(kv_heads) * n, 0.0f);
    DAPQ_RETURN_IF_ERROR(wc::internal::AccumulateCausalAttention(
        q_post.data(), n, q_heads, kv_heads, d, t.keys, in.kv_head_stride, n, attention.data()));
    in.accumulated_attention = attention.data();
  }
  std::vector<double> q_sum, q_outer;
  if (needs.query_statistics) {
    q_sum.assign(static_cast<size_t>(q_heads) * d, 0.0);
    q_outer.assign(static_cast<size_t>(q_heads) * d * d, 0.0);
    wc::internal::AccumulateQueryMoments(q_pre.data(), n, q_heads, d, q_sum.data(), q_outer.data());
    in.query_sum = q_sum.data();
    in.query_outer = q_outer.data();
    in.query_count = n;
  }
  DAPQ_RETURN_IF_ERROR(scorer->Score(in, result.scores));

  DAPQ_ASSIGN_OR_RETURN(auto group, worker::CreateInProcessGroup(1));
  wc::SelectionContext sel;
  sel.n = n;
  sel.kv_heads = kv_heads;
  sel.kv_head_begin = 0;
  sel.kv_heads_total = kv_heads;
  sel.budget = wc::LayerBudgets(c, n, 1)[0];
  sel.comm = group[0].get();
  DAPQ_ASSIGN_OR_RETURN(result.keep, wc::SelectLayer(c, sel, result.scores));
  result.budget = sel.budget;
  return result;
}

}  // namespace dapq::worker::compress
