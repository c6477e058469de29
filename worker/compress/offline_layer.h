// File: worker/compress/offline_layer.h
// The core of `dapq compress`: run any scorer and the selector on one layer's tensors held in
// memory, as ONE layer on ONE rank (TP = 1). Builds the worker::compress::ScoringInputs the
// engine would collect during prefill — the last query rows before and after RoPE, H2O's causal
// attention of every query, ExpectedAttention's query moments (shared code with QueryCollector)
// — then scores with MakeScorer and selects with SelectLayer over a 1-rank communicator.
// Errors name the `dapq compress` flag to fix (--values, --rope-theta, --queries-pre-rope).
// Thread-compatible; pure apart from the arguments.
#ifndef DAPQ_WORKER_COMPRESS_OFFLINE_LAYER_H_
#define DAPQ_WORKER_COMPRESS_OFFLINE_LAYER_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/rope.h"
#include "worker/compress/compression_config.h"

namespace dapq::worker::compress {

struct LayerTensors {
  int q_heads = 0, kv_heads = 0, n = 0, head_dim = 0;  // q_heads % kv_heads == 0
  const float* queries = nullptr;  // [q_heads, n, head_dim]: post-RoPE unless queries_pre_rope
  bool queries_pre_rope = false;
  const float* keys = nullptr;    // [kv_heads, n, head_dim], post-RoPE as cached
  const float* values = nullptr;  // [kv_heads, n, head_dim], or null (not given)
  // RoPE inverse frequencies [head_dim / 2], or null when the RoPE is not known (then only
  // methods that score with the queries as given, or with none, can run).
  const float* inv_freq = nullptr;
  kernels::RopeLayout rope_layout = kernels::RopeLayout::kInterleaved;
};

struct LayerResult {
  std::vector<float> scores;               // [kv_heads, n] raw scorer output (before pooling)
  std::vector<std::vector<int32_t>> keep;  // per KV head: sorted positions
  int budget = 0;                          // per-head budget the selector used (<= n)
};

// `config` must be resolved for this n (CompressionConfig::Resolve(n)). Method full keeps every
// position and reports zero scores. DapQ forward mode is Unimplemented (it needs the model).
absl::StatusOr<LayerResult> CompressLayerTensors(const CompressionConfig& config,
                                                 const LayerTensors& tensors);

}  // namespace dapq::worker::compress

#endif  // DAPQ_WORKER_COMPRESS_OFFLINE_LAYER_H_
