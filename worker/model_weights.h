// File: worker/model_weights.h
// A loaded model: its config plus pointers to every fp32 weight in (out, in) row-major layout,
// as llama2.c and Hugging Face store them. The memory is owned by the object (host arrays for
// converted/synthetic weights, in huge pages where the kernel allows: common/host_buffer.h;
// read-only mappings for fp32 files and bf16 tensors read in place, in the page cache, shared
// between processes), so pointers stay valid for the object's lifetime, across moves.
// Tensor-parallel ranks read slices of these full matrices through strides; nothing is copied per
// rank. Weights dtype: fp32 as loaded, or bf16 for every linear layer's matrix and the classifier,
// which the engine then multiplies with (kernels/gemm.h): decode reads half the bytes. Norms and
// embeddings stay fp32. A bf16 model holds no fp32 copy of those matrices: ConvertLinearWeights
// frees them (heap buffers) or drops their pages (mapped files), and the HF loader asked for
// bf16 reads BF16 tensors in place from the mapping and rounds F32/F16 ones straight to bf16, so
// a model never needs its fp32 size in memory. The classifier's fp32 pointer stays only when it
// is the token embedding (tied).
// Thread-safety: immutable after loading; shared read-only by every rank thread.
#ifndef DAPQ_WORKER_MODEL_WEIGHTS_H_
#define DAPQ_WORKER_MODEL_WEIGHTS_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/host_buffer.h"
#include "common/mapped_file.h"
#include "kernels/types.h"
#include "worker/model_config.h"

namespace dapq::worker {

struct LayerWeights {
  const float* attn_norm = nullptr;  // [dim]
  const float* wq = nullptr;         // [n_heads * head_dim, dim]
  const float* wk = nullptr;         // [n_kv_heads * head_dim, dim]
  const float* wv = nullptr;         // [n_kv_heads * head_dim, dim]
  const float* wo = nullptr;         // [dim, n_heads * head_dim]
  const float* bq = nullptr;         // [n_heads * head_dim] or null (attention_bias only)
  const float* bk = nullptr;         // [n_kv_heads * head_dim] or null
  const float* bv = nullptr;         // [n_kv_heads * head_dim] or null
  const float* ffn_norm = nullptr;   // [dim]
  const float* w1 = nullptr;         // gate: [hidden_dim, dim]
  const float* w2 = nullptr;         // down: [dim, hidden_dim]
  const float* w3 = nullptr;         // up:   [hidden_dim, dim]
  // The same matrices in bf16, set when the model's weights_dtype is kBF16.
  struct Bf16 {
    const uint16_t *wq = nullptr, *wk = nullptr, *wv = nullptr, *wo = nullptr;
    const uint16_t *w1 = nullptr, *w2 = nullptr, *w3 = nullptr;
  } bf16;
};

class ModelWeights {
 public:
  ModelWeights() = default;
  ModelWeights(ModelWeights&&) = default;
  ModelWeights& operator=(ModelWeights&&) = default;
  ModelWeights(const ModelWeights&) = delete;
  ModelWeights& operator=(const ModelWeights&) = delete;

  ModelConfig config;
  const float* token_embedding = nullptr;  // [vocab_size, dim]
  const float* final_norm = nullptr;       // [dim]
  const float* classifier = nullptr;       // [vocab_size, dim] (== token_embedding when tied)
  std::vector<LayerWeights> layers;
  // What the linear layers multiply with: kF32, or kBF16 (LayerWeights::bf16, classifier_bf16).
  kernels::DType weights_dtype = kernels::DType::kF32;
  const uint16_t* classifier_bf16 = nullptr;

  // Storage helpers for loaders.
  float* AllocateOwned(size_t count);  // zero-initialised buffer owned by this (HostArray)
  uint16_t* AllocateOwnedBf16(size_t count);
  // A bf16 copy (rounded to nearest even) of `count` floats at `src`, owned by this.
  const uint16_t* OwnedBf16Copy(const float* src, size_t count);
  // Gives back the memory of `count` floats at `p` that no pointer uses any more: the heap buffer
  // starting there, or the whole pages of a mapping inside the range (madvise DONTNEED).
  void ReleaseFloats(const float* p, size_t count);
  void KeepMapping(MappedFile file);  // keeps a mapping alive with the weights
  size_t OwnedBytes() const { return owned_bytes_; }

  // Checks that every required pointer is set (null bias pointers allowed unless attention_bias).
  absl::Status CheckComplete() const;

 private:
  std::vector<HostArray<float>> owned_;  // common/host_buffer.h: huge pages where large
  std::vector<HostArray<uint16_t>> owned_bf16_;
  std::vector<MappedFile> mappings_;
  size_t owned_bytes_ = 0;
};

// Makes `dtype` the weights' linear-layer dtype: kBF16 replaces the fp32 matrices by bf16 ones
// (rounded to nearest even; the fp32 memory is released); kF32 is a no-op on fp32 weights.
// InvalidArgument on bf16 weights asked for kF32 (the fp32 matrices are gone).
absl::Status ConvertLinearWeights(ModelWeights& weights, kernels::DType dtype);
// Parses "fp32" or "bf16" (--weights_dtype); InvalidArgument naming the flag otherwise.
absl::StatusOr<kernels::DType> ParseWeightsDtype(const std::string& name);

}  // namespace dapq::worker

#endif  // DAPQ_WORKER_MODEL_WEIGHTS_H_
