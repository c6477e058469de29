// File: kernels/cuda/attention_scores.cu
// Attention-mass scoring (DapQ / SnapKV / H2O / TOVA) on the GPU, the two passes of
// kernels/ref/attention_scores_ref.cc without ever holding the queries x keys matrix:
//  1. one thread block per query: its warps walk the keys it sees (a lane per head_dim / 32
//     elements, the dot product reduced across the warp), keeping an online max and sum of
//     exponentials, merged across warps; the query's max and weight / sum go to a workspace;
//  2. one warp per key (kKeysPerBlock per block): for every query in order, the logit again and
//     scores[key] += (weight / sum) * exp(logit - max) where the query sees the key.
// Each key's score is summed over the queries in query order by one warp: deterministic run to
// run. All arithmetic is fp32. head_dim <= 256 (Unimplemented beyond).
// Parity with kernels/ref/attention_scores_ref.cc: tests/parity/kernels_parity_test.cc. This
// kernel has been compiled but, at the time of writing, never run on a GPU.
#include <cuda_runtime.h>

#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/cuda_status.h"
#include "kernels/cuda/launch.h"

namespace dapq::kernels::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = 32 * kWarps;
constexpr int kMaxDimPerLane = 8;  // head_dim <= 256
constexpr int kKeysPerBlock = kWarps;

__device__ __forceinline__ float WarpSum(float v) {
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// q_i . k_j * scale, computed by the whole warp (every lane gets it).
__device__ __forceinline__ float Logit(const AttentionScoresParams& p, int i, int j, int lane) {
  const float* q = p.q + static_cast<long>(i) * p.q_stride;
  const float* k = p.k + static_cast<long>(j) * p.head_dim;
  float dot = 0.0f;
#pragma unroll
  for (int c = 0; c < kMaxDimPerLane; ++c) {
    const int e = lane + 32 * c;
    if (e < p.head_dim) dot += q[e] * k[e];
  }
  return WarpSum(dot) * p.scale;
}

__device__ __forceinline__ int Limit(const AttentionScoresParams& p, int i) {
  return p.key_limits != nullptr ? p.key_limits[i] : p.keys;
}

// grid queries, kThreads threads: row_max[i] and row_weight[i] = weight_i / sum_i.
__global__ void __launch_bounds__(kThreads)
    RowStatsKernel(AttentionScoresParams p, float* row_max, float* row_weight) {
  __shared__ float warp_max[kWarps], warp_sum[kWarps];
  const int i = blockIdx.x, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int limit = Limit(p, i);
  float m = -INFINITY, sum = 0.0f;
  for (int j = warp; j < limit; j += kWarps) {
    const float s = Logit(p, i, j, lane);
    const float m_new = fmaxf(m, s);
    sum = sum * expf(m - m_new) + expf(s - m_new);
    m = m_new;
  }
  if (lane == 0) {
    warp_max[warp] = m;
    warp_sum[warp] = sum;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    float max = -INFINITY;
    for (int w = 0; w < kWarps; ++w) max = fmaxf(max, warp_max[w]);
    float total = 0.0f;
    for (int w = 0; w < kWarps; ++w) {
      if (warp_max[w] != -INFINITY) total += warp_sum[w] * expf(warp_max[w] - max);
    }
    row_max[i] = max;
    const float weight = p.weights != nullptr ? p.weights[i] : 1.0f;
    row_weight[i] = total > 0.0f ? weight / total : 0.0f;
  }
}

// grid ceil(keys / kKeysPerBlock), kThreads threads: a warp per key.
__global__ void __launch_bounds__(kThreads)
    AccumulateKernel(AttentionScoresParams p, const float* row_max, const float* row_weight) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int j = blockIdx.x * kKeysPerBlock + warp;
  if (j >= p.keys) return;
  float score = 0.0f;
  for (int i = 0; i < p.queries; ++i) {
    if (j >= Limit(p, i)) continue;  // uniform across the warp
    const float s = Logit(p, i, j, lane);
    score += row_weight[i] * expf(s - row_max[i]);
  }
  if (lane == 0) p.scores[j] += score;
}

}  // namespace

absl::Status LaunchAttentionScores(const AttentionScoresParams& p, void* stream) {
  if (p.head_dim > 32 * kMaxDimPerLane) {
    return absl::UnimplementedError(absl::StrCat("AttentionScores on CUDA: head_dim=", p.head_dim,
                                                 " (at most ", 32 * kMaxDimPerLane, ")"));
  }
  if (p.queries == 0) return absl::OkStatus();
  const auto s = static_cast<cudaStream_t>(stream);
  float* stats = nullptr;
  DAPQ_CUDA_RETURN_IF_ERROR(
      cudaMallocAsync(reinterpret_cast<void**>(&stats), 2 * sizeof(float) * p.queries, s));
  float* row_max = stats;
  float* row_weight = stats + p.queries;
  RowStatsKernel<<<p.queries, kThreads, 0, s>>>(p, row_max, row_weight);
  const absl::Status rows = DAPQ_CUDA_LAUNCH_STATUS("RowStatsKernel");
  const absl::Status accumulated = [&] {
    if (!rows.ok()) return absl::OkStatus();
    const int blocks = (p.keys + kKeysPerBlock - 1) / kKeysPerBlock;
    AccumulateKernel<<<blocks, kThreads, 0, s>>>(p, row_max, row_weight);
    return DAPQ_CUDA_LAUNCH_STATUS("AccumulateKernel");
  }();
  DAPQ_CUDA_RETURN_IF_ERROR(cudaFreeAsync(stats, s));
  return rows.ok() ? accumulated : rows;
}

}  // namespace dapq::kernels::cuda
