// File: worker/model_config.h
// The architecture of a Llama-family decoder (Llama 2/3, Mistral, Qwen2, llama2.c checkpoints):
// sizes, RoPE, normalisation, vocabulary and special tokens. Validate() checks every field and
// names the offending one. Plain value type; thread-compatible.
#ifndef DAPQ_WORKER_MODEL_CONFIG_H_
#define DAPQ_WORKER_MODEL_CONFIG_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "kernels/rope.h"

namespace dapq::worker {

struct ModelConfig {
  std::string name;    // e.g. "stories260K", "synthetic:llama3-8b-2l"
  int dim = 0;         // hidden size
  int hidden_dim = 0;  // FFN intermediate size
  int n_layers = 0;
  int n_heads = 0;     // query heads
  int n_kv_heads = 0;  // KV heads (GQA: n_heads % n_kv_heads == 0)
  int head_dim = 0;    // usually dim / n_heads
  int vocab_size = 0;
  int max_seq_len = 0;  // context limit
  float norm_eps = 1e-5f;
  kernels::RopeConfig rope;      // head_dim, theta, layout, Llama-3 scaling
  bool tied_embeddings = false;  // classifier = token embedding
  bool attention_bias = false;   // q/k/v projections carry biases (Qwen2)
  int bos_token_id = 1;
  std::vector<int> stop_token_ids;  // generation stops after emitting one of these

  int q_dim() const { return n_heads * head_dim; }
  int kv_dim() const { return n_kv_heads * head_dim; }
  // KV cache bytes per token over all layers, fp32 K and V.
  long kv_bytes_per_token() const { return 2L * n_layers * kv_dim() * sizeof(float); }

  absl::Status Validate() const;
  std::string DebugString() const;
};

}  // namespace dapq::worker

#endif  // DAPQ_WORKER_MODEL_CONFIG_H_
