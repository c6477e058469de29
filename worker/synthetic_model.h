// File: worker/synthetic_model.h
// Models with seeded random weights and the shapes of real ones, for speed and memory work and
// for tests that need shapes stories260K lacks. Spec: "synthetic:<shape>[-<N>l][@<seed>]", e.g.
// "synthetic:llama3-8b" (32 layers), "synthetic:llama3-8b-2l" (2 layers), "synthetic:tiny-gqa@7".
// Shapes: llama3-8b, llama2-7b, mistral-7b, qwen2-7b (q/k/v biases), tiny-gqa, tiny-mha,
// tiny-long (2M-token context with Llama-3 RoPE scaling, for streaming compression).
// Weights are uniform with variance 1/fan_in (norm weights around 1), generated from a counter-
// based hash of (seed, tensor, index): identical on every machine and thread count.
#ifndef DAPQ_WORKER_SYNTHETIC_MODEL_H_
#define DAPQ_WORKER_SYNTHETIC_MODEL_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/model_weights.h"

namespace dapq::worker {

inline constexpr char kSyntheticPrefix[] = "synthetic:";

// The config a spec describes (no weights allocated). InvalidArgument for unknown shapes or a
// malformed layer count / seed.
absl::StatusOr<ModelConfig> SyntheticModelConfig(const std::string& spec);
absl::StatusOr<ModelWeights> MakeSyntheticModel(const std::string& spec);
std::vector<std::string> SyntheticShapeNames();

}  // namespace dapq::worker

#endif  // DAPQ_WORKER_SYNTHETIC_MODEL_H_
