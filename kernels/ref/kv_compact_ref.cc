// File: kernels/ref/kv_compact_ref.cc
// Paged KV compaction on the CPU: each head's kept rows move forward in slot order, in place,
// found through the head's block table with the attention kernels' index functions.
#include <cstring>

#include "kernels/paged_index.h"
#include "kernels/ref/ref_ops.h"

namespace dapq::kernels::ref {

absl::Status KvCompactRef(const KvCompactParams& p) {
  const size_t elem = DTypeSize(p.kv_dtype);
  const size_t row_bytes = static_cast<size_t>(p.head_dim) * elem;
  auto* k_pool = static_cast<char*>(p.k_pool);
  auto* v_pool = static_cast<char*>(p.v_pool);
  for (int h = 0; h < p.heads; ++h) {
    const int32_t* table = p.block_table + static_cast<long>(h) * p.blocks_per_head;
    const int32_t* keep = p.keep + static_cast<long>(h) * p.keep_stride;
    for (int i = 0; i < p.counts[h]; ++i) {
      if (keep[i] == i) continue;
      // keep[i] > i: slots are read before any later move writes them.
      const long dst = PagedSlot(table, i, p.tokens_per_block, p.block_stride, p.head_dim);
      const long src = PagedSlot(table, keep[i], p.tokens_per_block, p.block_stride, p.head_dim);
      std::memmove(k_pool + dst * elem, k_pool + src * elem, row_bytes);
      std::memmove(v_pool + dst * elem, v_pool + src * elem, row_bytes);
    }
  }
  return absl::OkStatus();
}

}  // namespace dapq::kernels::ref
