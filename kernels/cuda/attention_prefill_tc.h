// File: kernels/cuda/attention_prefill_tc.h
// Launcher of the tensor-core prefill attention kernel (attention_prefill_tc.cu), which
// LaunchAttentionPrefill calls for the prefills kernels/prefill_tc_layout.h's
// PrefillUsesTensorCores selects. Included by .cu files only.
#ifndef DAPQ_KERNELS_CUDA_ATTENTION_PREFILL_TC_H_
#define DAPQ_KERNELS_CUDA_ATTENTION_PREFILL_TC_H_

#include <cuda_runtime.h>

#include "absl/status/status.h"
#include "kernels/attention.h"

namespace dapq::kernels::cuda {

// p as LaunchAttentionPrefill takes it, with PrefillUsesTensorCores(p) true and q_tokens > 0;
// `tiles` blocks of PrefillTcLayout::kBr query rows (LaunchAttentionPrefill checked the grid).
absl::Status LaunchAttentionPrefillTensorCores(const AttentionParams& p, unsigned tiles,
                                               cudaStream_t stream);

}  // namespace dapq::kernels::cuda

#endif  // DAPQ_KERNELS_CUDA_ATTENTION_PREFILL_TC_H_
