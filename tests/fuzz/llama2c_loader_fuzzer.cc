// File: tests/fuzz/llama2c_loader_fuzzer.cc
// llama2.c checkpoints (worker/llama2c_loader.h, LoadLlama2cModel): the input is written to a
// scratch file and loaded. Invariants: errors are InvalidArgument; a loaded model has a valid
// config, and every weight pointer lies, with its whole extent, inside the file (the header's
// 28 bytes precede the token embedding, which the loader places first).
#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "tests/fuzz/fuzz_util.h"
#include "worker/llama2c_loader.h"

namespace {

struct Extent {
  const char* begin;
  const char* end;
  void Check(const float* p, long floats) const {
    FUZZ_CHECK(p != nullptr && floats > 0);
    const char* b = reinterpret_cast<const char*>(p);
    FUZZ_CHECK(b >= begin && b <= end);
    FUZZ_CHECK(static_cast<size_t>(floats) * sizeof(float) <= static_cast<size_t>(end - b));
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path =
      dapq::fuzz::WriteScratchFile("model.bin", dapq::fuzz::AsView(data, size));
  absl::StatusOr<dapq::worker::ModelWeights> w = dapq::worker::LoadLlama2cModel(path);
  if (!w.ok()) {
    FUZZ_CHECK(w.status().code() == absl::StatusCode::kInvalidArgument);
    return 0;
  }
  const dapq::worker::ModelConfig& c = w->config;
  FUZZ_CHECK(c.Validate().ok());
  FUZZ_CHECK(w->CheckComplete().ok());
  const char* base = reinterpret_cast<const char*>(w->token_embedding) - 7 * sizeof(int32_t);
  const Extent file{base, base + size};
  const long dim = c.dim, hidden = c.hidden_dim, kv_dim = c.kv_dim(), q_dim = c.q_dim();
  file.Check(w->token_embedding, c.vocab_size * dim);
  file.Check(w->classifier, c.vocab_size * dim);
  file.Check(w->final_norm, dim);
  FUZZ_CHECK(static_cast<long>(w->layers.size()) == c.n_layers);
  for (const dapq::worker::LayerWeights& l : w->layers) {
    file.Check(l.attn_norm, dim);
    file.Check(l.wq, q_dim * dim);
    file.Check(l.wk, kv_dim * dim);
    file.Check(l.wv, kv_dim * dim);
    file.Check(l.wo, dim * q_dim);
    file.Check(l.ffn_norm, dim);
    file.Check(l.w1, hidden * dim);
    file.Check(l.w2, dim * hidden);
    file.Check(l.w3, hidden * dim);
  }
  return 0;
}
