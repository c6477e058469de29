// File: kernels/device.h
// The backend seam: where tensors live and how work on a device is ordered, with no CUDA types,
// so engine code can hold device memory, copy it and order work around it whichever backend a
// worker runs (`--device cpu|cuda:N`).
//   Device            a backend and an ordinal ("cpu", "cuda:0"), parsed by ParseDevice.
//   TensorView        a non-owning typed view: data, dtype, device, shape and strides (elements).
//   DeviceMemory      owned bytes on a device or in pinned host memory, freed by its destructor.
//   ExecutionContext  one ordered stream of work on a device: the Stream kernels are called with,
//                     allocation, asynchronous copies, events, and a reusable workspace.
// The CPU context runs everything in order on the calling thread (copies are memcpy, events are
// complete when recorded). The CUDA context (kernels/cuda/cuda_device.cc) owns a non-blocking
// stream; copies are cudaMemcpyAsync and nothing in it synchronises unless Synchronize() is
// called. BLAS handles are cached per device inside the GEMM launcher, not here.
// Thread-safety: a context is used by one thread at a time; DeviceMemory and Event may be moved
// between threads.
#ifndef DAPQ_KERNELS_DEVICE_H_
#define DAPQ_KERNELS_DEVICE_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/types.h"

namespace dapq::kernels {

struct Device {
  Backend backend = Backend::kCpu;
  int ordinal = 0;  // the CUDA device number; 0 for the CPU
  friend bool operator==(const Device&, const Device&) = default;
};

// "cpu", "cuda" (= cuda:0) or "cuda:N" with N in [0, 1024). InvalidArgument naming the spec and
// the accepted forms otherwise.
absl::StatusOr<Device> ParseDevice(std::string_view spec);
// "cpu" or "cuda:N": what ParseDevice reads back.
std::string DeviceName(const Device& device);

// A view of a strided tensor of up to 4 dimensions. Strides count elements, not bytes.
struct TensorView {
  static constexpr int kMaxRank = 4;
  void* data = nullptr;
  DType dtype = DType::kF32;
  Device device;
  int rank = 0;
  std::array<int64_t, kMaxRank> shape{};
  std::array<int64_t, kMaxRank> strides{};

  // A row-major contiguous view of `shape` (1 to kMaxRank non-negative extents).
  static absl::StatusOr<TensorView> Contiguous(void* data, DType dtype, Device device,
                                               std::initializer_list<int64_t> shape);
  int64_t elements() const;
  // Bytes from the first element to one past the last one the view can address.
  int64_t span_bytes() const;
  bool contiguous() const;
  // The view of index i of the first dimension: rank - 1 dimensions (InvalidArgument when out
  // of range or rank 1).
  absl::StatusOr<TensorView> Slice(int64_t i) const;
};

enum class MemoryKind {
  kDevice = 0,      // the context's device (host memory for the CPU context)
  kPinnedHost = 1,  // page-locked host memory a device copies from asynchronously
};

// Owned memory; freed (stream-ordered on CUDA) when destroyed. Move-only. Must not outlive the
// context that allocated it.
class DeviceMemory {
 public:
  using Deleter = void (*)(void* ptr, void* owner);
  DeviceMemory() = default;
  DeviceMemory(void* ptr, size_t bytes, MemoryKind kind, Deleter deleter, void* owner)
      : ptr_(ptr), bytes_(bytes), kind_(kind), deleter_(deleter), owner_(owner) {}
  DeviceMemory(DeviceMemory&& other) noexcept { *this = std::move(other); }
  DeviceMemory& operator=(DeviceMemory&& other) noexcept;
  DeviceMemory(const DeviceMemory&) = delete;
  DeviceMemory& operator=(const DeviceMemory&) = delete;
  ~DeviceMemory() { Reset(); }

  void* data() const { return ptr_; }
  size_t bytes() const { return bytes_; }
  MemoryKind kind() const { return kind_; }
  void Reset();

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
  MemoryKind kind_ = MemoryKind::kDevice;
  Deleter deleter_ = nullptr;
  void* owner_ = nullptr;
};

// A point in a context's stream. Move-only; destroyed with its backend handle.
class Event {
 public:
  using Deleter = void (*)(void* handle);
  Event() = default;
  Event(void* handle, Deleter deleter) : handle_(handle), deleter_(deleter) {}
  Event(Event&& other) noexcept { *this = std::move(other); }
  Event& operator=(Event&& other) noexcept;
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  ~Event();
  void* handle() const { return handle_; }  // cudaEvent_t on CUDA; nullptr on the CPU

 private:
  void* handle_ = nullptr;
  Deleter deleter_ = nullptr;
};

enum class CopyKind { kHostToDevice = 0, kDeviceToHost = 1, kDeviceToDevice = 2 };

class ExecutionContext {
 public:
  // The context for `device`: Unimplemented for CUDA in a build without it, FailedPrecondition
  // when the device does not exist (naming the count found).
  static absl::StatusOr<std::unique_ptr<ExecutionContext>> Create(const Device& device);
  virtual ~ExecutionContext() = default;

  virtual Device device() const = 0;
  // The stream kernels called for this context run on (kernels/types.h).
  virtual Stream stream() const = 0;

  // `bytes` of `kind` memory; 0 bytes gives an empty DeviceMemory. ResourceExhausted when the
  // device is out of memory, naming the size.
  virtual absl::StatusOr<DeviceMemory> Allocate(size_t bytes,
                                                MemoryKind kind = MemoryKind::kDevice) = 0;
  // Copies `bytes` in stream order. Host buffers of an asynchronous host-to-device or
  // device-to-host copy must stay alive (and, for real overlap, be pinned) until an event
  // recorded after the copy completes.
  virtual absl::Status CopyAsync(void* dst, const void* src, size_t bytes, CopyKind kind) = 0;
  // An event at the current end of the stream.
  virtual absl::StatusOr<Event> RecordEvent() = 0;
  // Work enqueued on this context after the call waits for `event` (possibly another context's
  // on the same device); the host does not wait.
  virtual absl::Status StreamWait(const Event& event) = 0;
  // Whether the work before `event` has finished; never blocks.
  virtual absl::StatusOr<bool> EventDone(const Event& event) = 0;
  // Makes the context's device the calling thread's current one, so that kernels this thread
  // launches on stream() run there (a CUDA stream belongs to one device). The context's own
  // calls do not need it. No-op on the CPU.
  virtual absl::Status MakeCurrent() { return absl::OkStatus(); }
  // Blocks the host until everything enqueued so far has run.
  virtual absl::Status Synchronize() = 0;

  // Scratch of at least `bytes` on the device, kept by the context and reused by later calls (it
  // grows, never shrinks). Stream-ordered: work enqueued earlier may still be using the previous
  // buffer when it grows, so it is freed in stream order.
  absl::StatusOr<void*> Workspace(size_t bytes);

 protected:
  // Derived destructors call this first: the workspace is freed through the derived context.
  void ReleaseWorkspace() { workspace_.Reset(); }

 private:
  DeviceMemory workspace_;
};

// The two implementations, for tests and for ExecutionContext::Create.
std::unique_ptr<ExecutionContext> CreateCpuContext();
absl::StatusOr<std::unique_ptr<ExecutionContext>> CreateCudaContext(int ordinal);

}  // namespace dapq::kernels

#endif  // DAPQ_KERNELS_DEVICE_H_
