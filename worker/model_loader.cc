// File: worker/model_loader.cc
// Routes a model spec to the synthetic generator, the HF loader or the llama2.c loader.
#include "worker/model_loader.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "worker/hf_loader.h"
#include "worker/llama2c_loader.h"
#include "worker/synthetic_model.h"

namespace dapq::worker {

absl::StatusOr<ModelWeights> LoadModel(const std::string& spec) {
  if (spec.empty()) return absl::InvalidArgumentError("model: empty model path");
  if (spec.rfind(kSyntheticPrefix, 0) == 0) return MakeSyntheticModel(spec);
  std::error_code ec;
  if (std::filesystem::is_directory(spec, ec)) return LoadHfModel(spec);
  if (!std::filesystem::exists(spec, ec)) {
    return absl::NotFoundError(absl::StrCat("model: no such file or directory: ", spec));
  }
  return LoadLlama2cModel(spec);
}

absl::StatusOr<ModelWeights> LoadModelAs(const std::string& model,
                                         const std::string& weights_dtype) {
  DAPQ_ASSIGN_OR_RETURN(const kernels::DType dtype, ParseWeightsDtype(weights_dtype));
  std::error_code ec;
  if (std::filesystem::is_directory(model, ec)) return LoadHfModel(model, dtype);  // no fp32 copy
  DAPQ_ASSIGN_OR_RETURN(ModelWeights weights, LoadModel(model));
  DAPQ_RETURN_IF_ERROR(ConvertLinearWeights(weights, dtype));
  return weights;
}

}  // namespace dapq::worker
