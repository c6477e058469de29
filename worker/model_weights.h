// File: worker/model_weights.h
// A loaded model: its config plus pointers to every fp32 weight in (out, in) row-major layout,
// as llama2.c and Hugging Face store them. The memory is owned by the object (heap buffers for
// converted/synthetic weights, read-only mappings for fp32 files), so pointers stay valid for the
// object's lifetime, across moves. Tensor-parallel ranks read slices of these full matrices
// through strides; nothing is copied per rank.
// Thread-safety: immutable after loading; shared read-only by every rank thread.
#ifndef DAPQ_WORKER_MODEL_WEIGHTS_H_
#define DAPQ_WORKER_MODEL_WEIGHTS_H_

#include <memory>
#include <vector>

#include "common/mapped_file.h"
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

  // Storage helpers for loaders.
  float* AllocateOwned(size_t count);  // zero-initialised heap buffer owned by this
  void KeepMapping(MappedFile file);   // keeps a mapping alive with the weights
  size_t OwnedBytes() const { return owned_bytes_; }

  // Checks that every required pointer is set (null bias pointers allowed unless attention_bias).
  absl::Status CheckComplete() const;

 private:
  std::vector<std::unique_ptr<float[]>> owned_;
  std::vector<MappedFile> mappings_;
  size_t owned_bytes_ = 0;
};

}  // namespace dapq::worker

#endif  // DAPQ_WORKER_MODEL_WEIGHTS_H_
