// File: worker/hf_converter.cc
// ModelWeights -> Hugging Face directory (config.json + model.safetensors), with the RoPE row
// permutation for interleaved-layout models.
#include "worker/hf_converter.h"

#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>
#include <system_error>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"
#include "worker/safetensors.h"

namespace dapq::worker {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::ordered_json;

// The double whose shortest decimal form is the shortest one of `f` (1e-5f -> 1e-05), so that
// config.json shows the intended value and reading it back as float gives `f` exactly.
double ShortestDouble(float f) {
  char buf[64];
  const auto [end, ec] = std::to_chars(buf, buf + sizeof(buf) - 1, f);
  if (ec != std::errc()) return f;
  *end = '\0';
  return std::strtod(buf, nullptr);
}

// Interleaved -> half-split row order within each head of a [heads * head_dim, cols] matrix.
std::vector<float> PermuteToHalfSplit(const float* src, int heads, int head_dim, int64_t cols) {
  std::vector<float> dst(static_cast<size_t>(heads) * head_dim * cols);
  const int half = head_dim / 2;
  for (int h = 0; h < heads; ++h) {
    const int64_t base = static_cast<int64_t>(h) * head_dim;
    for (int64_t i = 0; i < half; ++i) {
      std::memcpy(&dst[(base + i) * cols], src + (base + 2 * i) * cols, cols * sizeof(float));
      std::memcpy(&dst[(base + half + i) * cols], src + (base + 2 * i + 1) * cols,
                  cols * sizeof(float));
    }
  }
  return dst;
}

Json MakeConfigJson(const ModelConfig& c, bool tied) {
  const bool qwen2 = c.attention_bias;
  Json j = Json::object();
  j["architectures"] = Json::array({qwen2 ? "Qwen2ForCausalLM" : "LlamaForCausalLM"});
  j["model_type"] = qwen2 ? "qwen2" : "llama";
  j["hidden_size"] = c.dim;
  j["intermediate_size"] = c.hidden_dim;
  j["num_hidden_layers"] = c.n_layers;
  j["num_attention_heads"] = c.n_heads;
  j["num_key_value_heads"] = c.n_kv_heads;
  j["head_dim"] = c.head_dim;
  j["vocab_size"] = c.vocab_size;
  j["max_position_embeddings"] = c.max_seq_len;
  j["rms_norm_eps"] = ShortestDouble(c.norm_eps);
  j["rope_theta"] = ShortestDouble(c.rope.theta);
  if (c.rope.scaling.factor > 0.0f) {
    const kernels::RopeScaling& s = c.rope.scaling;
    j["rope_scaling"] = {{"rope_type", "llama3"},
                         {"factor", ShortestDouble(s.factor)},
                         {"low_freq_factor", ShortestDouble(s.low_freq_factor)},
                         {"high_freq_factor", ShortestDouble(s.high_freq_factor)},
                         {"original_max_position_embeddings", s.original_max_position_embeddings}};
  } else {
    j["rope_scaling"] = nullptr;
  }
  j["tie_word_embeddings"] = tied;
  if (qwen2) {
    j["use_sliding_window"] = false;
  } else {
    j["attention_bias"] = false;
    j["mlp_bias"] = false;
  }
  j["hidden_act"] = "silu";
  j["bos_token_id"] = c.bos_token_id;
  j["eos_token_id"] = c.stop_token_ids;
  j["torch_dtype"] = "float32";
  return j;
}

// Writes `text` to `path` through a temporary file and a rename.
absl::Status WriteTextFile(const std::string& path, const std::string& text) {
  const std::string tmp = absl::StrCat(path, ".tmp.", ::getpid());
  std::FILE* out = std::fopen(tmp.c_str(), "wb");
  if (out == nullptr) return absl::ErrnoToStatus(errno, absl::StrCat("cannot create ", tmp));
  errno = 0;
  bool ok = std::fwrite(text.data(), 1, text.size(), out) == text.size();
  const int write_errno = errno;
  ok = std::fclose(out) == 0 && ok;
  if (!ok) {
    const int err = write_errno != 0 ? write_errno : (errno != 0 ? errno : EIO);
    std::remove(tmp.c_str());
    return absl::ErrnoToStatus(err, absl::StrCat("cannot write ", tmp));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    std::remove(tmp.c_str());
    return absl::ErrnoToStatus(err, absl::StrCat("cannot rename ", tmp, " to ", path));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ConvertToHf(const ModelWeights& model, const std::string& out_dir) {
  const ModelConfig& c = model.config;
  DAPQ_RETURN_IF_ERROR(c.Validate());
  DAPQ_RETURN_IF_ERROR(model.CheckComplete());
  std::error_code ec;
  fs::create_directories(out_dir, ec);
  if (ec) {
    return absl::ErrnoToStatus(
        ec.value(), absl::StrCat("cannot create directory ", out_dir, ": ", ec.message()));
  }

  const bool tied = c.tied_embeddings || model.classifier == model.token_embedding;
  const bool permute = c.rope.layout == kernels::RopeLayout::kInterleaved;
  const int64_t dim = c.dim, hidden = c.hidden_dim, vocab = c.vocab_size;
  const int64_t q_dim = c.q_dim(), kv_dim = c.kv_dim();
  std::deque<std::vector<float>> permuted;  // keeps the permuted copies alive until written
  auto rope_rows = [&](const float* src, int heads, int64_t cols) -> const float* {
    if (!permute) return src;
    permuted.push_back(PermuteToHalfSplit(src, heads, c.head_dim, cols));
    return permuted.back().data();
  };

  std::vector<NamedTensor> tensors;
  tensors.push_back({"model.embed_tokens.weight", {vocab, dim}, model.token_embedding});
  for (int l = 0; l < c.n_layers; ++l) {
    const LayerWeights& w = model.layers[l];
    const std::string p = absl::StrCat("model.layers.", l, ".");
    tensors.push_back({p + "input_layernorm.weight", {dim}, w.attn_norm});
    tensors.push_back(
        {p + "self_attn.q_proj.weight", {q_dim, dim}, rope_rows(w.wq, c.n_heads, dim)});
    tensors.push_back(
        {p + "self_attn.k_proj.weight", {kv_dim, dim}, rope_rows(w.wk, c.n_kv_heads, dim)});
    tensors.push_back({p + "self_attn.v_proj.weight", {kv_dim, dim}, w.wv});
    tensors.push_back({p + "self_attn.o_proj.weight", {dim, q_dim}, w.wo});
    if (c.attention_bias) {
      tensors.push_back({p + "self_attn.q_proj.bias", {q_dim}, rope_rows(w.bq, c.n_heads, 1)});
      tensors.push_back({p + "self_attn.k_proj.bias", {kv_dim}, rope_rows(w.bk, c.n_kv_heads, 1)});
      tensors.push_back({p + "self_attn.v_proj.bias", {kv_dim}, w.bv});
    }
    tensors.push_back({p + "post_attention_layernorm.weight", {dim}, w.ffn_norm});
    tensors.push_back({p + "mlp.gate_proj.weight", {hidden, dim}, w.w1});
    tensors.push_back({p + "mlp.down_proj.weight", {dim, hidden}, w.w2});
    tensors.push_back({p + "mlp.up_proj.weight", {hidden, dim}, w.w3});
  }
  tensors.push_back({"model.norm.weight", {dim}, model.final_norm});
  if (!tied) tensors.push_back({"lm_head.weight", {vocab, dim}, model.classifier});

  const fs::path dir(out_dir);
  DAPQ_RETURN_IF_ERROR(WriteSafetensors((dir / "model.safetensors").string(), tensors));
  std::string config_text;
  try {
    config_text = MakeConfigJson(c, tied).dump(2) + "\n";
  } catch (const nlohmann::json::exception& e) {
    return absl::InternalError(absl::StrCat("cannot encode config.json: ", e.what()));
  }
  return WriteTextFile((dir / "config.json").string(), config_text);
}

}  // namespace dapq::worker
