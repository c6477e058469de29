// File: kernels/cuda/gemm.cu
// Dense GEMM on the GPU through cuBLASLt, with kernels/gemm.h's contract:
// C = alpha * A * op(B) + beta * C, A [m, k] and C [m, n] fp32, B fp32 or bf16, all row-major.
//
// Row-major through a column-major library: a row-major matrix X [r, c] with row stride ld is, in
// the same memory, the column-major matrix X^T [c, r] with leading dimension ld. So instead of
// C = A * op(B) we ask cuBLASLt for C^T = op(B)^T * A^T, every operand read in place:
//   cuBLASLt "A" = our B: trans_b ? memory is B^T [k, n] col-major, op T gives B [n, k]
//                         : memory is B^T [n, k] col-major, op N;
//   cuBLASLt "B" = our A: memory is A^T [k, m] col-major, op N;
//   cuBLASLt "C" = "D" = our C: memory is C^T [n, m] col-major, leading dimension ldc.
// The problem cuBLASLt sees is (M, N, K) = (n, m, k); a linear layer (trans_b) is its "TN" case.
//
// fp32 weights: fp32 operands, CUBLAS_COMPUTE_32F (no TF32, no emulation): the exact fp32 mode
// that the CPU reference (OpenBLAS) also runs. bf16 weights (trans_b, alpha 1, beta 0): A is
// rounded to bf16 (round to nearest even) by ConvertToBf16Kernel into a workspace, then bf16 x
// bf16 products accumulate in fp32 (CUBLAS_COMPUTE_32F) into fp32 C. The CPU reference widens the
// weights instead and keeps A in fp32 (or, through oneDNN, rounds A too), so the two differ by
// the rounding of A: at most 2^-8 * sum |a||b| per element (tests/parity/gemm_parity_test.cc).
// m == 0 or n == 0 does nothing; k == 0 is C = beta * C (ScaleKernel; cuBLASLt rejects K = 0).
//
// State kept for the process lifetime (LtState, never destroyed): one cuBLASLt handle per device
// (a cublasLtHandle_t may be shared between threads) and, per shape (device, m, n, k, strides,
// dtype, trans_b, alpha == 1, beta == 0 and the pointers' alignments), the algorithm chosen by
// cublasLtMatmulAlgoGetHeuristic, which therefore runs once per shape. Both are created under
// one mutex. The descriptors are rebuilt per call (host-only and cheap).
// Device memory: one stream-ordered allocation per call (cudaMallocAsync / cudaFreeAsync on the
// caller's stream) holds the bf16 copy of A and the matmul workspace the chosen algorithm needs
// (at most 32 MiB, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES). A buffer allocated once per device
// would be shared by calls on different streams at the same time; the stream-ordered one cannot
// be. Nothing here synchronises the host.
// Thread-safety: LaunchGemm may be called from any number of threads.
// Parity with kernels/ref/gemm_ref.cc: tests/parity/gemm_parity_test.cc. This file has been
// compiled but, at the time of writing, never run on a GPU (no GPU was available).
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <tuple>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "common/cuda_status.h"
#include "common/mutex.h"
#include "common/status_macros.h"
#include "kernels/cuda/cublaslt_api.h"
#include "kernels/cuda/launch.h"

namespace dapq::kernels::cuda {
namespace {

constexpr int kBlockSize = 256;
constexpr long kMaxBlocks = 4096;  // grid-stride loops cover larger tensors
constexpr uint64_t kMaxMatmulWorkspace = uint64_t{32} << 20;
// Alignment of the buffers carved from the per-call allocation (and the largest alignment
// cuBLASLt asks about).
constexpr uintptr_t kAlign = 256;
// Row stride (elements) of the bf16 copy of A: rows start on 16-byte boundaries.
constexpr int kBf16RowMultiple = 8;

// cublasStatus_t -> absl::InternalError naming the call, the status and the device.
absl::Status CublasError(cublasStatus_t status, const char* call, const char* file, int line) {
  int device = -1;
  cudaGetDevice(&device);
  return absl::InternalError(
      absl::StrCat(call, " at ", file, ":", line, ": ", Lt().cublasLtGetStatusName(status), " (",
                   static_cast<int>(status), "): ", Lt().cublasLtGetStatusString(status),
                   " (device ", device, ")"));
}

#define DAPQ_CUBLASLT_RETURN_IF_ERROR(expr)                                                      \
  do {                                                                                           \
    const cublasStatus_t dapq_cublas_status_ = (expr);                                           \
    if (dapq_cublas_status_ != CUBLAS_STATUS_SUCCESS)                                            \
      return ::dapq::kernels::cuda::CublasError(dapq_cublas_status_, #expr, __FILE__, __LINE__); \
  } while (0)

int GridFor(long elements) {
  return static_cast<int>(std::clamp((elements + kBlockSize - 1) / kBlockSize, 1L, kMaxBlocks));
}

// a: [m, k] fp32, row stride lda; out: [m, k] bf16, row stride ld_out (its padding is not
// written). Round to nearest, ties to even; NaN stays NaN (FloatToBf16 in kernels/types.h).
__global__ void ConvertToBf16Kernel(const float* a, int lda, int m, int k, __nv_bfloat16* out,
                                    int ld_out) {
  const long total = static_cast<long>(m) * k;
  const long step = static_cast<long>(gridDim.x) * blockDim.x;
  for (long i = static_cast<long>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += step) {
    const long row = i / k, col = i % k;
    out[row * ld_out + col] = __float2bfloat16_rn(a[row * lda + col]);
  }
}

// c: [m, n] fp32, row stride ldc. c = beta * c; with beta 0, c = 0 and c is not read (the BLAS
// convention: a NaN already in C does not survive beta 0).
__global__ void ScaleKernel(float* c, int ldc, int m, int n, float beta) {
  const long total = static_cast<long>(m) * n;
  const long step = static_cast<long>(gridDim.x) * blockDim.x;
  for (long i = static_cast<long>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += step) {
    float& x = c[(i / n) * ldc + i % n];
    x = beta == 0.0f ? 0.0f : beta * x;
  }
}

// The largest power of two (at most kAlign) that divides the address.
uint32_t AlignmentOf(const void* p) {
  const auto address = reinterpret_cast<uintptr_t>(p);
  const uintptr_t lowest_bit = address & (~address + 1);
  return static_cast<uint32_t>(address == 0 ? kAlign : std::min(lowest_bit, kAlign));
}

template <typename T>
T RoundUp(T x, T multiple) {
  return (x + multiple - 1) / multiple * multiple;
}

// Everything the chosen algorithm depends on.
struct ShapeKey {
  int device, m, n, k, lda, ldb, ldc;
  DType dtype;
  bool trans_b, alpha_one, beta_zero;
  uint32_t align_weights, align_activations, align_c;

  bool operator<(const ShapeKey& o) const {
    return std::tie(device, m, n, k, lda, ldb, ldc, dtype, trans_b, alpha_one, beta_zero,
                    align_weights, align_activations, align_c) <
           std::tie(o.device, o.m, o.n, o.k, o.lda, o.ldb, o.ldc, o.dtype, o.trans_b, o.alpha_one,
                    o.beta_zero, o.align_weights, o.align_activations, o.align_c);
  }
};

struct Plan {
  cublasLtHandle_t handle = nullptr;
  cublasLtMatmulAlgo_t algo{};
  size_t workspace_bytes = 0;
};

struct LtDeleter {
  void operator()(cublasLtMatmulDescOpaque_t* d) const { Lt().cublasLtMatmulDescDestroy(d); }
  void operator()(cublasLtMatrixLayoutOpaque_t* l) const { Lt().cublasLtMatrixLayoutDestroy(l); }
  void operator()(cublasLtMatmulPreferenceOpaque_t* p) const {
    Lt().cublasLtMatmulPreferenceDestroy(p);
  }
};
using MatmulDesc = std::unique_ptr<cublasLtMatmulDescOpaque_t, LtDeleter>;
using Layout = std::unique_ptr<cublasLtMatrixLayoutOpaque_t, LtDeleter>;
using Preference = std::unique_ptr<cublasLtMatmulPreferenceOpaque_t, LtDeleter>;

// The operation and the layouts in cuBLASLt's terms (see the file comment): weights = its A,
// activations = its B, c = its C and D.
struct Descriptors {
  MatmulDesc op;
  Layout weights, activations, c;
};

absl::StatusOr<Layout> MakeLayout(cudaDataType_t type, int rows, int cols, int ld) {
  cublasLtMatrixLayout_t layout = nullptr;
  DAPQ_CUBLASLT_RETURN_IF_ERROR(Lt().cublasLtMatrixLayoutCreate(
      &layout, type, static_cast<uint64_t>(rows), static_cast<uint64_t>(cols), ld));
  return Layout(layout);
}

// ld_activations: the row stride of the activations cuBLASLt reads (lda, or that of the bf16
// copy).
absl::StatusOr<Descriptors> MakeDescriptors(const GemmParams& p, int ld_activations) {
  const bool bf16 = p.b_dtype == DType::kBF16;
  const cudaDataType_t in_type = bf16 ? CUDA_R_16BF : CUDA_R_32F;
  Descriptors d;
  cublasLtMatmulDesc_t op = nullptr;
  DAPQ_CUBLASLT_RETURN_IF_ERROR(Lt().cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  d.op.reset(op);
  const cublasOperation_t trans_a = p.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t trans_b = CUBLAS_OP_N;
  DAPQ_CUBLASLT_RETURN_IF_ERROR(Lt().cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA,
                                                                    &trans_a, sizeof(trans_a)));
  DAPQ_CUBLASLT_RETURN_IF_ERROR(Lt().cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB,
                                                                    &trans_b, sizeof(trans_b)));
  // Weights in memory: trans_b ? B^T [k, n] : B^T [n, k], column-major, leading dimension ldb.
  DAPQ_ASSIGN_OR_RETURN(d.weights,
                        MakeLayout(in_type, p.trans_b ? p.k : p.n, p.trans_b ? p.n : p.k, p.ldb));
  DAPQ_ASSIGN_OR_RETURN(d.activations, MakeLayout(in_type, p.k, p.m, ld_activations));
  DAPQ_ASSIGN_OR_RETURN(d.c, MakeLayout(CUDA_R_32F, p.n, p.m, p.ldc));
  return d;
}

// Process-lifetime cuBLASLt state: a handle per device and the algorithm chosen per shape.
// Thread-safety: thread-safe (one mutex). Created on first use, never destroyed, so that no
// cuBLASLt call runs from a static destructor at exit.
class LtState {
 public:
  static LtState& Get() {
    static LtState* const state = new LtState;
    return *state;
  }

  // The handle for key.device and the algorithm for key's shape, choosing it on the first call
  // for the shape. d: that call's descriptors.
  absl::StatusOr<Plan> PlanFor(const ShapeKey& key, const Descriptors& d) {
    MutexLock lock(&mu_);
    auto it = plans_.find(key);
    if (it != plans_.end()) return it->second;
    Plan plan;
    DAPQ_ASSIGN_OR_RETURN(plan.handle, Handle(key.device));
    cublasLtMatmulPreference_t raw_pref = nullptr;
    DAPQ_CUBLASLT_RETURN_IF_ERROR(Lt().cublasLtMatmulPreferenceCreate(&raw_pref));
    const Preference pref(raw_pref);
    DAPQ_CUBLASLT_RETURN_IF_ERROR(Lt().cublasLtMatmulPreferenceSetAttribute(
        pref.get(), CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &kMaxMatmulWorkspace,
        sizeof(kMaxMatmulWorkspace)));
    // cuBLASLt assumes 256-byte aligned operands unless told otherwise.
    const std::pair<cublasLtMatmulPreferenceAttributes_t, uint32_t> alignments[] = {
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, key.align_weights},
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, key.align_activations},
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, key.align_c},
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, key.align_c}};
    for (const auto& [attribute, bytes] : alignments) {
      DAPQ_CUBLASLT_RETURN_IF_ERROR(
          Lt().cublasLtMatmulPreferenceSetAttribute(pref.get(), attribute, &bytes, sizeof(bytes)));
    }
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    DAPQ_CUBLASLT_RETURN_IF_ERROR(Lt().cublasLtMatmulAlgoGetHeuristic(
        plan.handle, d.op.get(), d.weights.get(), d.activations.get(), d.c.get(), d.c.get(),
        pref.get(), 1, &result, &found));
    if (found == 0 || result.state != CUBLAS_STATUS_SUCCESS) {
      return absl::InternalError(absl::StrCat(
          "Gemm on CUDA: cublasLtMatmulAlgoGetHeuristic found no algorithm for m=", key.m, " n=",
          key.n, " k=", key.k, " lda=", key.lda, " ldb=", key.ldb, " ldc=", key.ldc, " weights ",
          DTypeName(key.dtype), " trans_b=", key.trans_b, " (device ", key.device, ")"));
    }
    plan.algo = result.algo;
    plan.workspace_bytes = result.workspaceSize;
    plans_.emplace(key, plan);
    return plan;
  }

 private:
  LtState() = default;

  // REQUIRES: mu_ is held.
  absl::StatusOr<cublasLtHandle_t> Handle(int device) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto it = handles_.find(device);
    if (it != handles_.end()) return it->second;
    cublasLtHandle_t handle = nullptr;
    DAPQ_CUBLASLT_RETURN_IF_ERROR(Lt().cublasLtCreate(&handle));
    handles_.emplace(device, handle);
    return handle;
  }

  Mutex mu_;
  std::map<int, cublasLtHandle_t> handles_ ABSL_GUARDED_BY(mu_);
  std::map<ShapeKey, Plan> plans_ ABSL_GUARDED_BY(mu_);
};

absl::Status ScaleC(const GemmParams& p, cudaStream_t stream) {
  ScaleKernel<<<GridFor(static_cast<long>(p.m) * p.n), kBlockSize, 0, stream>>>(p.c, p.ldc, p.m,
                                                                                p.n, p.beta);
  return DAPQ_CUDA_LAUNCH_STATUS("ScaleKernel");
}

// Runs the matmul; `scratch` (256-byte aligned) starts with the bf16 copy of A
// (activation_bytes, bf16 weights only) followed by plan.workspace_bytes for cuBLASLt.
absl::Status Run(const GemmParams& p, const Descriptors& d, const Plan& plan, int ld_activations,
                 char* scratch, size_t activation_bytes, cudaStream_t stream) {
  const bool bf16 = p.b_dtype == DType::kBF16;
  const void* activations = p.a;
  if (bf16) {
    auto* a16 = reinterpret_cast<__nv_bfloat16*>(scratch);
    ConvertToBf16Kernel<<<GridFor(static_cast<long>(p.m) * p.k), kBlockSize, 0, stream>>>(
        p.a, p.lda, p.m, p.k, a16, ld_activations);
    DAPQ_RETURN_IF_ERROR(DAPQ_CUDA_LAUNCH_STATUS("ConvertToBf16Kernel"));
    activations = a16;
  }
  const void* weights = bf16 ? static_cast<const void*>(p.b_bf16) : p.b;
  void* workspace = plan.workspace_bytes > 0 ? scratch + activation_bytes : nullptr;
  DAPQ_CUBLASLT_RETURN_IF_ERROR(
      Lt().cublasLtMatmul(plan.handle, d.op.get(), &p.alpha, weights, d.weights.get(), activations,
                          d.activations.get(), &p.beta, p.c, d.c.get(), p.c, d.c.get(), &plan.algo,
                          workspace, plan.workspace_bytes, stream));
  return absl::OkStatus();
}

}  // namespace

absl::Status LaunchGemm(const GemmParams& p, void* stream) {
  if (p.m == 0 || p.n == 0) return absl::OkStatus();
  DAPQ_RETURN_IF_ERROR(LoadCublasLt());
  const auto s = static_cast<cudaStream_t>(stream);
  if (p.k == 0) return ScaleC(p, s);
  const bool bf16 = p.b_dtype == DType::kBF16;
  if (!bf16 && p.b_dtype != DType::kF32) {
    return absl::UnimplementedError(
        absl::StrCat("Gemm on CUDA: weights of type ", DTypeName(p.b_dtype)));
  }
  int device = 0;
  DAPQ_CUDA_RETURN_IF_ERROR(cudaGetDevice(&device));
  const int ld_activations = bf16 ? RoundUp(p.k, kBf16RowMultiple) : p.lda;
  const ShapeKey key{device,
                     p.m,
                     p.n,
                     p.k,
                     p.lda,
                     p.ldb,
                     p.ldc,
                     p.b_dtype,
                     p.trans_b,
                     p.alpha == 1.0f,
                     p.beta == 0.0f,
                     AlignmentOf(bf16 ? static_cast<const void*>(p.b_bf16) : p.b),
                     bf16 ? static_cast<uint32_t>(kAlign) : AlignmentOf(p.a),
                     AlignmentOf(p.c)};
  DAPQ_ASSIGN_OR_RETURN(const Descriptors d, MakeDescriptors(p, ld_activations));
  DAPQ_ASSIGN_OR_RETURN(const Plan plan, LtState::Get().PlanFor(key, d));

  const size_t activation_bytes =
      bf16 ? RoundUp<size_t>(sizeof(__nv_bfloat16) * p.m * ld_activations, kAlign) : 0;
  const size_t scratch_bytes = activation_bytes + plan.workspace_bytes;
  void* buffer = nullptr;
  char* scratch = nullptr;
  if (scratch_bytes > 0) {
    // kAlign spare bytes: the buffers start on a 256-byte boundary whatever the pool returns.
    DAPQ_CUDA_RETURN_IF_ERROR(cudaMallocAsync(&buffer, scratch_bytes + kAlign, s));
    scratch = reinterpret_cast<char*>(RoundUp(reinterpret_cast<uintptr_t>(buffer), kAlign));
  }
  const absl::Status status = Run(p, d, plan, ld_activations, scratch, activation_bytes, s);
  // The scratch goes back in stream order, after the work that uses it.
  if (buffer != nullptr) DAPQ_CUDA_RETURN_IF_ERROR(cudaFreeAsync(buffer, s));
  return status;
}

}  // namespace dapq::kernels::cuda
