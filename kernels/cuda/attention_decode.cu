// File: kernels/cuda/attention_decode.cu
// Paged decode attention on the GPU, split-KV (flash-decoding): for each (query token, KV head)
// pair, the slots it sees are cut into parts (kernels/paged_index.h's SplitCount / SplitPart,
// the CPU kernel's arithmetic), one thread block per (pair, part). A block loads its GQA group's
// queries into shared memory; each warp walks every kWarps-th slot of the part, its 32 lanes
// holding head_dim / 32 elements of a key and a value row (read from the block pool through the
// block table, widened from bf16 / fp16 in registers), and keeps an online softmax per query
// (running max, sum, weighted values). The warps' states are merged in shared memory. With one
// part the block writes the output; with several, each part's normalised output, max and sum go
// to a stream-ordered workspace and a second kernel combines the parts through their log-sum-exp.
// All arithmetic is fp32. Limits: head_dim <= 256, group (q_heads / kv_heads) <= 8; others are
// Unimplemented. Contiguous (unpaged) fp32 K/V are read with the same kernel.
// Parity with kernels/ref/attention_ref.cc: tests/parity/kernels_parity_test.cc. This kernel has
// been compiled but, at the time of writing, never run on a GPU (no GPU was available).
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "common/cuda_status.h"
#include "kernels/cuda/kv_pool_access.cuh"
#include "kernels/cuda/launch.h"
#include "kernels/paged_index.h"

namespace dapq::kernels::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = 32 * kWarps;
constexpr int kMaxGroup = 8;
constexpr int kMaxDimPerLane = 8;  // head_dim <= 256
// Parts shorter than this are not worth a block of their own.
constexpr int kMinSplitSlots = 512;
// Parts start on multiples of this many slots (whole blocks when blocks are larger).
constexpr int kSplitUnit = 256;

__device__ __forceinline__ float WarpSum(float v) {
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

struct Workspace {
  float* out = nullptr;  // [tasks * parts * group, head_dim]: each part's normalised output
  float* max = nullptr;  // [tasks * parts * group]
  float* sum = nullptr;  // [tasks * parts * group]
};

// grid (tasks, parts), kThreads threads; dynamic shared memory: see SharedBytes.
template <DType kType>
__global__ void __launch_bounds__(kThreads)
    DecodePartKernel(AttentionParams p, int parts, int unit, Workspace ws) {
  extern __shared__ float shared[];
  const int d = p.head_dim, group = p.q_heads / p.kv_heads;
  const int task = blockIdx.x, part = blockIdx.y;
  const int t = task / p.kv_heads, kv_head = task % p.kv_heads;
  const int len = p.kv_lens != nullptr ? p.kv_lens[kv_head] : p.kv_len;
  const SlotRange range = SplitPart(CausalVisible(len, p.q_tokens, t), part, parts, unit);
  const float scale = rsqrtf(static_cast<float>(d));
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int per_lane = (d + 31) / 32;

  // The group's queries, scaled: [group, d].
  float* q = shared;
  const float* q_src =
      p.q + static_cast<long>(t) * p.q_stride + static_cast<long>(kv_head) * group * d;
  for (int i = threadIdx.x; i < group * d; i += kThreads) q[i] = q_src[i] * scale;
  __syncthreads();

  float m[kMaxGroup], l[kMaxGroup], acc[kMaxGroup][kMaxDimPerLane];
#pragma unroll
  for (int g = 0; g < kMaxGroup; ++g) {
    m[g] = -INFINITY;
    l[g] = 0.0f;
#pragma unroll
    for (int i = 0; i < kMaxDimPerLane; ++i) acc[g][i] = 0.0f;
  }
  const void* k_base = p.block_table != nullptr ? p.k_pool : static_cast<const void*>(p.k);
  const void* v_base = p.block_table != nullptr ? p.v_pool : static_cast<const void*>(p.v);
  for (int slot = range.begin + warp; slot < range.end; slot += kWarps) {
    const long row = SlotOffset(p, kv_head, slot);
    float k[kMaxDimPerLane], v[kMaxDimPerLane];
#pragma unroll
    for (int i = 0; i < kMaxDimPerLane; ++i) {
      const int e = lane + 32 * i;
      const bool in = i < per_lane && e < d;
      k[i] = in ? LoadElem<kType>(k_base, row + e) : 0.0f;
      v[i] = in ? LoadElem<kType>(v_base, row + e) : 0.0f;
    }
#pragma unroll
    for (int g = 0; g < kMaxGroup; ++g) {
      if (g >= group) break;
      float dot = 0.0f;
#pragma unroll
      for (int i = 0; i < kMaxDimPerLane; ++i) {
        const int e = lane + 32 * i;
        if (i < per_lane && e < d) dot += q[g * d + e] * k[i];
      }
      const float s = WarpSum(dot);
      const float m_new = fmaxf(m[g], s);
      const float correction = expf(m[g] - m_new);  // 0 on the first slot (m = -inf)
      const float weight = expf(s - m_new);
      l[g] = l[g] * correction + weight;
#pragma unroll
      for (int i = 0; i < kMaxDimPerLane; ++i) acc[g][i] = acc[g][i] * correction + weight * v[i];
      m[g] = m_new;
    }
  }

  // Merge the warps: each writes its (max, sum, acc) per query, then the block combines them.
  float* w_max = q + group * d;           // [kWarps, group]
  float* w_sum = w_max + kWarps * group;  // [kWarps, group]
  float* w_acc = w_sum + kWarps * group;  // [kWarps, group, d]
  for (int g = 0; g < group; ++g) {
    if (lane == 0) {
      w_max[warp * group + g] = m[g];
      w_sum[warp * group + g] = l[g];
    }
#pragma unroll
    for (int i = 0; i < kMaxDimPerLane; ++i) {
      const int e = lane + 32 * i;
      if (i < per_lane && e < d) w_acc[(warp * group + g) * d + e] = acc[g][i];
    }
  }
  __syncthreads();
  const long out_row = (static_cast<long>(task) * parts + part) * group;
  for (int idx = threadIdx.x; idx < group * d; idx += kThreads) {
    const int g = idx / d, e = idx % d;
    float max = -INFINITY;
    for (int w = 0; w < kWarps; ++w) max = fmaxf(max, w_max[w * group + g]);
    float sum = 0.0f, value = 0.0f;
    if (max != -INFINITY) {
      for (int w = 0; w < kWarps; ++w) {
        const float f = expf(w_max[w * group + g] - max);  // a warp with no slot: exp(-inf) = 0
        sum += w_sum[w * group + g] * f;
        value += w_acc[(w * group + g) * d + e] * f;
      }
    }
    const float out = sum > 0.0f ? value / sum : 0.0f;
    if (parts == 1) {
      p.out[static_cast<long>(t) * p.out_stride + (static_cast<long>(kv_head) * group + g) * d +
            e] = out;
    } else {
      ws.out[(out_row + g) * d + e] = out;
      if (e == 0) {
        ws.max[out_row + g] = max;
        ws.sum[out_row + g] = sum;
      }
    }
  }
}

// grid tasks, kThreads threads: out = sum_p w_p out_p / sum_p w_p, w_p = sum_p exp(max_p - max),
// the softmax over every slot from the parts' own.
__global__ void __launch_bounds__(kThreads)
    CombinePartsKernel(AttentionParams p, int parts, Workspace ws) {
  const int d = p.head_dim, group = p.q_heads / p.kv_heads;
  const int task = blockIdx.x;
  const int t = task / p.kv_heads, kv_head = task % p.kv_heads;
  for (int idx = threadIdx.x; idx < group * d; idx += kThreads) {
    const int g = idx / d, e = idx % d;
    float max = -INFINITY;
    for (int part = 0; part < parts; ++part) {
      max = fmaxf(max, ws.max[(static_cast<long>(task) * parts + part) * group + g]);
    }
    float total = 0.0f, value = 0.0f;
    for (int part = 0; part < parts; ++part) {
      const long row = (static_cast<long>(task) * parts + part) * group + g;
      if (ws.sum[row] == 0.0f) continue;  // an empty part
      const float w = ws.sum[row] * expf(ws.max[row] - max);
      total += w;
      value += w * ws.out[row * d + e];
    }
    p.out[static_cast<long>(t) * p.out_stride + (static_cast<long>(kv_head) * group + g) * d + e] =
        total > 0.0f ? value / total : 0.0f;
  }
}

size_t SharedBytes(int group, int d) {
  return sizeof(float) * (static_cast<size_t>(group) * d + 2 * kWarps * group +
                          static_cast<size_t>(kWarps) * group * d);
}

// Thread blocks the device runs at once (its SMs, two blocks each), cached per thread.
absl::StatusOr<int> Workers() {
  int device = 0;
  DAPQ_CUDA_RETURN_IF_ERROR(cudaGetDevice(&device));
  thread_local int cached_device = -1, cached_workers = 0;
  if (device != cached_device) {
    int sms = 0;
    DAPQ_CUDA_RETURN_IF_ERROR(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
    cached_workers = 2 * sms;
    cached_device = device;
  }
  return cached_workers;
}

template <DType kType>
absl::Status Launch(const AttentionParams& p, cudaStream_t stream) {
  const int group = p.q_heads / p.kv_heads;
  const int tasks = p.q_tokens * p.kv_heads;
  absl::StatusOr<int> workers = Workers();
  if (!workers.ok()) return workers.status();
  // kv_len bounds every head's length here (ValidateAttentionDevice).
  const int parts = SplitCount(tasks, *workers, p.kv_len, kMinSplitSlots);
  const int unit =
      p.block_table != nullptr && p.tokens_per_block > kSplitUnit ? p.tokens_per_block : kSplitUnit;
  const size_t shared = SharedBytes(group, p.head_dim);
  if (shared > 48 * 1024) {
    DAPQ_CUDA_RETURN_IF_ERROR(cudaFuncSetAttribute(DecodePartKernel<kType>,
                                                   cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                   static_cast<int>(shared)));
  }
  Workspace ws;
  void* buffer = nullptr;
  if (parts > 1) {
    const size_t rows = static_cast<size_t>(tasks) * parts * group;
    DAPQ_CUDA_RETURN_IF_ERROR(cudaMallocAsync(
        &buffer, sizeof(float) * rows * (static_cast<size_t>(p.head_dim) + 2), stream));
    ws.out = static_cast<float*>(buffer);
    ws.max = ws.out + rows * p.head_dim;
    ws.sum = ws.max + rows;
  }
  DecodePartKernel<kType><<<dim3(tasks, parts), kThreads, shared, stream>>>(p, parts, unit, ws);
  const absl::Status decoded = DAPQ_CUDA_LAUNCH_STATUS("DecodePartKernel");
  const absl::Status combined = [&] {
    if (!decoded.ok() || parts == 1) return absl::OkStatus();
    CombinePartsKernel<<<tasks, kThreads, 0, stream>>>(p, parts, ws);
    return DAPQ_CUDA_LAUNCH_STATUS("CombinePartsKernel");
  }();
  // The workspace goes back in stream order, after the kernels that use it.
  if (buffer != nullptr) DAPQ_CUDA_RETURN_IF_ERROR(cudaFreeAsync(buffer, stream));
  return decoded.ok() ? combined : decoded;
}

}  // namespace

absl::Status LaunchAttentionDecode(const AttentionParams& p, void* stream) {
  const int group = p.q_heads / p.kv_heads;
  if (p.head_dim > 32 * kMaxDimPerLane || group > kMaxGroup) {
    return absl::UnimplementedError(absl::StrCat(
        "AttentionDecode on CUDA: head_dim=", p.head_dim, " (at most ", 32 * kMaxDimPerLane,
        ") and q_heads / kv_heads=", group, " (at most ", kMaxGroup, ")"));
  }
  const auto s = static_cast<cudaStream_t>(stream);
  switch (p.block_table != nullptr ? p.kv_dtype : DType::kF32) {
    case DType::kF32:
      return Launch<DType::kF32>(p, s);
    case DType::kBF16:
      return Launch<DType::kBF16>(p, s);
    case DType::kF16:
      return Launch<DType::kF16>(p, s);
  }
  return absl::InvalidArgumentError("AttentionDecode on CUDA: unknown kv_dtype");
}

}  // namespace dapq::kernels::cuda
