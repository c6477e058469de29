// File: kernels/ref/cpu_context.cc
// The CPU execution context (kernels/device.h): host memory from common/host_buffer.h (aligned to
// 64 bytes, large buffers to 2 MiB with the huge-page advice; pinned host memory is the same
// thing here), copies are memcpy on the calling thread, so the stream is always drained and
// every event is complete when it is recorded.
#include <cstdlib>
#include <cstring>
#include <new>

#include "absl/strings/str_cat.h"
#include "common/host_buffer.h"
#include "kernels/device.h"

namespace dapq::kernels {
namespace {

void FreeHost(void* ptr, void*) { std::free(ptr); }

class CpuContext final : public ExecutionContext {
 public:
  ~CpuContext() override { ReleaseWorkspace(); }

  Device device() const override { return Device{Backend::kCpu, 0}; }
  Stream stream() const override { return Stream{}; }

  absl::StatusOr<DeviceMemory> Allocate(size_t bytes, MemoryKind kind) override {
    if (bytes == 0) return DeviceMemory();
    void* ptr = AllocateHostBuffer(bytes);
    if (ptr == nullptr) {
      return absl::ResourceExhaustedError(
          absl::StrCat("cpu: out of memory allocating ", bytes, " bytes"));
    }
    return DeviceMemory(ptr, bytes, kind, &FreeHost, nullptr);
  }

  absl::Status CopyAsync(void* dst, const void* src, size_t bytes, CopyKind) override {
    if (bytes == 0) return absl::OkStatus();
    if (dst == nullptr || src == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("cpu: copy of ", bytes, " bytes with a null ",
                                                     dst == nullptr ? "destination" : "source"));
    }
    std::memmove(dst, src, bytes);
    return absl::OkStatus();
  }

  absl::StatusOr<Event> RecordEvent() override { return Event(); }
  absl::Status StreamWait(const Event&) override { return absl::OkStatus(); }
  absl::StatusOr<bool> EventDone(const Event&) override { return true; }
  absl::Status Synchronize() override { return absl::OkStatus(); }
};

}  // namespace

std::unique_ptr<ExecutionContext> CreateCpuContext() { return std::make_unique<CpuContext>(); }

}  // namespace dapq::kernels
