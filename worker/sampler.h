// File: worker/sampler.h
// Next-token sampling: greedy (temperature 0; ties to the lowest id), or temperature + top-p
// (nucleus) with a seeded xorshift64* generator, the algorithm and generator llama2.c uses, so a
// seed replays exactly on every machine.
// Thread-safety: a Sampler holds RNG state; use one per sequence.
#ifndef DAPQ_WORKER_SAMPLER_H_
#define DAPQ_WORKER_SAMPLER_H_

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/status.h"

namespace dapq::worker {

struct SamplingOptions {
  float temperature = 0.0f;  // 0 = greedy
  float top_p = 0.9f;        // (0, 1]; 1 = sample the full distribution
  uint64_t seed = 42;
  // InvalidArgument naming the field: temperature < 0 or not finite, top_p outside (0, 1].
  absl::Status Validate() const;
};

class Sampler {
 public:
  explicit Sampler(const SamplingOptions& options);
  // logits are overwritten (scaled and turned into probabilities when sampling).
  int Sample(std::span<float> logits);

 private:
  float NextUniform();  // [0, 1)
  SamplingOptions options_;
  uint64_t state_;
  std::vector<std::pair<float, int>> candidates_;
};

// Index of the largest value, the lowest index among ties.
int ArgMax(std::span<const float> values);

}  // namespace dapq::worker

#endif  // DAPQ_WORKER_SAMPLER_H_
