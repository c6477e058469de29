// File: kvstore/cuda/cuda_tiers.cc
// NewDeviceTier / NewPinnedHostTier for CUDA builds: ArenaTier over cudaMalloc'd GPU memory
// (copies through a pinned staging buffer on the tier's own stream) and over cudaHostAlloc'd
// host memory. See kvstore/cuda_tiers.h for the contract.
#include "kvstore/cuda_tiers.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/cuda_status.h"
#include "common/status_macros.h"
#include "kvstore/internal/arena_tier.h"

// As DAPQ_CUDA_RETURN_IF_ERROR, but an allocation that finds no memory is ResourceExhausted
// (cudaErrorMemoryAllocation is not sticky: it is cleared and the context stays usable).
#define DAPQ_CUDA_ALLOC_RETURN_IF_ERROR(expr)                                         \
  do {                                                                                \
    absl::Status dapq_alloc_status_ = AllocStatus((expr), #expr, __FILE__, __LINE__); \
    if (!dapq_alloc_status_.ok()) return dapq_alloc_status_;                          \
  } while (0)

namespace dapq::kvstore {
namespace {
using internal::ArenaTier;
using internal::Extent;

absl::Status AllocStatus(cudaError_t err, const char* expr, const char* file, int line) {
  if (err == cudaSuccess) return absl::OkStatus();
  absl::Status s = dapq::internal::CudaErrorStatus(err, expr, file, line);
  if (err != cudaErrorMemoryAllocation) return s;
  cudaGetLastError();
  return absl::ResourceExhaustedError(s.message());
}

constexpr size_t kInitialStagingBytes = 1 << 20;

absl::Status WithContext(const absl::Status& s, const TierOptions& options) {
  if (s.ok()) return s;
  return absl::Status(s.code(), absl::StrCat("tier ", options.name, ": ", s.message()));
}

// FailedPrecondition when the process sees no CUDA device, InvalidArgument when `device` is not
// one of them.
absl::Status CheckDevice(int device) {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    cudaGetLastError();
    return absl::FailedPreconditionError(absl::StrCat(
        "cuda: no usable CUDA device (cudaGetDeviceCount: ", cudaGetErrorString(err), ")"));
  }
  if (count == 0) {
    return absl::FailedPreconditionError("cuda: no CUDA device (cudaGetDeviceCount found 0)");
  }
  if (device < 0 || device >= count) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cuda: device ", device, " out of range: this process sees ", count, " CUDA device(s)"));
  }
  return absl::OkStatus();
}

// Runs f() with `device` current on this thread, then restores the caller's device (the store's
// callers, e.g. a worker's compute thread, keep their own).
template <typename F>
auto OnDevice(int device, F&& f) -> decltype(f()) {
  int previous = -1;
  DAPQ_CUDA_RETURN_IF_ERROR(cudaGetDevice(&previous));
  if (previous != device) DAPQ_CUDA_RETURN_IF_ERROR(cudaSetDevice(device));
  auto result = f();
  if (previous != device) cudaSetDevice(previous);  // a failure shows at the next CUDA call
  return result;
}

// GPU memory; copies staged through pinned host memory on a non-blocking stream.
class DeviceTier final : public ArenaTier {
 public:
  static absl::StatusOr<std::unique_ptr<Tier>> Create(const TierOptions& options, int device) {
    DAPQ_RETURN_IF_ERROR(options.Validate());
    DAPQ_RETURN_IF_ERROR(WithContext(CheckDevice(device), options));
    std::unique_ptr<DeviceTier> tier(new DeviceTier(options, device));
    DAPQ_RETURN_IF_ERROR(WithContext(OnDevice(device, [&tier] { return tier->Init(); }), options));
    return std::unique_ptr<Tier>(std::move(tier));
  }

  ~DeviceTier() override {
    OnDevice(device_, [this] {
      if (stream_ != nullptr) {
        cudaStreamSynchronize(stream_);
        cudaStreamDestroy(stream_);
      }
      if (arena_ != nullptr) cudaFree(arena_);
      if (staging_ != nullptr) cudaFreeHost(staging_);
      return absl::OkStatus();
    }).IgnoreError();
  }

 private:
  DeviceTier(const TierOptions& options, int device) : ArenaTier(options), device_(device) {}

  // REQUIRES: device_ current.
  absl::Status Init() {
    DAPQ_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    DAPQ_CUDA_ALLOC_RETURN_IF_ERROR(cudaMalloc(&arena_, capacity_bytes()));
    return EnsureStaging(std::min<size_t>(capacity_bytes(), kInitialStagingBytes));
  }

  // Grows the staging buffer to at least `bytes` (doubling, up to the capacity: no block is
  // larger). REQUIRES: device_ current; stream_ idle.
  absl::Status EnsureStaging(size_t bytes) {
    if (bytes <= staging_bytes_) return absl::OkStatus();
    const size_t grown = std::max(bytes, std::min(2 * staging_bytes_, capacity_bytes()));
    if (staging_ != nullptr) {
      DAPQ_CUDA_RETURN_IF_ERROR(cudaFreeHost(staging_));
      staging_ = nullptr;
      staging_bytes_ = 0;
    }
    DAPQ_CUDA_ALLOC_RETURN_IF_ERROR(cudaHostAlloc(&staging_, grown, cudaHostAllocPortable));
    staging_bytes_ = grown;
    return absl::OkStatus();
  }

  // Waits for the copies enqueued by this call; returns `enqueued` if that failed (the stream is
  // drained either way, so the staging buffer is free again).
  absl::Status Synchronize(const absl::Status& enqueued) {
    const cudaError_t err = cudaStreamSynchronize(stream_);
    if (!enqueued.ok()) return enqueued;
    DAPQ_CUDA_RETURN_IF_ERROR(err);
    return absl::OkStatus();
  }

  absl::Status CopyIn(const std::string& block, const std::vector<Extent>& extents) override {
    if (block.empty()) return absl::OkStatus();
    return OnDevice(device_, [&]() -> absl::Status {
      DAPQ_RETURN_IF_ERROR(EnsureStaging(block.size()));
      std::memcpy(staging_, block.data(), block.size());
      auto enqueue = [&]() -> absl::Status {
        size_t at = 0;
        for (const Extent& e : extents) {
          DAPQ_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(static_cast<char*>(arena_) + e.offset,
                                                    static_cast<const char*>(staging_) + at,
                                                    e.length, cudaMemcpyHostToDevice, stream_));
          at += e.length;
        }
        return absl::OkStatus();
      };
      return Synchronize(enqueue());
    });
  }

  absl::StatusOr<std::string> CopyOut(const std::vector<Extent>& extents, size_t bytes) override {
    if (bytes == 0) return std::string();
    return OnDevice(device_, [&]() -> absl::StatusOr<std::string> {
      DAPQ_RETURN_IF_ERROR(EnsureStaging(bytes));
      auto enqueue = [&]() -> absl::Status {
        size_t at = 0;
        for (const Extent& e : extents) {
          DAPQ_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(static_cast<char*>(staging_) + at,
                                                    static_cast<const char*>(arena_) + e.offset,
                                                    e.length, cudaMemcpyDeviceToHost, stream_));
          at += e.length;
        }
        return absl::OkStatus();
      };
      DAPQ_RETURN_IF_ERROR(Synchronize(enqueue()));
      return std::string(static_cast<const char*>(staging_), bytes);
    });
  }

  const int device_;
  // Set by Init; used under ArenaTier's lock (CopyIn/CopyOut) or in the destructor.
  cudaStream_t stream_ = nullptr;
  void* arena_ = nullptr;    // capacity_bytes() of device memory
  void* staging_ = nullptr;  // staging_bytes_ of pinned host memory
  size_t staging_bytes_ = 0;
};

// Pinned host memory; copies are plain memcpy.
class PinnedHostTier final : public ArenaTier {
 public:
  static absl::StatusOr<std::unique_ptr<Tier>> Create(const TierOptions& options, int device) {
    DAPQ_RETURN_IF_ERROR(options.Validate());
    DAPQ_RETURN_IF_ERROR(WithContext(CheckDevice(device), options));
    std::unique_ptr<PinnedHostTier> tier(new PinnedHostTier(options, device));
    DAPQ_RETURN_IF_ERROR(
        WithContext(OnDevice(device,
                             [&tier]() -> absl::Status {
                               DAPQ_CUDA_ALLOC_RETURN_IF_ERROR(cudaHostAlloc(
                                   &tier->arena_, tier->capacity_bytes(), cudaHostAllocPortable));
                               return absl::OkStatus();
                             }),
                    options));
    return std::unique_ptr<Tier>(std::move(tier));
  }

  ~PinnedHostTier() override {
    if (arena_ == nullptr) return;
    OnDevice(device_, [this] {
      cudaFreeHost(arena_);
      return absl::OkStatus();
    }).IgnoreError();
  }

 private:
  PinnedHostTier(const TierOptions& options, int device) : ArenaTier(options), device_(device) {}

  absl::Status CopyIn(const std::string& block, const std::vector<Extent>& extents) override {
    size_t at = 0;
    for (const Extent& e : extents) {
      std::memcpy(static_cast<char*>(arena_) + e.offset, block.data() + at, e.length);
      at += e.length;
    }
    return absl::OkStatus();
  }

  absl::StatusOr<std::string> CopyOut(const std::vector<Extent>& extents, size_t bytes) override {
    std::string out(bytes, '\0');
    size_t at = 0;
    for (const Extent& e : extents) {
      std::memcpy(out.data() + at, static_cast<const char*>(arena_) + e.offset, e.length);
      at += e.length;
    }
    return out;
  }

  const int device_;       // whose context allocated the arena
  void* arena_ = nullptr;  // capacity_bytes() of pinned host memory; set by Create
};

}  // namespace

absl::StatusOr<std::unique_ptr<Tier>> NewDeviceTier(const TierOptions& options, int device) {
  return DeviceTier::Create(options, device);
}

absl::StatusOr<std::unique_ptr<Tier>> NewPinnedHostTier(const TierOptions& options, int device) {
  return PinnedHostTier::Create(options, device);
}

}  // namespace dapq::kvstore
