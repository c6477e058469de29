// File: kernels/cuda/cublaslt_api.cc
// cuBLASLt through dlopen (see cublaslt_api.h for why).
#include "kernels/cuda/cublaslt_api.h"

#include <dlfcn.h>

#include <mutex>
#include <string>

#include "absl/strings/str_cat.h"

namespace dapq::kernels::cuda {
namespace {

CublasLtApi api;
absl::Status load_status;
std::once_flag once;

template <typename Fn>
bool Resolve(void* lib, const char* name, Fn& fn, std::string& missing) {
  fn = reinterpret_cast<Fn>(dlsym(lib, name));
  if (fn == nullptr) missing = name;
  return fn != nullptr;
}

absl::Status Load() {
  const std::string versioned = absl::StrCat("libcublasLt.so.", CUBLAS_VER_MAJOR);
  void* lib = dlopen(versioned.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr) lib = dlopen("libcublasLt.so", RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr) {
    const char* why = dlerror();
    return absl::FailedPreconditionError(absl::StrCat("cuBLASLt: cannot load ", versioned, ": ",
                                                      why != nullptr ? why : "unknown error"));
  }
  std::string missing;
  // Every symbol, or an error naming the first missing one (the library stays loaded).
  const bool ok =
      Resolve(lib, "cublasLtCreate", api.cublasLtCreate, missing) &&
      Resolve(lib, "cublasLtGetStatusName", api.cublasLtGetStatusName, missing) &&
      Resolve(lib, "cublasLtGetStatusString", api.cublasLtGetStatusString, missing) &&
      Resolve(lib, "cublasLtMatmul", api.cublasLtMatmul, missing) &&
      Resolve(lib, "cublasLtMatmulAlgoGetHeuristic", api.cublasLtMatmulAlgoGetHeuristic, missing) &&
      Resolve(lib, "cublasLtMatmulDescCreate", api.cublasLtMatmulDescCreate, missing) &&
      Resolve(lib, "cublasLtMatmulDescDestroy", api.cublasLtMatmulDescDestroy, missing) &&
      Resolve(lib, "cublasLtMatmulDescSetAttribute", api.cublasLtMatmulDescSetAttribute, missing) &&
      Resolve(lib, "cublasLtMatmulPreferenceCreate", api.cublasLtMatmulPreferenceCreate, missing) &&
      Resolve(lib, "cublasLtMatmulPreferenceDestroy", api.cublasLtMatmulPreferenceDestroy,
              missing) &&
      Resolve(lib, "cublasLtMatmulPreferenceSetAttribute", api.cublasLtMatmulPreferenceSetAttribute,
              missing) &&
      Resolve(lib, "cublasLtMatrixLayoutCreate", api.cublasLtMatrixLayoutCreate, missing) &&
      Resolve(lib, "cublasLtMatrixLayoutDestroy", api.cublasLtMatrixLayoutDestroy, missing);
  if (!ok) {
    return absl::FailedPreconditionError(
        absl::StrCat("cuBLASLt: ", versioned, " has no symbol ", missing));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status LoadCublasLt() {
  std::call_once(once, [] { load_status = Load(); });
  return load_status;
}

const CublasLtApi& Lt() { return api; }

}  // namespace dapq::kernels::cuda
