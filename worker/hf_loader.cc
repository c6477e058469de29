// File: worker/hf_loader.cc
// Hugging Face config.json parsing and safetensors weight lookup for LoadHfModel.
#include "worker/hf_loader.h"

#include <algorithm>
#include <climits>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/mapped_file.h"
#include "common/status_macros.h"
#include "kernels/convert.h"
#include "nlohmann/json.hpp"
#include "worker/safetensors.h"

namespace dapq::worker {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

// The largest sizes a config.json may declare. The loader allocates the RoPE table (head_dim / 2
// floats) and one entry per layer before it reads any tensor, so without bounds a few bytes of
// config asked for gigabytes (found by tests/fuzz/hf_config_fuzzer: head_dim = 2e9 allocated
// 4 GB), and num_attention_heads x head_dim overflowed an int. Real models stay far below.
constexpr int kMaxDim = 1 << 20;     // every width, the vocabulary, and heads x head_dim
constexpr int kMaxLayers = 1 << 12;  // num_hidden_layers

// Typed access to the fields of one JSON object of config.json. Errors name the field (with
// `prefix_` for nested objects, e.g. "rope_scaling.factor") and the file. A null value is treated
// as absent.
class ConfigFields {
 public:
  ConfigFields(const Json& obj, const std::string& file, std::string prefix = "")
      : obj_(obj), file_(file), prefix_(std::move(prefix)) {}

  const Json* Find(const char* key) const {
    auto it = obj_.find(key);
    if (it == obj_.end() || it->is_null()) return nullptr;
    return &*it;
  }

  absl::Status Missing(const char* key) const {
    return absl::InvalidArgumentError(
        absl::StrCat(file_, ": required field \"", prefix_, key, "\" is missing"));
  }

  absl::Status WrongType(const char* key, const char* expected, const Json& value) const {
    return absl::InvalidArgumentError(absl::StrCat(file_, ": field \"", prefix_, key, "\" must be ",
                                                   expected, ", got ", value.type_name(), " ",
                                                   value.dump()));
  }

  absl::Status BadValue(const char* key, const std::string& why) const {
    return absl::InvalidArgumentError(absl::StrCat(file_, ": field \"", prefix_, key, "\" ", why));
  }

  absl::StatusOr<int> IntValue(const char* key, const Json& v) const {
    if (!v.is_number_integer()) return WrongType(key, "an integer", v);
    if (v.is_number_unsigned() ? v.get<uint64_t>() > static_cast<uint64_t>(INT_MAX)
                               : (v.get<int64_t>() > INT_MAX || v.get<int64_t>() < INT_MIN)) {
      return BadValue(key, absl::StrCat("= ", v.dump(), " is out of range"));
    }
    return static_cast<int>(v.get<int64_t>());
  }

  absl::StatusOr<int> Int(const char* key, std::optional<int> fallback = std::nullopt) const {
    const Json* v = Find(key);
    if (v == nullptr) {
      if (fallback.has_value()) return *fallback;
      return Missing(key);
    }
    return IntValue(key, *v);
  }

  // A required (or defaulted) integer that must be in [1, max].
  absl::StatusOr<int> PositiveInt(const char* key, std::optional<int> fallback = std::nullopt,
                                  int max = kMaxDim) const {
    DAPQ_ASSIGN_OR_RETURN(int v, Int(key, fallback));
    if (v <= 0) return BadValue(key, absl::StrCat("= ", v, " must be > 0"));
    if (v > max) return BadValue(key, absl::StrCat("= ", v, " exceeds the limit of ", max));
    return v;
  }

  absl::StatusOr<double> Number(const char* key,
                                std::optional<double> fallback = std::nullopt) const {
    const Json* v = Find(key);
    if (v == nullptr) {
      if (fallback.has_value()) return *fallback;
      return Missing(key);
    }
    if (!v->is_number()) return WrongType(key, "a number", *v);
    return v->get<double>();
  }

  absl::StatusOr<bool> Bool(const char* key, bool fallback) const {
    const Json* v = Find(key);
    if (v == nullptr) return fallback;
    if (!v->is_boolean()) return WrongType(key, "a boolean", *v);
    return v->get<bool>();
  }

  absl::StatusOr<std::optional<std::string>> String(const char* key) const {
    const Json* v = Find(key);
    if (v == nullptr) return std::optional<std::string>();
    if (!v->is_string()) return WrongType(key, "a string", *v);
    return std::optional<std::string>(v->get<std::string>());
  }

 private:
  const Json& obj_;
  const std::string& file_;
  std::string prefix_;
};

absl::Status ParseRopeScaling(const ConfigFields& root, const std::string& file,
                              kernels::RopeScaling* scaling) {
  const Json* rs = root.Find("rope_scaling");
  if (rs == nullptr) return absl::OkStatus();
  if (!rs->is_object()) return root.WrongType("rope_scaling", "an object or null", *rs);
  ConfigFields f(*rs, file, "rope_scaling.");
  DAPQ_ASSIGN_OR_RETURN(std::optional<std::string> type, f.String("rope_type"));
  if (!type.has_value()) {
    DAPQ_ASSIGN_OR_RETURN(type, f.String("type"));
  }
  if (!type.has_value()) return f.Missing("rope_type");
  if (*type == "default") return absl::OkStatus();
  if (*type != "llama3") {
    return absl::UnimplementedError(absl::StrCat(file, ": rope_scaling type \"", *type,
                                                 "\" is not implemented (only \"llama3\")"));
  }
  DAPQ_ASSIGN_OR_RETURN(double factor, f.Number("factor"));
  DAPQ_ASSIGN_OR_RETURN(double low, f.Number("low_freq_factor"));
  DAPQ_ASSIGN_OR_RETURN(double high, f.Number("high_freq_factor"));
  DAPQ_ASSIGN_OR_RETURN(int original, f.Int("original_max_position_embeddings"));
  scaling->factor = static_cast<float>(factor);
  scaling->low_freq_factor = static_cast<float>(low);
  scaling->high_freq_factor = static_cast<float>(high);
  scaling->original_max_position_embeddings = original;
  return absl::OkStatus();
}

absl::Status ParseConfig(const Json& root, const std::string& file, ModelConfig* c) {
  if (!root.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(file, ": top-level JSON is a ", root.type_name(), ", not an object"));
  }
  ConfigFields f(root, file);
  DAPQ_ASSIGN_OR_RETURN(std::optional<std::string> model_type, f.String("model_type"));
  const std::string type = model_type.value_or("llama");
  if (type != "llama" && type != "mistral" && type != "qwen2") {
    return absl::InvalidArgumentError(
        absl::StrCat(file, ": model_type \"", type, "\" is not supported (llama, mistral, qwen2)"));
  }
  DAPQ_ASSIGN_OR_RETURN(std::optional<std::string> act, f.String("hidden_act"));
  if (act.has_value() && *act != "silu") {
    return absl::UnimplementedError(
        absl::StrCat(file, ": hidden_act \"", *act, "\" is not implemented (only \"silu\")"));
  }
  DAPQ_ASSIGN_OR_RETURN(bool mlp_bias, f.Bool("mlp_bias", false));
  if (mlp_bias) {
    return absl::UnimplementedError(absl::StrCat(file, ": mlp_bias=true is not implemented"));
  }
  DAPQ_ASSIGN_OR_RETURN(c->dim, f.PositiveInt("hidden_size"));
  DAPQ_ASSIGN_OR_RETURN(c->hidden_dim, f.PositiveInt("intermediate_size"));
  DAPQ_ASSIGN_OR_RETURN(c->n_layers, f.PositiveInt("num_hidden_layers", std::nullopt, kMaxLayers));
  DAPQ_ASSIGN_OR_RETURN(c->n_heads, f.PositiveInt("num_attention_heads"));
  DAPQ_ASSIGN_OR_RETURN(c->n_kv_heads, f.PositiveInt("num_key_value_heads", c->n_heads));
  if (f.Find("head_dim") == nullptr && c->dim % c->n_heads != 0) {
    return f.BadValue("hidden_size", absl::StrCat("= ", c->dim,
                                                  " is not a multiple of "
                                                  "num_attention_heads = ",
                                                  c->n_heads, " and no head_dim is given"));
  }
  DAPQ_ASSIGN_OR_RETURN(c->head_dim, f.PositiveInt("head_dim", c->dim / c->n_heads));
  if (int64_t{c->n_heads} * c->head_dim > kMaxDim) {
    return f.BadValue("num_attention_heads",
                      absl::StrCat("= ", c->n_heads, " x head_dim = ", c->head_dim,
                                   " exceeds the limit of ", kMaxDim));
  }
  DAPQ_ASSIGN_OR_RETURN(c->vocab_size, f.PositiveInt("vocab_size"));
  DAPQ_ASSIGN_OR_RETURN(c->max_seq_len,
                        f.PositiveInt("max_position_embeddings", std::nullopt, INT_MAX));
  DAPQ_ASSIGN_OR_RETURN(double eps, f.Number("rms_norm_eps"));
  c->norm_eps = static_cast<float>(eps);
  DAPQ_ASSIGN_OR_RETURN(double theta, f.Number("rope_theta", 10000.0));
  c->rope = kernels::RopeConfig{};
  c->rope.head_dim = c->head_dim;
  c->rope.theta = static_cast<float>(theta);
  c->rope.layout = kernels::RopeLayout::kHalfSplit;
  DAPQ_RETURN_IF_ERROR(ParseRopeScaling(f, file, &c->rope.scaling));
  DAPQ_ASSIGN_OR_RETURN(c->tied_embeddings, f.Bool("tie_word_embeddings", false));
  DAPQ_ASSIGN_OR_RETURN(bool attention_bias, f.Bool("attention_bias", false));
  c->attention_bias = attention_bias || type == "qwen2";
  // Mistral's "sliding_window" is deliberately ignored: full attention is used (see header).
  DAPQ_ASSIGN_OR_RETURN(c->bos_token_id, f.Int("bos_token_id", 1));
  c->stop_token_ids.clear();
  if (const Json* eos = f.Find("eos_token_id")) {
    if (eos->is_array()) {
      for (const Json& id : *eos) {
        if (!id.is_number_integer()) {
          return f.WrongType("eos_token_id", "an integer or a list of integers", *eos);
        }
        DAPQ_ASSIGN_OR_RETURN(int v, f.IntValue("eos_token_id", id));
        c->stop_token_ids.push_back(v);
      }
    } else if (eos->is_number_integer()) {
      DAPQ_ASSIGN_OR_RETURN(int v, f.IntValue("eos_token_id", *eos));
      c->stop_token_ids.push_back(v);
    } else {
      return f.WrongType("eos_token_id", "an integer or a list of integers", *eos);
    }
  }
  return absl::OkStatus();
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

// Every tensor of every *.safetensors file in a directory, by name.
class TensorIndex {
 public:
  absl::Status Open(const std::string& dir) {
    dir_ = dir;
    std::error_code ec;
    std::vector<fs::path> paths;
    for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
      std::error_code type_ec;
      if (it->path().extension() == ".safetensors" && it->is_regular_file(type_ec)) {
        paths.push_back(it->path());
      }
    }
    if (ec) return absl::ErrnoToStatus(ec.value(), absl::StrCat("cannot list ", dir));
    if (paths.empty()) {
      return absl::NotFoundError(absl::StrCat("no *.safetensors files in ", dir));
    }
    std::sort(paths.begin(), paths.end());
    for (const fs::path& p : paths) {
      DAPQ_ASSIGN_OR_RETURN(SafetensorsFile file, SafetensorsFile::Open(p.string()));
      for (const std::string& name : file.Names()) {
        DAPQ_ASSIGN_OR_RETURN(TensorView view, file.Get(name));
        auto [it, inserted] = tensors_.emplace(name, Entry{files_.size(), std::move(view)});
        if (!inserted) {
          return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "' appears in both ",
                                                         files_[it->second.file].path(), " and ",
                                                         file.path()));
        }
      }
      files_.push_back(std::move(file));
      mapped_.push_back(false);
    }
    return absl::OkStatus();
  }

  bool Has(const std::string& name) const { return tensors_.count(name) != 0; }

  // The tensor `name` as fp32, after checking its shape. Points into the mapping when the file
  // holds aligned F32 data, else into a buffer owned by `w`.
  absl::StatusOr<const float*> Take(const std::string& name, const std::vector<int64_t>& shape,
                                    ModelWeights* w) {
    DAPQ_ASSIGN_OR_RETURN(const Entry* entry, Find(name, shape));
    const TensorView& view = entry->view;
    if (view.dtype == SafetensorsDType::kF32 &&
        reinterpret_cast<uintptr_t>(view.data) % alignof(float) == 0) {
      mapped_[entry->file] = true;
      return reinterpret_cast<const float*>(view.data);
    }
    float* out = w->AllocateOwned(static_cast<size_t>(view.NumElements()));
    ConvertToF32(view, out);
    return out;
  }

  // The tensor `name` as bf16, after checking its shape: points into the mapping when the file
  // holds aligned BF16 data, else rounds F32/F16 element by element into a buffer owned by `w`
  // (never an fp32 copy of the whole tensor).
  absl::StatusOr<const uint16_t*> TakeBf16(const std::string& name,
                                           const std::vector<int64_t>& shape, ModelWeights* w) {
    DAPQ_ASSIGN_OR_RETURN(const Entry* entry, Find(name, shape));
    const TensorView& view = entry->view;
    if (view.dtype == SafetensorsDType::kBF16 &&
        reinterpret_cast<uintptr_t>(view.data) % alignof(uint16_t) == 0) {
      mapped_[entry->file] = true;
      return reinterpret_cast<const uint16_t*>(view.data);
    }
    const size_t n = static_cast<size_t>(view.NumElements());
    uint16_t* out = w->AllocateOwnedBf16(n);
    constexpr size_t kStep = 4096;  // widened a slice at a time
    std::vector<float> slice(std::min(n, kStep));
    for (size_t i = 0; i < n; i += kStep) {
      const size_t count = std::min(kStep, n - i);
      TensorView part = view;
      part.shape = {static_cast<int64_t>(count)};
      part.data = view.data + i * SafetensorsDTypeSize(view.dtype);
      part.bytes = count * SafetensorsDTypeSize(view.dtype);
      ConvertToF32(part, slice.data());
      kernels::ConvertFromFloat(slice.data(), kernels::DType::kBF16, out + i,
                                static_cast<long>(count));
    }
    return out;
  }

  // Moves the mappings that weights point into over to `w`.
  void KeepMappings(ModelWeights* w) {
    for (size_t i = 0; i < files_.size(); ++i) {
      if (mapped_[i]) w->KeepMapping(files_[i].ReleaseMapping());
    }
  }

 private:
  struct Entry {
    size_t file;
    TensorView view;
  };

  // The entry of `name`, its shape checked against config.json's.
  absl::StatusOr<const Entry*> Find(const std::string& name, const std::vector<int64_t>& shape) {
    auto it = tensors_.find(name);
    if (it == tensors_.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor '", name, "' is missing from the checkpoint in ", dir_));
    }
    const TensorView& view = it->second.view;
    if (view.shape != shape) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor '", name, "' in ", files_[it->second.file].path(), " has shape ",
          ShapeString(view.shape), ", expected ", ShapeString(shape), " from config.json"));
    }
    return &it->second;
  }
  std::string dir_;
  std::vector<SafetensorsFile> files_;
  std::vector<bool> mapped_;  // some weight points into files_[i]'s mapping
  std::map<std::string, Entry> tensors_;
};

std::string DirectoryBasename(const std::string& dir) {
  std::error_code ec;
  fs::path p = fs::absolute(fs::path(dir), ec);
  if (ec) p = fs::path(dir);
  p = p.lexically_normal();
  if (p.filename().empty()) p = p.parent_path();
  return p.filename().string();
}

}  // namespace

absl::StatusOr<ModelWeights> LoadHfModel(const std::string& dir, kernels::DType linear_dtype) {
  if (linear_dtype == kernels::DType::kF16) {
    return absl::InvalidArgumentError("weights_dtype: fp16 linear layers are not supported");
  }
  std::error_code ec;
  const fs::file_status st = fs::status(dir, ec);
  if (!fs::exists(st)) {
    return absl::NotFoundError(absl::StrCat("model directory ", dir, " not found"));
  }
  if (!fs::is_directory(st)) {
    return absl::InvalidArgumentError(absl::StrCat("model path ", dir, " is not a directory"));
  }
  const std::string config_path = (fs::path(dir) / "config.json").string();
  DAPQ_ASSIGN_OR_RETURN(std::string config_text, ReadFileToString(config_path));
  Json root;
  try {
    root = Json::parse(config_text);
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(config_path, ": not valid JSON: ", e.what()));
  }

  ModelWeights w;
  ModelConfig& c = w.config;
  DAPQ_RETURN_IF_ERROR(ParseConfig(root, config_path, &c));
  c.name = DirectoryBasename(dir);
  DAPQ_RETURN_IF_ERROR(c.Validate());

  TensorIndex index;
  DAPQ_RETURN_IF_ERROR(index.Open(dir));
  const int64_t dim = c.dim, hidden = c.hidden_dim, vocab = c.vocab_size;
  const int64_t q_dim = c.q_dim(), kv_dim = c.kv_dim();
  DAPQ_ASSIGN_OR_RETURN(w.token_embedding,
                        index.Take("model.embed_tokens.weight", {vocab, dim}, &w));
  DAPQ_ASSIGN_OR_RETURN(w.final_norm, index.Take("model.norm.weight", {dim}, &w));
  const bool bf16 = linear_dtype == kernels::DType::kBF16;
  w.weights_dtype = linear_dtype;
  // A linear matrix: fp32, or bf16 without an fp32 copy.
  const auto linear = [&](const std::string& name, const std::vector<int64_t>& shape,
                          const float** f32, const uint16_t** b16) -> absl::Status {
    if (bf16) {
      DAPQ_ASSIGN_OR_RETURN(*b16, index.TakeBf16(name, shape, &w));
    } else {
      DAPQ_ASSIGN_OR_RETURN(*f32, index.Take(name, shape, &w));
    }
    return absl::OkStatus();
  };
  if (c.tied_embeddings) {
    w.classifier = w.token_embedding;
    if (bf16) {
      w.classifier_bf16 = w.OwnedBf16Copy(w.token_embedding, static_cast<size_t>(vocab) * dim);
    }
  } else if (!index.Has("lm_head.weight")) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor 'lm_head.weight' is missing from the checkpoint in ", dir,
                     " and tie_word_embeddings is false"));
  } else {
    DAPQ_RETURN_IF_ERROR(linear("lm_head.weight", {vocab, dim}, &w.classifier, &w.classifier_bf16));
  }
  w.layers.resize(c.n_layers);
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string p = absl::StrCat("model.layers.", l, ".");
    for (const char* unsupported : {"self_attn.o_proj.bias", "mlp.gate_proj.bias",
                                    "mlp.up_proj.bias", "mlp.down_proj.bias"}) {
      if (index.Has(p + unsupported)) {
        return absl::UnimplementedError(
            absl::StrCat("tensor '", p, unsupported, "': this bias is not implemented"));
      }
    }
    LayerWeights& lw = w.layers[l];
    DAPQ_ASSIGN_OR_RETURN(lw.attn_norm, index.Take(p + "input_layernorm.weight", {dim}, &w));
    DAPQ_RETURN_IF_ERROR(linear(p + "self_attn.q_proj.weight", {q_dim, dim}, &lw.wq, &lw.bf16.wq));
    DAPQ_RETURN_IF_ERROR(linear(p + "self_attn.k_proj.weight", {kv_dim, dim}, &lw.wk, &lw.bf16.wk));
    DAPQ_RETURN_IF_ERROR(linear(p + "self_attn.v_proj.weight", {kv_dim, dim}, &lw.wv, &lw.bf16.wv));
    DAPQ_RETURN_IF_ERROR(linear(p + "self_attn.o_proj.weight", {dim, q_dim}, &lw.wo, &lw.bf16.wo));
    if (c.attention_bias) {
      DAPQ_ASSIGN_OR_RETURN(lw.bq, index.Take(p + "self_attn.q_proj.bias", {q_dim}, &w));
      DAPQ_ASSIGN_OR_RETURN(lw.bk, index.Take(p + "self_attn.k_proj.bias", {kv_dim}, &w));
      DAPQ_ASSIGN_OR_RETURN(lw.bv, index.Take(p + "self_attn.v_proj.bias", {kv_dim}, &w));
    }
    DAPQ_ASSIGN_OR_RETURN(lw.ffn_norm,
                          index.Take(p + "post_attention_layernorm.weight", {dim}, &w));
    DAPQ_RETURN_IF_ERROR(linear(p + "mlp.gate_proj.weight", {hidden, dim}, &lw.w1, &lw.bf16.w1));
    DAPQ_RETURN_IF_ERROR(linear(p + "mlp.down_proj.weight", {dim, hidden}, &lw.w2, &lw.bf16.w2));
    DAPQ_RETURN_IF_ERROR(linear(p + "mlp.up_proj.weight", {hidden, dim}, &lw.w3, &lw.bf16.w3));
  }
  index.KeepMappings(&w);
  DAPQ_RETURN_IF_ERROR(c.Validate());
  DAPQ_RETURN_IF_ERROR(w.CheckComplete());
  return w;
}

}  // namespace dapq::worker
