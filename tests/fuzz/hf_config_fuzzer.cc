// File: tests/fuzz/hf_config_fuzzer.cc
// Hugging Face checkpoints (worker/hf_loader.h, LoadHfModel): config.json and, optionally, one
// safetensors file, in a scratch directory. Input: config.json's text, then optionally a NUL
// byte and the bytes of model.safetensors (without one the loader stops at "no *.safetensors
// files" after parsing the config). Both weight types (fp32, bf16) are loaded.
// Invariants: errors are InvalidArgument, NotFound or Unimplemented; a loaded model has a valid
// config and every weight it needs.
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>

#include "absl/status/status.h"
#include "tests/fuzz/fuzz_util.h"
#include "worker/hf_loader.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view input = dapq::fuzz::AsView(data, size);
  const size_t nul = input.find('\0');
  static const std::string dir = [] {
    std::filesystem::create_directories(dapq::fuzz::ScratchDir() + "/hf");
    return dapq::fuzz::ScratchDir() + "/hf";
  }();
  dapq::fuzz::WriteScratchFile("hf/config.json", input.substr(0, nul));
  const bool has_weights = nul != absl::string_view::npos;
  if (has_weights) {
    dapq::fuzz::WriteScratchFile("hf/model.safetensors", input.substr(nul + 1));
  } else {
    std::filesystem::remove(dir + "/model.safetensors");
  }
  for (const dapq::kernels::DType dtype :
       {dapq::kernels::DType::kF32, dapq::kernels::DType::kBF16}) {
    absl::StatusOr<dapq::worker::ModelWeights> w = dapq::worker::LoadHfModel(dir, dtype);
    if (!w.ok()) {
      const absl::StatusCode code = w.status().code();
      FUZZ_CHECK(code == absl::StatusCode::kInvalidArgument ||
                 code == absl::StatusCode::kNotFound || code == absl::StatusCode::kUnimplemented);
    } else {
      FUZZ_CHECK(has_weights);
      FUZZ_CHECK(w->config.Validate().ok());
      FUZZ_CHECK(w->CheckComplete().ok());
      FUZZ_CHECK(w->weights_dtype == dtype);
    }
    if (!has_weights) break;  // the config alone: the second load would parse it the same way
  }
  return 0;
}
