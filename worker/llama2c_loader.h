// File: worker/llama2c_loader.h
// Loads llama2.c legacy checkpoints (version 0 `.bin`: a 7 x int32 header, then fp32 weights).
// The file is memory-mapped; weights point into the mapping (no copy).
// Errors: NotFound (missing file), InvalidArgument naming the bad header field, or the expected
// and actual byte sizes when the file is truncated or too long.
#ifndef DAPQ_WORKER_LLAMA2C_LOADER_H_
#define DAPQ_WORKER_LLAMA2C_LOADER_H_

#include <string>

#include "absl/status/statusor.h"
#include "worker/model_weights.h"

namespace dapq::worker {

absl::StatusOr<ModelWeights> LoadLlama2cModel(const std::string& path);

}  // namespace dapq::worker

#endif  // DAPQ_WORKER_LLAMA2C_LOADER_H_
