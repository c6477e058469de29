// File: worker/model_weights.cc
// Storage ownership, completeness check and the bf16 conversion of ModelWeights.
#include "worker/model_weights.h"

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace dapq::worker {

float* ModelWeights::AllocateOwned(size_t count) {
  owned_.push_back(std::make_unique<float[]>(count));
  owned_bytes_ += count * sizeof(float);
  return owned_.back().get();
}

uint16_t* ModelWeights::AllocateOwnedBf16(size_t count) {
  owned_bf16_.push_back(std::make_unique<uint16_t[]>(count));
  owned_bytes_ += count * sizeof(uint16_t);
  return owned_bf16_.back().get();
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
    const LayerWeights::Bf16& h = w.bf16;
    if (weights_dtype == kernels::DType::kBF16 &&
        (!h.wq || !h.wk || !h.wv || !h.wo || !h.w1 || !h.w2 || !h.w3 || !classifier_bf16)) {
      return absl::InvalidArgumentError(
          absl::StrCat(config.name, ": layer ", l, " is missing a bf16 weight"));
    }
    if (config.attention_bias && (!w.bq || !w.bk || !w.bv)) {
      return absl::InvalidArgumentError(
          absl::StrCat(config.name, ": layer ", l, " is missing a q/k/v bias"));
    }
  }
  return absl::OkStatus();
}

namespace {

const uint16_t* ToBf16(ModelWeights& w, const float* src, size_t count) {
  uint16_t* dst = w.AllocateOwnedBf16(count);
  for (size_t i = 0; i < count; ++i) dst[i] = kernels::FloatToBf16(src[i]);
  return dst;
}

}  // namespace

absl::Status ConvertLinearWeights(ModelWeights& w, kernels::DType dtype) {
  if (dtype == w.weights_dtype) return absl::OkStatus();
  if (dtype == kernels::DType::kF32) {
    return absl::InvalidArgumentError(
        "weights_dtype: fp32 asked of weights already converted to bf16");
  }
  DAPQ_RETURN_IF_ERROR(w.CheckComplete());
  const ModelConfig& c = w.config;
  const size_t dim = c.dim, q = static_cast<size_t>(c.q_dim()),
               kv = static_cast<size_t>(c.n_kv_heads) * c.head_dim, hidden = c.hidden_dim;
  for (LayerWeights& l : w.layers) {
    l.bf16.wq = ToBf16(w, l.wq, q * dim);
    l.bf16.wk = ToBf16(w, l.wk, kv * dim);
    l.bf16.wv = ToBf16(w, l.wv, kv * dim);
    l.bf16.wo = ToBf16(w, l.wo, dim * q);
    l.bf16.w1 = ToBf16(w, l.w1, hidden * dim);
    l.bf16.w2 = ToBf16(w, l.w2, dim * hidden);
    l.bf16.w3 = ToBf16(w, l.w3, hidden * dim);
  }
  w.classifier_bf16 = ToBf16(w, w.classifier, static_cast<size_t>(c.vocab_size) * dim);
  w.weights_dtype = kernels::DType::kBF16;
  return w.CheckComplete();
}

absl::StatusOr<kernels::DType> ParseWeightsDtype(const std::string& name) {
  if (name == "fp32") return kernels::DType::kF32;
  if (name == "bf16") return kernels::DType::kBF16;
  return absl::InvalidArgumentError(
      absl::StrCat("weights_dtype: '", name, "' is not one of fp32, bf16"));
}

}  // namespace dapq::worker
