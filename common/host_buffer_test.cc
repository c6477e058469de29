// File: common/host_buffer_test.cc
// AllocateHostBuffer / MakeZeroedHostArray: alignment, zeroing, and that large buffers really
// carry the huge-page advice (the kernel's VmFlags "hg" on their mapping in /proc/self/smaps,
// on kernels with transparent huge pages).
#include "common/host_buffer.h"

#include <cstdint>
#include <fstream>
#include <sstream>
#include <string>

#include "gtest/gtest.h"

namespace dapq {
namespace {

// The VmFlags line of the mapping containing `p`, from /proc/self/smaps ("" if none).
std::string VmFlagsOf(const void* p) {
  std::ifstream smaps("/proc/self/smaps");
  const auto addr = reinterpret_cast<uintptr_t>(p);
  std::string line;
  bool inside = false;
  while (std::getline(smaps, line)) {
    uintptr_t begin = 0, end = 0;
    char dash = 0;
    std::istringstream head(line);
    if (head >> std::hex >> begin >> dash >> end && dash == '-') {
      inside = begin <= addr && addr < end;
    } else if (inside && line.rfind("VmFlags:", 0) == 0) {
      return line;
    }
  }
  return "";
}

TEST(HostBufferTest, LargeBuffersAreHugePageAlignedAndAdvised) {
  const size_t bytes = 3 * kHugePageBytes + 12345;
  HostArray<float> a = MakeZeroedHostArray<float>(bytes / sizeof(float));
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(a.get()) % kHugePageBytes, 0u);
  for (size_t i = 0; i < bytes / sizeof(float); i += 1021) ASSERT_EQ(a[i], 0.0f) << i;
  const std::string flags = VmFlagsOf(a.get());
  ASSERT_FALSE(flags.empty()) << "no mapping holds the buffer";
  // A kernel built without transparent huge pages has no such directory and refuses the advice
  // (the buffer is then ordinary memory); every other kernel records it, whatever the THP mode.
  if (std::ifstream("/sys/kernel/mm/transparent_hugepage/enabled").good()) {
    EXPECT_NE(flags.find(" hg"), std::string::npos) << flags;
  }
}

TEST(HostBufferTest, SmallBuffersAreCacheLineAligned) {
  for (size_t bytes : {size_t{1}, size_t{100}, size_t{4096}, kHugePageBytes - 1}) {
    HostArray<char> a = MakeZeroedHostArray<char>(bytes);
    ASSERT_NE(a, nullptr) << bytes;
    EXPECT_EQ(reinterpret_cast<uintptr_t>(a.get()) % 64, 0u) << bytes;
    EXPECT_EQ(a[bytes - 1], 0) << bytes;
  }
  EXPECT_EQ(MakeZeroedHostArray<float>(0), nullptr);
  EXPECT_EQ(AllocateHostBuffer(0), nullptr);
}

TEST(HostBufferTest, AbsurdSizesThrowBadAlloc) {
  EXPECT_THROW(MakeZeroedHostArray<double>(SIZE_MAX / 4), std::bad_alloc);
  EXPECT_EQ(AllocateHostBuffer(SIZE_MAX - 10), nullptr);
}

}  // namespace
}  // namespace dapq
