// File: kernels/dispatch.cc
// The public kernel entry points, generated from kernels/ops.inc: validate the params, then run the
// CPU reference or the CUDA launcher. The only file in kernels/ with #if DAPQ_HAVE_CUDA.
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "kernels/ref/ref_ops.h"

#if DAPQ_HAVE_CUDA
#include "kernels/cuda/launch.h"
#endif

namespace dapq::kernels {
namespace {

template <typename P>
absl::Status RunCuda(const char* name, const P& p, void* stream,
                     absl::Status (*launch)(const P&, void*)) {
  if (launch == nullptr) {
    return absl::UnimplementedError(
        absl::StrCat(name, ": no CUDA kernel", DAPQ_HAVE_CUDA ? "" : " (built without CUDA)"));
  }
  return launch(p, stream);
}

// The checks for the CUDA backend: the host's, except where they would read device memory.
template <typename P>
absl::Status ValidateForDevice(const P& p, absl::Status (*host)(const P&)) {
  return host(p);
}
absl::Status ValidateForDevice(const AttentionParams& p, absl::Status (*)(const AttentionParams&)) {
  return ValidateAttentionDevice(p);
}
absl::Status ValidateForDevice(const AttentionScoresParams& p,
                               absl::Status (*)(const AttentionScoresParams&)) {
  return ValidateAttentionScoresDevice(p);
}

absl::Status ValidateForDevice(const EmbeddingParams& p, absl::Status (*)(const EmbeddingParams&)) {
  return ValidateEmbeddingDevice(p);
}
absl::Status ValidateForDevice(const KvAppendParams& p, absl::Status (*)(const KvAppendParams&)) {
  return ValidateKvAppendDevice(p);
}
absl::Status ValidateForDevice(const KvCompactParams& p, absl::Status (*)(const KvCompactParams&)) {
  if (p.scratch == nullptr && p.keep_stride > 0) {
    return absl::InvalidArgumentError("KvCompact: the CUDA backend needs scratch");
  }
  return ValidateKvCompactDevice(p);
}

}  // namespace

#if DAPQ_HAVE_CUDA
#define DAPQ_CUDA_FN_CPU_CUDA(Name) &cuda::Launch##Name
#else
#define DAPQ_CUDA_FN_CPU_CUDA(Name) nullptr
#endif
#define DAPQ_CUDA_FN_CPU(Name) nullptr

#define DAPQ_KERNEL_OP(Name, Params, Validator, Backends)                             \
  absl::Status Name(const Params& p, Stream stream) {                                 \
    switch (stream.backend) {                                                         \
      case Backend::kCpu:                                                             \
        DAPQ_RETURN_IF_ERROR(Validator(p));                                           \
        return ref::Name##Ref(p);                                                     \
      case Backend::kCuda: {                                                          \
        DAPQ_RETURN_IF_ERROR(ValidateForDevice(p, &Validator));                       \
        absl::Status (*launch)(const Params&, void*) = DAPQ_CUDA_FN_##Backends(Name); \
        return RunCuda<Params>(#Name, p, stream.handle, launch);                      \
      }                                                                               \
    }                                                                                 \
    return absl::InvalidArgumentError(absl::StrCat(#Name, ": unknown backend"));      \
  }
#include "kernels/ops.inc"
#undef DAPQ_KERNEL_OP

}  // namespace dapq::kernels
