// File: common/host_buffer.cc
// AllocateHostBuffer: aligned_alloc, and madvise(MADV_HUGEPAGE) on buffers of 2 MiB and more.
#include "common/host_buffer.h"

#include <sys/mman.h>

namespace dapq {
namespace {

constexpr size_t kSmallAlignment = 64;

size_t AlignmentFor(size_t bytes) {
  return bytes >= kHugePageBytes ? kHugePageBytes : kSmallAlignment;
}

}  // namespace

void* AllocateHostBuffer(size_t bytes) {
  if (bytes == 0) return nullptr;
  const size_t alignment = AlignmentFor(bytes);
  const size_t rounded = (bytes + alignment - 1) / alignment * alignment;
  if (rounded < bytes) return nullptr;
  void* p = std::aligned_alloc(alignment, rounded);
  // A hint: EINVAL where the kernel has no THP leaves ordinary pages, which is fine.
  if (p != nullptr && alignment == kHugePageBytes) madvise(p, rounded, MADV_HUGEPAGE);
  return p;
}

}  // namespace dapq
