// File: kernels/cuda/cublaslt_api.h
// cuBLASLt, loaded with dlopen on first use rather than linked. Linked, libcublasLt's 94 KB of
// thread-local storage join the static TLS block glibc places on every thread's stack, and
// threads created with small explicit stacks then fail to start: civetweb's (100 KB, the
// /metrics server of prometheus-cpp) did, so a CUDA build's dapq-worker could not serve
// /metrics. Loaded later, its TLS is allocated per thread on demand instead.
// The function pointers carry cuBLASLt's own names and types (decltype of its declarations).
// Thread-safety: LoadCublasLt is thread-safe; the table is immutable once loaded.
#ifndef DAPQ_KERNELS_CUDA_CUBLASLT_API_H_
#define DAPQ_KERNELS_CUDA_CUBLASLT_API_H_

#include <cublasLt.h>

#include "absl/status/status.h"

namespace dapq::kernels::cuda {

struct CublasLtApi {
  decltype(&::cublasLtCreate) cublasLtCreate = nullptr;
  decltype(&::cublasLtGetStatusName) cublasLtGetStatusName = nullptr;
  decltype(&::cublasLtGetStatusString) cublasLtGetStatusString = nullptr;
  decltype(&::cublasLtMatmul) cublasLtMatmul = nullptr;
  decltype(&::cublasLtMatmulAlgoGetHeuristic) cublasLtMatmulAlgoGetHeuristic = nullptr;
  decltype(&::cublasLtMatmulDescCreate) cublasLtMatmulDescCreate = nullptr;
  decltype(&::cublasLtMatmulDescDestroy) cublasLtMatmulDescDestroy = nullptr;
  decltype(&::cublasLtMatmulDescSetAttribute) cublasLtMatmulDescSetAttribute = nullptr;
  decltype(&::cublasLtMatmulPreferenceCreate) cublasLtMatmulPreferenceCreate = nullptr;
  decltype(&::cublasLtMatmulPreferenceDestroy) cublasLtMatmulPreferenceDestroy = nullptr;
  decltype(&::cublasLtMatmulPreferenceSetAttribute) cublasLtMatmulPreferenceSetAttribute = nullptr;
  decltype(&::cublasLtMatrixLayoutCreate) cublasLtMatrixLayoutCreate = nullptr;
  decltype(&::cublasLtMatrixLayoutDestroy) cublasLtMatrixLayoutDestroy = nullptr;
};

// Loads the library (libcublasLt.so.<CUDA major>, then libcublasLt.so) once. FailedPrecondition
// naming the library and dlerror() when it or a symbol is missing; the same answer after.
absl::Status LoadCublasLt();
// The loaded table. REQUIRES: LoadCublasLt() returned OK.
const CublasLtApi& Lt();

}  // namespace dapq::kernels::cuda

#endif  // DAPQ_KERNELS_CUDA_CUBLASLT_API_H_
