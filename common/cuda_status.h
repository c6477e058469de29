// File: common/cuda_status.h
// DAPQ_CUDA_RETURN_IF_ERROR(expr): turns a failing CUDA runtime call into absl::InternalError
// carrying the expression, file:line, the error string and the current device.
// DAPQ_CUDA_LAUNCH_STATUS(kernel): the same for the last kernel launch (cudaGetLastError), naming
// the kernel; OK when the launch was accepted (errors of the kernel itself show later, in stream
// order).
// Only CUDA translation units (kernels/cuda/, worker/comm/nccl_*) include this header.
#ifndef DAPQ_COMMON_CUDA_STATUS_H_
#define DAPQ_COMMON_CUDA_STATUS_H_

#include <cuda_runtime.h>

#include <string>

#include "absl/status/status.h"

namespace dapq::internal {
inline absl::Status CudaErrorStatus(cudaError_t err, const char* expr, const char* file, int line) {
  int device = -1;
  cudaGetDevice(&device);
  return absl::InternalError(std::string(expr) + " at " + file + ":" + std::to_string(line) + ": " +
                             cudaGetErrorString(err) + " (device " + std::to_string(device) + ")");
}
inline absl::Status LaunchStatus(cudaError_t err, const char* kernel, const char* file, int line) {
  return err == cudaSuccess ? absl::OkStatus() : CudaErrorStatus(err, kernel, file, line);
}
}  // namespace dapq::internal

#define DAPQ_CUDA_LAUNCH_STATUS(kernel) \
  ::dapq::internal::LaunchStatus(cudaGetLastError(), kernel, __FILE__, __LINE__)

#define DAPQ_CUDA_RETURN_IF_ERROR(expr)                                                    \
  do {                                                                                     \
    const cudaError_t dapq_cuda_err_ = (expr);                                             \
    if (dapq_cuda_err_ != cudaSuccess)                                                     \
      return ::dapq::internal::CudaErrorStatus(dapq_cuda_err_, #expr, __FILE__, __LINE__); \
  } while (0)

#endif  // DAPQ_COMMON_CUDA_STATUS_H_
