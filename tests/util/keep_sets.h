// File: tests/util/keep_sets.h
// The positions every (layer, global KV head) of a sequence kept, over all of an in-process
// engine's ranks: what the compression tests compare across TP degrees, modes and replays.
// Header-only; include it only from tests that link dapq_worker.
#ifndef DAPQ_TESTS_UTIL_KEEP_SETS_H_
#define DAPQ_TESTS_UTIL_KEEP_SETS_H_

#include <cstdint>
#include <map>
#include <utility>
#include <vector>

#include "worker/engine.h"

namespace dapq::testing {

using KeepSetMap = std::map<std::pair<int, int>, std::vector<int32_t>>;

inline KeepSetMap KeepSets(const worker::Engine& e, const worker::Sequence& s) {
  KeepSetMap sets;
  const int per_rank = e.config().n_kv_heads / e.options().tp;
  for (int r = 0; r < e.options().tp; ++r) {
    for (int l = 0; l < e.config().n_layers; ++l) {
      for (int h = 0; h < per_rank; ++h) {
        auto p = s.cache(r).positions(l, h);
        sets[{l, r * per_rank + h}] = std::vector<int32_t>(p.begin(), p.end());
      }
    }
  }
  return sets;
}

}  // namespace dapq::testing

#endif  // DAPQ_TESTS_UTIL_KEEP_SETS_H_
