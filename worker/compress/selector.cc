// File: worker/compress/selector.cc
// Pooling, fixed-point reduction and top-k selection.
#include "worker/compress/selector.h"

#include <algorithm>
#include <cmath>
#include <memory>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "kernels/pooling.h"
#include "worker/compress/allocator.h"

namespace dapq::worker::compress {
namespace {
constexpr double kFixedPointScale = 4294967296.0;      // 2^32
constexpr double kFixedPointMax = 4503599627370496.0;  // 2^52: sums of 2^11 heads fit int64

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

int64_t ToFixedPoint(float score) {
  if (!(score > 0.0f)) return 0;  // negative or NaN
  const double v = std::min(static_cast<double>(score) * kFixedPointScale, kFixedPointMax);
  return static_cast<int64_t>(std::llround(v));
}

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
  std::vector<float> pooled(scores.size());
  kernels::Pool1dParams pool{heads, n, c.pool_kernel, c.pool, scores.data(), pooled.data()};
  DAPQ_RETURN_IF_ERROR(kernels::Pool1d(pool));
  std::vector<int64_t> fixed(pooled.size());
  for (size_t i = 0; i < pooled.size(); ++i) fixed[i] = ToFixedPoint(pooled[i]);

  std::vector<std::vector<int32_t>> keep(heads);
  if (c.storage == Storage::kShared) {
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
      keep[h] = SelectKeepSet(std::span(fixed).subspan(static_cast<long>(h) * n, n), n, ctx.budget,
                              c.window, c.sinks);
    }
    return keep;
  }
  // Adaptive: every rank needs every head's importance to derive the same budgets.
  std::vector<int64_t> all(static_cast<size_t>(ctx.kv_heads_total) * n, 0);
  std::copy(fixed.begin(), fixed.end(), all.begin() + static_cast<long>(ctx.kv_head_begin) * n);
  DAPQ_RETURN_IF_ERROR(ctx.comm->AllReduceSum(all.data(), all.size()));
  const int budget = std::min(ctx.budget, n);
  const Fixed f = ClampFixed(budget, c.window, c.sinks);
  std::unique_ptr<bool[]> eligible(new bool[n]);  // sinks and window are kept anyway
  for (int j = 0; j < n; ++j) eligible[j] = j >= f.sinks && j < n - f.window;
  const std::vector<int> budgets =
      AdaptiveHeadBudgets(all, ctx.kv_heads_total, n, std::span<const bool>(eligible.get(), n),
                          budget - f.window - f.sinks, c.adaptive_floor);
  for (int h = 0; h < heads; ++h) {
    const int g = ctx.kv_head_begin + h;
    keep[h] = SelectKeepSet(std::span(all).subspan(static_cast<long>(g) * n, n), n,
                            budgets[g] + f.window + f.sinks, f.window, f.sinks);
  }
  return keep;
}

}  // namespace dapq::worker::compress
