// File: worker/llama2c_loader.cc
// llama2.c checkpoint parsing: header validation, exact size check, weight pointers.
#include "worker/llama2c_loader.h"

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace dapq::worker {
namespace {

constexpr int kHeaderInts = 7;
constexpr long kMaxDim = 1 << 20;

using Wide = unsigned __int128;

std::string ByteCount(Wide bytes) {
  if (bytes > std::numeric_limits<uint64_t>::max()) return "more than 2^64";
  return absl::StrCat(static_cast<uint64_t>(bytes));
}

absl::Status HeaderError(const std::string& path, const std::string& what) {
  return absl::InvalidArgumentError(
      absl::StrCat("llama2.c checkpoint ", path, ": bad header: ", what));
}

}  // namespace

absl::StatusOr<ModelWeights> LoadLlama2cModel(const std::string& path) {
  DAPQ_ASSIGN_OR_RETURN(MappedFile file, MappedFile::Open(path));
  const size_t header_bytes = kHeaderInts * sizeof(int32_t);
  if (file.size() < header_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("llama2.c checkpoint ", path, ": truncated: ", file.size(),
                     " bytes, the header alone needs ", header_bytes));
  }
  int32_t h[kHeaderInts];
  std::memcpy(h, file.data(), header_bytes);
  const char* names[kHeaderInts] = {"dim",        "hidden_dim", "n_layers", "n_heads",
                                    "n_kv_heads", "vocab_size", "seq_len"};
  for (int i = 0; i < kHeaderInts; ++i) {
    const long v = i == 5 ? std::labs(static_cast<long>(h[i])) : h[i];
    if (v <= 0 || v > kMaxDim) return HeaderError(path, absl::StrCat(names[i], "=", h[i]));
  }
  ModelWeights w;
  ModelConfig& c = w.config;
  c.name = std::filesystem::path(path).stem().string();
  c.dim = h[0];
  c.hidden_dim = h[1];
  c.n_layers = h[2];
  c.n_heads = h[3];
  c.n_kv_heads = h[4];
  c.tied_embeddings = h[5] > 0;
  c.vocab_size = std::abs(h[5]);
  c.max_seq_len = h[6];
  if (c.dim % c.n_heads != 0) {
    return HeaderError(path, absl::StrCat("dim=", c.dim, " not a multiple of n_heads=", c.n_heads));
  }
  if (c.n_kv_heads > c.n_heads || c.n_heads % c.n_kv_heads != 0) {
    return HeaderError(
        path, absl::StrCat("n_heads=", c.n_heads, " not a multiple of n_kv_heads=", c.n_kv_heads));
  }
  c.head_dim = c.dim / c.n_heads;
  c.norm_eps = 1e-5f;
  c.rope = kernels::RopeConfig{c.head_dim, 10000.0f, kernels::RopeLayout::kInterleaved, {}};
  c.bos_token_id = 1;
  c.stop_token_ids = {1, 2};  // llama2.c stops on BOS (its document separator); EOS as well
  DAPQ_RETURN_IF_ERROR(c.Validate());

  const long dim = c.dim, hidden = c.hidden_dim, layers = c.n_layers, kv_dim = c.kv_dim();
  const long vocab = c.vocab_size;
  const long weight_floats = vocab * dim + layers * dim + layers * dim * dim +
                             2 * layers * kv_dim * dim + layers * dim * dim + layers * dim +
                             3 * layers * hidden * dim + dim +
                             (c.tied_embeddings ? 0 : vocab * dim);
  const long freq_floats = static_cast<long>(c.max_seq_len) * c.head_dim;  // real + imag halves
  // With every dimension <= 2^20 the float counts fit a long (< 7 * 2^60), but their byte counts
  // do not fit 64 bits: in size_t a crafted 28-byte header whose byte count wraps past 2^64 to
  // 28 passed this check, and the weight pointers ran gigabytes past the mapping (found with
  // tests/fuzz/llama2c_loader_fuzzer's pointer check). Compared in 128 bits.
  const Wide expected =
      Wide{header_bytes} + Wide{sizeof(float)} * Wide(weight_floats + freq_floats);
  const Wide expected_min = Wide{header_bytes} + Wide{sizeof(float)} * Wide(weight_floats);
  if (Wide{file.size()} != expected && Wide{file.size()} != expected_min) {
    return absl::InvalidArgumentError(
        absl::StrCat("llama2.c checkpoint ", path, ": ",
                     file.size() < expected_min ? "truncated" : "wrong size", ": ", file.size(),
                     " bytes, the header (", c.DebugString(), ") implies ", ByteCount(expected),
                     " bytes (or ", ByteCount(expected_min), " without the legacy RoPE tables)"));
  }

  const float* p = reinterpret_cast<const float*>(file.data() + header_bytes);
  auto take = [&p](long n) {
    const float* r = p;
    p += n;
    return r;
  };
  w.layers.resize(layers);
  w.token_embedding = take(vocab * dim);
  for (auto& l : w.layers) l.attn_norm = take(dim);
  for (auto& l : w.layers) l.wq = take(dim * dim);
  for (auto& l : w.layers) l.wk = take(kv_dim * dim);
  for (auto& l : w.layers) l.wv = take(kv_dim * dim);
  for (auto& l : w.layers) l.wo = take(dim * dim);
  for (auto& l : w.layers) l.ffn_norm = take(dim);
  for (auto& l : w.layers) l.w1 = take(hidden * dim);
  for (auto& l : w.layers) l.w2 = take(dim * hidden);
  for (auto& l : w.layers) l.w3 = take(hidden * dim);
  w.final_norm = take(dim);
  take(freq_floats);  // legacy freq_cis_real / freq_cis_imag: RoPE is recomputed
  w.classifier =
      c.tied_embeddings ? w.token_embedding : (Wide{file.size()} == expected ? p : p - freq_floats);
  w.KeepMapping(std::move(file));
  DAPQ_RETURN_IF_ERROR(w.CheckComplete());
  return w;
}

}  // namespace dapq::worker
