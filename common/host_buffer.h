// File: common/host_buffer.h
// Host memory for large buffers that kernels stream through (model weights, CPU execution
// context allocations such as a host-context KV arena, the benchmarks' bandwidth limits).
// Buffers of at least 2 MiB are aligned to 2 MiB and advised MADV_HUGEPAGE: where transparent
// huge pages are "madvise" (the kernel's and Debian's default) or "always", the kernel backs them
// with 2 MiB pages, one TLB entry where 4 KiB pages need 512, and a decode step streaming the
// weights reads them 5-10% faster (bench/README.md, "Huge pages"). The advice is a hint: where
// THP is off, the buffer is ordinary memory. Smaller buffers are aligned to 64 bytes.
#ifndef DAPQ_COMMON_HOST_BUFFER_H_
#define DAPQ_COMMON_HOST_BUFFER_H_

#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <type_traits>

namespace dapq {

inline constexpr size_t kHugePageBytes = size_t{2} << 20;

// `bytes` of uninitialised memory as described above, released with std::free; null when
// bytes == 0 or out of memory.
void* AllocateHostBuffer(size_t bytes);

struct FreeHostBuffer {
  void operator()(void* p) const { std::free(p); }
};
template <typename T>
using HostArray = std::unique_ptr<T[], FreeHostBuffer>;

// `count` zeroed Ts (a trivial type) from AllocateHostBuffer; throws std::bad_alloc when out of
// memory, as std::make_unique<T[]> does.
template <typename T>
HostArray<T> MakeZeroedHostArray(size_t count) {
  static_assert(std::is_trivial_v<T>);
  if (count == 0) return nullptr;
  if (count > SIZE_MAX / sizeof(T)) throw std::bad_alloc();
  void* p = AllocateHostBuffer(count * sizeof(T));
  if (p == nullptr) throw std::bad_alloc();
  std::memset(p, 0, count * sizeof(T));
  return HostArray<T>(static_cast<T*>(p));
}

}  // namespace dapq

#endif  // DAPQ_COMMON_HOST_BUFFER_H_
