// File: kernels/cuda_device_stub.cc
// CreateCudaContext in a build without CUDA (DAPQ_CUDA=OFF or no nvcc): Unimplemented, naming
// how to build it. The real context is kernels/cuda/cuda_device.cc.
#include "absl/strings/str_cat.h"
#include "kernels/device.h"

namespace dapq::kernels {

absl::StatusOr<std::unique_ptr<ExecutionContext>> CreateCudaContext(int ordinal) {
  return absl::UnimplementedError(absl::StrCat(
      "device cuda:", ordinal, ": this build has no CUDA (configure with -DDAPQ_CUDA=ON)"));
}

}  // namespace dapq::kernels
