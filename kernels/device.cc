// File: kernels/device.cc
// kernels/device.h's backend-neutral parts: device specs, tensor views, owned memory and events,
// the context factory and the workspace. The contexts themselves are in
// kernels/ref/cpu_context.cc and kernels/cuda/cuda_device.cc (or cuda_device_stub.cc).
#include "kernels/device.h"

#include <algorithm>
#include <limits>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace dapq::kernels {

absl::StatusOr<Device> ParseDevice(std::string_view spec) {
  if (spec == "cpu") return Device{Backend::kCpu, 0};
  if (spec == "cuda") return Device{Backend::kCuda, 0};
  constexpr std::string_view kCudaPrefix = "cuda:";
  if (spec.substr(0, kCudaPrefix.size()) == kCudaPrefix) {
    // Digits only (SimpleAtoi alone would accept "+1" and surrounding spaces).
    const std::string_view digits = spec.substr(kCudaPrefix.size());
    int ordinal = -1;
    if (!digits.empty() && digits.size() <= 4 &&
        std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }) &&
        absl::SimpleAtoi(std::string(digits), &ordinal) && ordinal < 1024) {
      return Device{Backend::kCuda, ordinal};
    }
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "device \"", std::string(spec), "\": expected cpu, cuda or cuda:N (N in [0, 1024))"));
}

std::string DeviceName(const Device& device) {
  return device.backend == Backend::kCpu ? "cpu" : absl::StrCat("cuda:", device.ordinal);
}

absl::StatusOr<TensorView> TensorView::Contiguous(void* data, DType dtype, Device device,
                                                  std::initializer_list<int64_t> shape) {
  if (shape.size() == 0 || shape.size() > kMaxRank) {
    return absl::InvalidArgumentError(
        absl::StrCat("TensorView: rank ", shape.size(), " not in [1, ", kMaxRank, "]"));
  }
  TensorView view;
  view.data = data;
  view.dtype = dtype;
  view.device = device;
  view.rank = static_cast<int>(shape.size());
  int i = 0;
  for (int64_t extent : shape) {
    if (extent < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("TensorView: dimension ", i, " has negative extent ", extent));
    }
    view.shape[i++] = extent;
  }
  int64_t stride = 1;
  for (int d = view.rank - 1; d >= 0; --d) {
    view.strides[d] = stride;
    if (view.shape[d] > 0 && stride > std::numeric_limits<int64_t>::max() / view.shape[d]) {
      return absl::InvalidArgumentError("TensorView: element count overflows int64");
    }
    stride *= view.shape[d];
  }
  return view;
}

int64_t TensorView::elements() const {
  int64_t n = rank > 0 ? 1 : 0;
  for (int d = 0; d < rank; ++d) n *= shape[d];
  return n;
}

int64_t TensorView::span_bytes() const {
  if (elements() == 0) return 0;
  int64_t last = 0;
  for (int d = 0; d < rank; ++d) last += (shape[d] - 1) * strides[d];
  return (last + 1) * DTypeSize(dtype);
}

bool TensorView::contiguous() const {
  int64_t expected = 1;
  for (int d = rank - 1; d >= 0; --d) {
    if (shape[d] != 1 && strides[d] != expected) return false;
    expected *= shape[d];
  }
  return true;
}

absl::StatusOr<TensorView> TensorView::Slice(int64_t i) const {
  if (rank < 2) return absl::InvalidArgumentError("TensorView::Slice: needs rank >= 2");
  if (i < 0 || i >= shape[0]) {
    return absl::InvalidArgumentError(
        absl::StrCat("TensorView::Slice: index ", i, " not in [0, ", shape[0], ")"));
  }
  TensorView out = *this;
  out.data = static_cast<char*>(data) + i * strides[0] * DTypeSize(dtype);
  out.rank = rank - 1;
  for (int d = 0; d < out.rank; ++d) {
    out.shape[d] = shape[d + 1];
    out.strides[d] = strides[d + 1];
  }
  out.shape[out.rank] = 0;
  out.strides[out.rank] = 0;
  return out;
}

DeviceMemory& DeviceMemory::operator=(DeviceMemory&& other) noexcept {
  if (this != &other) {
    Reset();
    ptr_ = std::exchange(other.ptr_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
    kind_ = other.kind_;
    deleter_ = std::exchange(other.deleter_, nullptr);
    owner_ = std::exchange(other.owner_, nullptr);
  }
  return *this;
}

void DeviceMemory::Reset() {
  if (ptr_ != nullptr && deleter_ != nullptr) deleter_(ptr_, owner_);
  ptr_ = nullptr;
  bytes_ = 0;
  deleter_ = nullptr;
  owner_ = nullptr;
}

Event& Event::operator=(Event&& other) noexcept {
  if (this != &other) {
    if (handle_ != nullptr && deleter_ != nullptr) deleter_(handle_);
    handle_ = std::exchange(other.handle_, nullptr);
    deleter_ = std::exchange(other.deleter_, nullptr);
  }
  return *this;
}

Event::~Event() {
  if (handle_ != nullptr && deleter_ != nullptr) deleter_(handle_);
}

absl::StatusOr<std::unique_ptr<ExecutionContext>> ExecutionContext::Create(const Device& device) {
  if (device.backend == Backend::kCpu) return CreateCpuContext();
  return CreateCudaContext(device.ordinal);
}

absl::StatusOr<void*> ExecutionContext::Workspace(size_t bytes) {
  if (bytes > workspace_.bytes()) {
    // Grow geometrically so a sequence of slightly larger requests allocates O(log) times.
    const size_t grown = std::max(bytes, workspace_.bytes() + workspace_.bytes() / 2);
    DAPQ_ASSIGN_OR_RETURN(DeviceMemory fresh, Allocate(grown));
    workspace_ = std::move(fresh);  // the old buffer is freed in stream order
  }
  return workspace_.data();
}

}  // namespace dapq::kernels
