// File: worker/rank_weights.h
// The weights one tensor-parallel rank multiplies with, where its backend reads them: views of
// the rank's slices (worker/model_runner.h's RankShard) — rows [head_begin * head_dim, ...) of
// wq/wk/wv and of w1/w3, the matching column blocks of wo and w2 — plus the replicated
// embedding, norms and biases, and the classifier on rank 0.
//   InPlace  the CPU backend: views into the shared ModelWeights through strides (the column
//            blocks keep the full matrix's row stride); nothing is copied.
//   Upload   a device backend: the rank's slices only, packed (column blocks get their own,
//            narrower row stride) and copied to the context's device in one allocation, in the
//            model's linear-layer dtype (fp32: the exact parity mode; bf16 after
//            --weights_dtype bf16). The embedding, norms and biases stay fp32. Works on any
//            context: on the CPU context it is a packed host copy, which tests use to check the
//            packing against InPlace.
// Thread-safety: immutable after creation.
#ifndef DAPQ_WORKER_RANK_WEIGHTS_H_
#define DAPQ_WORKER_RANK_WEIGHTS_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/device.h"
#include "kernels/types.h"
#include "worker/model_weights.h"

namespace dapq::worker {

struct RankShard;

// A row-major (out, in) weight matrix (or a block of one): element [r, c] at data + r * ld + c.
struct WeightMatrix {
  const void* data = nullptr;
  kernels::DType dtype = kernels::DType::kF32;  // fp32 or bf16
  int ld = 0;                                   // row stride, in elements
};

struct RankLayerWeights {
  const float* attn_norm = nullptr;  // [dim]
  const float* ffn_norm = nullptr;   // [dim]
  WeightMatrix wq, wk, wv;           // [local heads * head_dim, dim], [local kv heads * hd, dim]
  WeightMatrix wo;                   // [dim, local heads * head_dim]
  WeightMatrix w1, w3;               // [ffn_size, dim]
  WeightMatrix w2;                   // [dim, ffn_size]
  const float *bq = nullptr, *bk = nullptr, *bv = nullptr;  // the local rows, or null
};

class RankWeights {
 public:
  RankWeights() = default;
  RankWeights(RankWeights&&) = default;
  RankWeights& operator=(RankWeights&&) = default;

  // Views into `weights` (which must outlive the result).
  static RankWeights InPlace(const ModelWeights& weights, const RankShard& shard);
  // The rank's shard copied to `context`'s device. ResourceExhausted (naming the bytes and the
  // device) when it does not fit. Blocks until the copies ran: the staging buffers are freed
  // on return.
  static absl::StatusOr<RankWeights> Upload(const ModelWeights& weights, const RankShard& shard,
                                            kernels::ExecutionContext& context);

  const float* token_embedding = nullptr;  // [vocab_size, dim]
  const float* final_norm = nullptr;       // [dim]
  WeightMatrix classifier;                 // [vocab_size, dim]; null on ranks other than 0 after
                                           // Upload (only rank 0 computes logits)
  std::vector<RankLayerWeights> layers;
  // Bytes this object owns on the device (0 for InPlace).
  size_t device_bytes() const { return memory_.bytes(); }

 private:
  kernels::DeviceMemory memory_;
};

}  // namespace dapq::worker

#endif  // DAPQ_WORKER_RANK_WEIGHTS_H_
