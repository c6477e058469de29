// File: kernels/embedding.h
// Token embedding lookup: out[r, :] = table[tokens[r], :], the first step of every forward pass.
// The table is fp32 or bf16 (widened exactly); activations are fp32.
#ifndef DAPQ_KERNELS_EMBEDDING_H_
#define DAPQ_KERNELS_EMBEDDING_H_

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/types.h"

namespace dapq::kernels {

// table: [vocab, dim] rows of table_dtype elements, contiguous; tokens: [rows] ids in
// [0, vocab); out: [rows, dim] with row stride out_stride (elements).
struct EmbeddingParams {
  int rows = 0, dim = 0, vocab = 0;
  const int32_t* tokens = nullptr;
  DType table_dtype = DType::kF32;
  const void* table = nullptr;
  float* out = nullptr;
  int out_stride = 0;
};

absl::Status Embedding(const EmbeddingParams& p, Stream stream = {});
// Checks the shape and, on the host, every token id (InvalidArgument naming the row and id).
absl::Status ValidateEmbedding(const EmbeddingParams& p);
// The CUDA backend's checks: the shape only (tokens are device memory; the kernel clamps
// nothing and the caller has validated the ids when it tokenised them).
absl::Status ValidateEmbeddingDevice(const EmbeddingParams& p);

}  // namespace dapq::kernels

#endif  // DAPQ_KERNELS_EMBEDDING_H_
