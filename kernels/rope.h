// File: kernels/rope.h
// Rotary position embedding in both layouts, with Llama-3 frequency scaling.
//  - kInterleaved (Meta / llama2.c): pairs (2i, 2i+1) rotate with frequency inv_freq[i].
//  - kHalfSplit (Hugging Face): pairs (i, i + d/2) rotate with frequency inv_freq[i].
// A half-split head equals an interleaved head whose dimensions are permuted (2i -> i,
// 2i+1 -> i + d/2); the HF converter permutes wq/wk rows accordingly.
#ifndef DAPQ_KERNELS_ROPE_H_
#define DAPQ_KERNELS_ROPE_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/types.h"

namespace dapq::kernels {

enum class RopeLayout { kInterleaved = 0, kHalfSplit = 1 };

// Llama-3 "rope_type: llama3" scaling. factor <= 0 (or 1 with equal wavelengths) = no scaling.
struct RopeScaling {
  float factor = 0.0f;
  float low_freq_factor = 1.0f;
  float high_freq_factor = 4.0f;
  int original_max_position_embeddings = 8192;
};

struct RopeConfig {
  int head_dim = 0;
  float theta = 10000.0f;
  RopeLayout layout = RopeLayout::kInterleaved;
  RopeScaling scaling;
};

// inv_freq[i] = theta^(-2i/head_dim), i in [0, head_dim/2), computed in fp32 as llama2.c does,
// then Llama-3 scaled: wavelengths above original_max/low_freq_factor are divided by factor,
// below original_max/high_freq_factor kept, and smoothly interpolated in between.
absl::StatusOr<std::vector<float>> ComputeRopeInvFreq(const RopeConfig& config);

// x: [tokens, heads, head_dim], token stride x_stride, head stride head_dim (elements), in place.
// positions: [tokens] int32 absolute positions. inv_freq: [head_dim / 2].
struct RopeParams {
  int tokens = 0, heads = 0, head_dim = 0;
  float* x = nullptr;
  int x_stride = 0;
  const int32_t* positions = nullptr;
  const float* inv_freq = nullptr;
  RopeLayout layout = RopeLayout::kInterleaved;
};

absl::Status Rope(const RopeParams& p, Stream stream = {});
absl::Status ValidateRope(const RopeParams& p);

}  // namespace dapq::kernels

#endif  // DAPQ_KERNELS_ROPE_H_
