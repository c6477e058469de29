// File: kernels/cuda/cuda_device.cc
// The CUDA execution context (kernels/device.h): a non-blocking stream on one device;
// device memory from cudaMallocAsync (freed with cudaFreeAsync on the same stream), pinned host
// memory from cudaHostAlloc; copies are cudaMemcpyAsync; events are cudaEvent_t without timing.
// Nothing here synchronises the host except Synchronize(). Compiled by the host compiler (no
// kernels), linked only into CUDA builds. Never run on a GPU yet.
#include <cuda_runtime.h>

#include "absl/strings/str_cat.h"
#include "common/cuda_status.h"
#include "kernels/device.h"

namespace dapq::kernels {
namespace {

// Switches to `ordinal` for the calling scope and back (the host thread may serve others).
class ScopedDevice {
 public:
  explicit ScopedDevice(int ordinal) {
    cudaGetDevice(&previous_);
    if (previous_ != ordinal) cudaSetDevice(ordinal);
  }
  ~ScopedDevice() { cudaSetDevice(previous_); }

 private:
  int previous_ = 0;
};

absl::Status OutOfMemory(cudaError_t err, size_t bytes, int ordinal, const char* what) {
  cudaGetLastError();  // cudaErrorMemoryAllocation is not sticky: clear it
  return absl::ResourceExhaustedError(absl::StrCat("cuda:", ordinal, ": ", what, " of ", bytes,
                                                   " bytes failed: ", cudaGetErrorString(err)));
}

void FreeDevice(void* ptr, void* stream) { cudaFreeAsync(ptr, static_cast<cudaStream_t>(stream)); }
void FreePinned(void* ptr, void*) { cudaFreeHost(ptr); }
void DestroyEvent(void* handle) { cudaEventDestroy(static_cast<cudaEvent_t>(handle)); }

cudaMemcpyKind ToCuda(CopyKind kind) {
  switch (kind) {
    case CopyKind::kHostToDevice:
      return cudaMemcpyHostToDevice;
    case CopyKind::kDeviceToHost:
      return cudaMemcpyDeviceToHost;
    case CopyKind::kDeviceToDevice:
      return cudaMemcpyDeviceToDevice;
  }
  return cudaMemcpyDefault;
}

class CudaContext final : public ExecutionContext {
 public:
  CudaContext(int ordinal, cudaStream_t stream) : ordinal_(ordinal), stream_(stream) {}
  ~CudaContext() override {
    ReleaseWorkspace();
    ScopedDevice on(ordinal_);
    cudaStreamSynchronize(stream_);  // stream-ordered frees finish before the stream goes
    cudaStreamDestroy(stream_);
  }

  Device device() const override { return Device{Backend::kCuda, ordinal_}; }
  Stream stream() const override { return Stream{Backend::kCuda, stream_}; }

  absl::StatusOr<DeviceMemory> Allocate(size_t bytes, MemoryKind kind) override {
    if (bytes == 0) return DeviceMemory();
    ScopedDevice on(ordinal_);
    void* ptr = nullptr;
    if (kind == MemoryKind::kPinnedHost) {
      const cudaError_t err = cudaHostAlloc(&ptr, bytes, cudaHostAllocPortable);
      if (err != cudaSuccess) return OutOfMemory(err, bytes, ordinal_, "cudaHostAlloc");
      return DeviceMemory(ptr, bytes, kind, &FreePinned, nullptr);
    }
    const cudaError_t err = cudaMallocAsync(&ptr, bytes, stream_);
    if (err == cudaErrorMemoryAllocation) return OutOfMemory(err, bytes, ordinal_, "cudaMalloc");
    DAPQ_CUDA_RETURN_IF_ERROR(err);
    return DeviceMemory(ptr, bytes, kind, &FreeDevice, stream_);
  }

  absl::Status CopyAsync(void* dst, const void* src, size_t bytes, CopyKind kind) override {
    if (bytes == 0) return absl::OkStatus();
    if (dst == nullptr || src == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("cuda:", ordinal_, ": copy of ", bytes,
                                                     " bytes with a null ",
                                                     dst == nullptr ? "destination" : "source"));
    }
    ScopedDevice on(ordinal_);
    DAPQ_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(dst, src, bytes, ToCuda(kind), stream_));
    return absl::OkStatus();
  }

  absl::StatusOr<Event> RecordEvent() override {
    ScopedDevice on(ordinal_);
    cudaEvent_t event = nullptr;
    DAPQ_CUDA_RETURN_IF_ERROR(cudaEventCreateWithFlags(&event, cudaEventDisableTiming));
    Event owned(event, &DestroyEvent);
    DAPQ_CUDA_RETURN_IF_ERROR(cudaEventRecord(event, stream_));
    return owned;
  }

  absl::Status StreamWait(const Event& event) override {
    if (event.handle() == nullptr) return absl::OkStatus();  // a CPU event: already complete
    ScopedDevice on(ordinal_);
    DAPQ_CUDA_RETURN_IF_ERROR(
        cudaStreamWaitEvent(stream_, static_cast<cudaEvent_t>(event.handle()), 0));
    return absl::OkStatus();
  }

  absl::StatusOr<bool> EventDone(const Event& event) override {
    if (event.handle() == nullptr) return true;
    const cudaError_t err = cudaEventQuery(static_cast<cudaEvent_t>(event.handle()));
    if (err == cudaErrorNotReady) return false;
    DAPQ_CUDA_RETURN_IF_ERROR(err);
    return true;
  }

  absl::Status MakeCurrent() override {
    DAPQ_CUDA_RETURN_IF_ERROR(cudaSetDevice(ordinal_));
    return absl::OkStatus();
  }

  absl::Status Synchronize() override {
    ScopedDevice on(ordinal_);
    DAPQ_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
    return absl::OkStatus();
  }

 private:
  const int ordinal_;
  const cudaStream_t stream_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<ExecutionContext>> CreateCudaContext(int ordinal) {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess || count == 0) {
    cudaGetLastError();
    return absl::FailedPreconditionError(
        absl::StrCat("device cuda:", ordinal, ": no usable CUDA device (cudaGetDeviceCount: ",
                     err != cudaSuccess ? cudaGetErrorString(err) : "found 0", ")"));
  }
  if (ordinal < 0 || ordinal >= count) {
    return absl::FailedPreconditionError(
        absl::StrCat("device cuda:", ordinal, ": this machine has ", count, " CUDA device(s)"));
  }
  ScopedDevice on(ordinal);
  cudaStream_t stream = nullptr;
  DAPQ_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  return std::make_unique<CudaContext>(ordinal, stream);
}

}  // namespace dapq::kernels
