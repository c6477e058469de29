// File: kernels/ref/kv_append_ref.cc
// Paged KV append on the CPU: each new key and value row is converted into its slot, found
// through the head's block table with the same index functions the attention kernels use.
#include "kernels/convert.h"
#include "kernels/paged_index.h"
#include "kernels/ref/ref_ops.h"

namespace dapq::kernels::ref {

absl::Status KvAppendRef(const KvAppendParams& p) {
  const size_t elem = DTypeSize(p.kv_dtype);
  auto* k_pool = static_cast<char*>(p.k_pool);
  auto* v_pool = static_cast<char*>(p.v_pool);
  for (int h = 0; h < p.kv_heads; ++h) {
    const int32_t* table = p.block_table + static_cast<long>(h) * p.blocks_per_head;
    for (int t = 0; t < p.tokens; ++t) {
      const long slot =
          PagedSlot(table, p.first_slots[h] + t, p.tokens_per_block, p.block_stride, p.head_dim);
      const long src = static_cast<long>(t) * p.src_stride + static_cast<long>(h) * p.head_dim;
      ConvertFromFloat(p.k + src, p.kv_dtype, k_pool + slot * elem, p.head_dim);
      ConvertFromFloat(p.v + src, p.kv_dtype, v_pool + slot * elem, p.head_dim);
    }
  }
  return absl::OkStatus();
}

}  // namespace dapq::kernels::ref
