// File: worker/compress/selector.cc
// Pooling, fixed-point reduction and top-k selection.
#include "worker/compress/selector.h"

#include <algorithm>
#include <cmath>
#include <memory>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "kernels/fixed_point.h"
#include "kernels/pooling.h"
#include "worker/compress/allocator.h"

namespace dapq::worker::compress {
namespace {
struct Fixed {
  int window, sinks;
};

Fixed ClampFixed(int budget, int window, int sinks) {
  Fixed f;
  f.window = std::clamp(window, 0, budget);
  f.sinks = std::clamp(sinks, 0, budget - f.window);
  return f;
}
}  // namespace

int64_t ToFixedPoint(float score) { return kernels::ScoreToFixedPoint(score); }

std::vector<int32_t> SelectKeepSet(std::span<const int64_t> importance, int n, int budget,
                                   int window, int sinks) {
  std::vector<int32_t> keep;
  if (budget >= n) {
    keep.resize(n);
    for (int j = 0; j < n; ++j) keep[j] = j;
    return keep;
  }
  const Fixed f = ClampFixed(budget, window, sinks);
  const int rest_begin = f.sinks, rest_end = n - f.window;
  std::vector<int32_t> candidates;
  for (int j = rest_begin; j < rest_end; ++j) candidates.push_back(j);
  const int take = std::min<int>(budget - f.window - f.sinks, candidates.size());
  auto better = [&](int32_t a, int32_t b) {
    return importance[a] != importance[b] ? importance[a] > importance[b] : a < b;
  };
  std::nth_element(candidates.begin(), candidates.begin() + take, candidates.end(), better);
  for (int j = 0; j < f.sinks; ++j) keep.push_back(j);
  keep.insert(keep.end(), candidates.begin(), candidates.begin() + take);
  for (int j = rest_end; j < n; ++j) keep.push_back(j);
  std::sort(keep.begin(), keep.end());
  return keep;
}

absl::StatusOr<std::vector<std::vector<int32_t>>> SelectLayer(const CompressionConfig& c,
                                                              const SelectionContext& ctx,
                                                              std::span<const float> scores) {
  const int n = ctx.n, heads = ctx.kv_heads;
  if (scores.size() != static_cast<size_t>(heads) * n) {
    return absl::InternalError(
        absl::StrCat("selector: ", scores.size(), " scores for ", heads, " heads x ", n, " slots"));
  }
  std::vector<int> len(heads, n);
  if (!ctx.lengths.empty()) {
    if (ctx.lengths.size() != static_cast<size_t>(heads)) {
      return absl::InternalError(
          absl::StrCat("selector: ", ctx.lengths.size(), " head lengths for ", heads, " heads"));
    }
    for (int h = 0; h < heads; ++h) {
      if (ctx.lengths[h] < 0 || ctx.lengths[h] > n) {
        return absl::InternalError(absl::StrCat("selector: head ", h, " holds ", ctx.lengths[h],
                                                " slots, outside [0, ", n, "]"));
      }
      len[h] = ctx.lengths[h];
    }
  }
  // Pooling over each head's evictable prefix only: the window is kept anyway, and its scores
  // must not raise its neighbours' (SnapKV pools scores[..., :-window]).
  std::vector<float> pooled(scores.begin(), scores.end());
  for (int h = 0; h < heads; ++h) {
    const int evictable =
        len[h] - ClampFixed(std::min(ctx.budget, len[h]), c.window, c.sinks).window;
    if (evictable <= 0) continue;
    const long row = static_cast<long>(h) * n;
    kernels::Pool1dParams pool{1,      evictable,           c.pool_kernel,
                               c.pool, scores.data() + row, pooled.data() + row};
    DAPQ_RETURN_IF_ERROR(kernels::Pool1d(pool));
  }
  std::vector<int64_t> fixed(pooled.size());
  DAPQ_RETURN_IF_ERROR(
      kernels::ScoresToFixedPoint({static_cast<long>(pooled.size()), pooled.data(), fixed.data()}));

  std::vector<std::vector<int32_t>> keep(heads);
  if (c.storage == Storage::kShared) {
    for (int h = 0; h < heads; ++h) {
      if (len[h] != n) {
        return absl::FailedPreconditionError(
            absl::StrCat("compression: shared storage needs every KV head of a layer equally "
                         "long, head ",
                         ctx.kv_head_begin + h, " holds ", len[h], " slots, another ", n,
                         " (the cache was compressed per head before)"));
      }
    }
    std::vector<int64_t> importance(n, 0);
    for (int h = 0; h < heads; ++h) {
      for (int j = 0; j < n; ++j) importance[j] += fixed[static_cast<long>(h) * n + j];
    }
    DAPQ_RETURN_IF_ERROR(ctx.comm->AllReduceSum(importance.data(), importance.size()));
    const std::vector<int32_t> set = SelectKeepSet(importance, n, ctx.budget, c.window, c.sinks);
    for (auto& k : keep) k = set;
    return keep;
  }
  if (c.allocator != Allocator::kAdaptive) {
    for (int h = 0; h < heads; ++h) {
      keep[h] = SelectKeepSet(std::span(fixed).subspan(static_cast<long>(h) * n, len[h]), len[h],
                              ctx.budget, c.window, c.sinks);
    }
    return keep;
  }
  // Adaptive: every rank needs every head's length and importance to derive the same budgets.
  std::vector<int64_t> lengths(ctx.kv_heads_total, 0);
  for (int h = 0; h < heads; ++h) lengths[ctx.kv_head_begin + h] = len[h];
  DAPQ_RETURN_IF_ERROR(ctx.comm->AllReduceSum(lengths.data(), lengths.size()));
  const int n_all = static_cast<int>(*std::max_element(lengths.begin(), lengths.end()));
  std::vector<int64_t> all(static_cast<size_t>(ctx.kv_heads_total) * n_all, 0);
  for (int h = 0; h < heads; ++h) {
    std::copy(fixed.begin() + static_cast<long>(h) * n,
              fixed.begin() + static_cast<long>(h) * n + len[h],
              all.begin() + static_cast<long>(ctx.kv_head_begin + h) * n_all);
  }
  DAPQ_RETURN_IF_ERROR(ctx.comm->AllReduceSum(all.data(), all.size()));
  const int budget = std::min(ctx.budget, n_all);
  const Fixed f = ClampFixed(budget, c.window, c.sinks);
  // Sinks, window and slots past a head's length are not selectable.
  std::unique_ptr<bool[]> eligible(new bool[all.size()]);
  for (int g = 0; g < ctx.kv_heads_total; ++g) {
    const int length = static_cast<int>(lengths[g]);
    for (int j = 0; j < n_all; ++j) {
      eligible[static_cast<long>(g) * n_all + j] = j >= f.sinks && j < length - f.window;
    }
  }
  const std::vector<int> budgets = AdaptiveHeadBudgets(
      all, ctx.kv_heads_total, n_all, std::span<const bool>(eligible.get(), all.size()),
      budget - f.window - f.sinks, c.adaptive_floor);
  for (int h = 0; h < heads; ++h) {
    const int g = ctx.kv_head_begin + h;
    keep[h] = SelectKeepSet(std::span(all).subspan(static_cast<long>(g) * n_all, len[h]), len[h],
                            budgets[g] + f.window + f.sinks, f.window, f.sinks);
  }
  return keep;
}

}  // namespace dapq::worker::compress
