// File: worker/model_weights.cc
// Storage ownership and completeness check for ModelWeights.
#include "worker/model_weights.h"

#include "absl/strings/str_cat.h"

namespace dapq::worker {

float* ModelWeights::AllocateOwned(size_t count) {
  owned_.push_back(std::make_unique<float[]>(count));
  owned_bytes_ += count * sizeof(float);
  return owned_.back().get();
}

void ModelWeights::KeepMapping(MappedFile file) { mappings_.push_back(std::move(file)); }

absl::Status ModelWeights::CheckComplete() const {
  if (!token_embedding || !final_norm || !classifier) {
    return absl::InvalidArgumentError(
        absl::StrCat(config.name, ": embedding, final norm or classifier missing"));
  }
  if (static_cast<int>(layers.size()) != config.n_layers) {
    return absl::InvalidArgumentError(absl::StrCat(
        config.name, ": ", layers.size(), " layers loaded, config says ", config.n_layers));
  }
  for (size_t l = 0; l < layers.size(); ++l) {
    const LayerWeights& w = layers[l];
    if (!w.attn_norm || !w.wq || !w.wk || !w.wv || !w.wo || !w.ffn_norm || !w.w1 || !w.w2 ||
        !w.w3) {
      return absl::InvalidArgumentError(
          absl::StrCat(config.name, ": layer ", l, " is missing a weight"));
    }
    if (config.attention_bias && (!w.bq || !w.bk || !w.bv)) {
      return absl::InvalidArgumentError(
          absl::StrCat(config.name, ": layer ", l, " is missing a q/k/v bias"));
    }
  }
  return absl::OkStatus();
}

}  // namespace dapq::worker
