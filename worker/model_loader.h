// File: worker/model_loader.h
// One entry point for every model source: "synthetic:<shape>..." (seeded random weights), a
// directory (Hugging Face config.json + *.safetensors), or a file (llama2.c checkpoint).
#ifndef DAPQ_WORKER_MODEL_LOADER_H_
#define DAPQ_WORKER_MODEL_LOADER_H_

#include <string>

#include "absl/status/statusor.h"
#include "worker/model_weights.h"

namespace dapq::worker {

absl::StatusOr<ModelWeights> LoadModel(const std::string& spec);
// LoadModel, then ConvertLinearWeights to `weights_dtype` ("fp32" or "bf16", --weights_dtype).
absl::StatusOr<ModelWeights> LoadModelAs(const std::string& model,
                                         const std::string& weights_dtype);

}  // namespace dapq::worker

#endif  // DAPQ_WORKER_MODEL_LOADER_H_
