// File: kernels/cuda/launch.h
// Host entry points of the CUDA kernels (ops marked CPU_CUDA in kernels/ops.inc). The stream is
// passed as void* (a cudaStream_t) so that this header carries no CUDA types; only dispatch.cc
// includes it, and only when DAPQ_HAVE_CUDA.
#ifndef DAPQ_KERNELS_CUDA_LAUNCH_H_
#define DAPQ_KERNELS_CUDA_LAUNCH_H_

#include "absl/status/status.h"
#include "kernels/activation.h"
#include "kernels/attention.h"
#include "kernels/attention_scores.h"
#include "kernels/embedding.h"
#include "kernels/fixed_point.h"
#include "kernels/gemm.h"
#include "kernels/kv_append.h"
#include "kernels/kv_compact.h"
#include "kernels/pooling.h"
#include "kernels/rms_norm.h"
#include "kernels/rope.h"
#include "kernels/softmax.h"

namespace dapq::kernels::cuda {

absl::Status LaunchGemm(const GemmParams& p, void* stream);
absl::Status LaunchRmsNorm(const RmsNormParams& p, void* stream);
absl::Status LaunchAddRmsNorm(const AddRmsNormParams& p, void* stream);
absl::Status LaunchRope(const RopeParams& p, void* stream);
absl::Status LaunchSoftmax(const SoftmaxParams& p, void* stream);
absl::Status LaunchSwiGlu(const SwiGluParams& p, void* stream);
absl::Status LaunchAttentionPrefill(const AttentionParams& p, void* stream);
absl::Status LaunchAttentionDecode(const AttentionParams& p, void* stream);
absl::Status LaunchAttentionScores(const AttentionScoresParams& p, void* stream);
absl::Status LaunchEmbedding(const EmbeddingParams& p, void* stream);
absl::Status LaunchKvAppend(const KvAppendParams& p, void* stream);
absl::Status LaunchKvCompact(const KvCompactParams& p, void* stream);
absl::Status LaunchScoresToFixedPoint(const FixedPointParams& p, void* stream);
absl::Status LaunchPool1d(const Pool1dParams& p, void* stream);

}  // namespace dapq::kernels::cuda

#endif  // DAPQ_KERNELS_CUDA_LAUNCH_H_
