// File: worker/compress/allocator.cc
// Uniform / pyramid layer budgets and AdaKV head budgets.
#include "worker/compress/allocator.h"

#include <algorithm>
#include <cmath>
#include <tuple>

namespace dapq::worker::compress {

std::vector<int> LayerBudgets(const CompressionConfig& c, int n, int n_layers) {
  const int budget = std::min(c.BudgetFor(n), n);
  std::vector<int> out(n_layers, budget);
  if (c.allocator != Allocator::kPyramid || n_layers < 2) return out;
  // PyramidKV: selectable budget (B - w) spread from max_num (layer 0) down to min_num.
  const int w = std::min(std::max(c.window, 0), budget);
  const int selectable = budget - w;
  int min_num = static_cast<int>(selectable / c.pyramid_beta);
  int max_num = selectable * 2 - min_num;
  if (max_num > n - w) {
    max_num = n - w;
    min_num = std::max(0, selectable * 2 - max_num);
  }
  const int steps = (max_num - min_num) / (n_layers - 1);
  for (int l = 0; l < n_layers; ++l) out[l] = std::min(n, max_num - l * steps + w);
  return out;
}

std::vector<int> AdaptiveHeadBudgets(std::span<const int64_t> importance, int heads, int n,
                                     std::span<const bool> eligible, int selectable_per_head,
                                     float floor_fraction) {
  std::vector<int> budgets(heads, 0);
  const int floor_count = static_cast<int>(std::floor(floor_fraction * selectable_per_head));
  // Each head's eligible slots, best first.
  std::vector<std::tuple<int64_t, int, int>> pool;  // (score, head, slot) beyond each floor
  for (int h = 0; h < heads; ++h) {
    std::vector<std::pair<int64_t, int>> mine;
    for (int j = 0; j < n; ++j) {
      if (eligible[static_cast<long>(h) * n + j])
        mine.emplace_back(importance[static_cast<long>(h) * n + j], j);
    }
    std::sort(mine.begin(), mine.end(), [](const auto& a, const auto& b) {
      return a.first != b.first ? a.first > b.first : a.second < b.second;
    });
    budgets[h] = std::min<int>(floor_count, mine.size());
    for (size_t i = budgets[h]; i < mine.size(); ++i)
      pool.emplace_back(mine[i].first, h, mine[i].second);
  }
  long remaining = static_cast<long>(heads) * selectable_per_head;
  for (int b : budgets) remaining -= b;
  remaining = std::clamp<long>(remaining, 0, static_cast<long>(pool.size()));
  std::nth_element(pool.begin(), pool.begin() + remaining, pool.end(),
                   [](const auto& a, const auto& b) {
                     if (std::get<0>(a) != std::get<0>(b)) return std::get<0>(a) > std::get<0>(b);
                     if (std::get<1>(a) != std::get<1>(b)) return std::get<1>(a) < std::get<1>(b);
                     return std::get<2>(a) < std::get<2>(b);
                   });
  for (long i = 0; i < remaining; ++i) ++budgets[std::get<1>(pool[i])];
  return budgets;
}

}  // namespace dapq::worker::compress
