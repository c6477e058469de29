// File: worker/model_weights.cc
// Storage ownership, completeness check and the bf16 conversion of ModelWeights.
#include "worker/model_weights.h"

#include <sys/mman.h>
#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "kernels/convert.h"

namespace dapq::worker {

float* ModelWeights::AllocateOwned(size_t count) {
  owned_.push_back(MakeZeroedHostArray<float>(count));
  owned_bytes_ += count * sizeof(float);
  return owned_.back().get();
}

uint16_t* ModelWeights::AllocateOwnedBf16(size_t count) {
  owned_bf16_.push_back(MakeZeroedHostArray<uint16_t>(count));
  owned_bytes_ += count * sizeof(uint16_t);
  return owned_bf16_.back().get();
}

const uint16_t* ModelWeights::OwnedBf16Copy(const float* src, size_t count) {
  uint16_t* dst = AllocateOwnedBf16(count);
  kernels::ConvertFromFloat(src, kernels::DType::kBF16, dst, static_cast<long>(count));
  return dst;
}

void ModelWeights::KeepMapping(MappedFile file) { mappings_.push_back(std::move(file)); }

void ModelWeights::ReleaseFloats(const float* p, size_t count) {
  if (p == nullptr || count == 0) return;
  for (HostArray<float>& buffer : owned_) {
    if (buffer.get() == p) {
      buffer.reset();
      owned_bytes_ -= count * sizeof(float);
      return;
    }
  }
  const auto* begin = reinterpret_cast<const uint8_t*>(p);
  const uint8_t* end = begin + count * sizeof(float);
  for (const MappedFile& m : mappings_) {
    if (begin < m.data() || end > m.data() + m.size()) continue;
    const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
    const uintptr_t first = (reinterpret_cast<uintptr_t>(begin) + page - 1) / page * page;
    const uintptr_t last = reinterpret_cast<uintptr_t>(end) / page * page;
    // A hint: the pages are clean file pages we no longer read; failing to drop them is harmless.
    if (first < last) madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED);
    return;
  }
}

absl::Status ModelWeights::CheckComplete() const {
  if (!token_embedding || !final_norm ||
      (weights_dtype == kernels::DType::kF32 ? !classifier : !classifier_bf16)) {
    return absl::InvalidArgumentError(
        absl::StrCat(config.name, ": embedding, final norm or classifier missing"));
  }
  if (static_cast<int>(layers.size()) != config.n_layers) {
    return absl::InvalidArgumentError(absl::StrCat(
        config.name, ": ", layers.size(), " layers loaded, config says ", config.n_layers));
  }
  const bool bf16 = weights_dtype == kernels::DType::kBF16;
  for (size_t l = 0; l < layers.size(); ++l) {
    const LayerWeights& w = layers[l];
    if (!w.attn_norm || !w.ffn_norm ||
        (!bf16 && (!w.wq || !w.wk || !w.wv || !w.wo || !w.w1 || !w.w2 || !w.w3))) {
      return absl::InvalidArgumentError(
          absl::StrCat(config.name, ": layer ", l, " is missing a weight"));
    }
    const LayerWeights::Bf16& h = w.bf16;
    if (bf16 && (!h.wq || !h.wk || !h.wv || !h.wo || !h.w1 || !h.w2 || !h.w3 || !classifier_bf16)) {
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
  // Each fp32 matrix is released as soon as its bf16 copy exists: the peak is one matrix over.
  const auto replace = [&w](const float*& f32, const uint16_t*& out, size_t count) {
    out = w.OwnedBf16Copy(f32, count);
    w.ReleaseFloats(f32, count);
    f32 = nullptr;
  };
  for (LayerWeights& l : w.layers) {
    replace(l.wq, l.bf16.wq, q * dim);
    replace(l.wk, l.bf16.wk, kv * dim);
    replace(l.wv, l.bf16.wv, kv * dim);
    replace(l.wo, l.bf16.wo, dim * q);
    replace(l.w1, l.bf16.w1, hidden * dim);
    replace(l.w2, l.bf16.w2, dim * hidden);
    replace(l.w3, l.bf16.w3, hidden * dim);
  }
  const size_t classifier_count = static_cast<size_t>(c.vocab_size) * dim;
  if (w.classifier == w.token_embedding) {  // tied: the embedding lookup still reads it
    w.classifier_bf16 = w.OwnedBf16Copy(w.classifier, classifier_count);
  } else {
    replace(w.classifier, w.classifier_bf16, classifier_count);
  }
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
