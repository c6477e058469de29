// File: worker/hf_loader_test.cc
// Tests for LoadHfModel on tiny generated checkpoints: config parsing and defaults, every error
// path (each names its field, file or tensor), sharded files, Qwen2 biases, and fp32 conversion
// of BF16 / F16 / unaligned F32 tensors.
#include "worker/hf_loader.h"

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/types.h"
#include "nlohmann/json.hpp"
#include "tests/util/status_matchers.h"
#include "tests/util/test_paths.h"
#include "worker/safetensors.h"

namespace dapq::worker {
namespace {

using ::dapq::testing::IsOk;
using ::dapq::testing::StatusIs;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using Json = nlohmann::json;

// Sizes of the tiny test model: head_dim 4, GQA group 2.
constexpr int kDim = 8, kHidden = 12, kLayers = 2, kHeads = 2, kKvHeads = 1, kVocab = 16;
constexpr int kHeadDim = kDim / kHeads, kKvDim = kKvHeads * kHeadDim;

struct Tensor {
  std::string name;
  std::vector<int64_t> shape;
  std::vector<float> data;
};

Json TinyConfig() {
  return Json{{"architectures", {"LlamaForCausalLM"}},
              {"model_type", "llama"},
              {"hidden_size", kDim},
              {"intermediate_size", kHidden},
              {"num_hidden_layers", kLayers},
              {"num_attention_heads", kHeads},
              {"num_key_value_heads", kKvHeads},
              {"vocab_size", kVocab},
              {"max_position_embeddings", 32},
              {"rms_norm_eps", 1e-6},
              {"rope_theta", 500000.0},
              {"rope_scaling", nullptr},
              {"tie_word_embeddings", false},
              {"hidden_act", "silu"},
              {"bos_token_id", 1},
              {"eos_token_id", 2},
              {"torch_dtype", "float32"}};
}

// Deterministic values in [-1, 1], distinct per tensor (seeded by `salt`).
std::vector<float> Values(int64_t n, uint32_t salt) {
  std::vector<float> v(n);
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t h = (static_cast<uint32_t>(i) + 1) * 2654435761u ^ (salt * 40503u + 977u);
    v[i] = static_cast<float>(h % 20001u) / 10000.0f - 1.0f + 1e-7f * static_cast<float>(i % 7);
  }
  return v;
}

std::vector<Tensor> TinyTensors(int kv_heads = kKvHeads, bool bias = false, bool lm_head = true) {
  const int64_t kv_dim = static_cast<int64_t>(kv_heads) * kHeadDim;
  std::vector<Tensor> t;
  auto add = [&t](std::string name, std::vector<int64_t> shape) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    t.push_back({std::move(name), std::move(shape), Values(n, static_cast<uint32_t>(t.size()))});
  };
  add("model.embed_tokens.weight", {kVocab, kDim});
  for (int l = 0; l < kLayers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    add(p + "input_layernorm.weight", {kDim});
    add(p + "self_attn.q_proj.weight", {kDim, kDim});
    add(p + "self_attn.k_proj.weight", {kv_dim, kDim});
    add(p + "self_attn.v_proj.weight", {kv_dim, kDim});
    add(p + "self_attn.o_proj.weight", {kDim, kDim});
    if (bias) {
      add(p + "self_attn.q_proj.bias", {kDim});
      add(p + "self_attn.k_proj.bias", {kv_dim});
      add(p + "self_attn.v_proj.bias", {kv_dim});
    }
    add(p + "post_attention_layernorm.weight", {kDim});
    add(p + "mlp.gate_proj.weight", {kHidden, kDim});
    add(p + "mlp.down_proj.weight", {kDim, kHidden});
    add(p + "mlp.up_proj.weight", {kHidden, kDim});
  }
  add("model.norm.weight", {kDim});
  if (lm_head) add("lm_head.weight", {kVocab, kDim});
  return t;
}

const Tensor& Find(const std::vector<Tensor>& tensors, const std::string& name) {
  for (const Tensor& t : tensors) {
    if (t.name == name) return t;
  }
  ADD_FAILURE() << "no tensor " << name;
  static const Tensor kEmpty;
  return kEmpty;
}

void Remove(std::vector<Tensor>* tensors, const std::string& name) {
  std::erase_if(*tensors, [&name](const Tensor& t) { return t.name == name; });
}

bool SameFloats(const float* p, const std::vector<float>& v) {
  return p != nullptr && std::memcmp(p, v.data(), v.size() * sizeof(float)) == 0;
}

class HfLoaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ =
        dapq::testing::MakeTempDir(std::string("hf_loader_test_") +
                                   ::testing::UnitTest::GetInstance()->current_test_info()->name());
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  void WriteText(const std::string& name, const std::string& text) {
    std::ofstream(dir_ + "/" + name, std::ios::binary) << text;
  }
  void WriteConfig(const Json& config) { WriteText("config.json", config.dump(2)); }

  void WriteF32(const std::string& file, const std::vector<Tensor>& tensors) {
    std::vector<NamedTensor> named;
    for (const Tensor& t : tensors) named.push_back({t.name, t.shape, t.data.data()});
    ASSERT_THAT(WriteSafetensors(dir_ + "/" + file, named), IsOk());
  }

  // Writes `tensors` with per-tensor dtype `dtype_of` (values rounded to it), preceded by a
  // 2-byte F16 tensor "pad" when `misalign` so that every following tensor is unaligned.
  void WriteMixed(const std::string& file, const std::vector<Tensor>& tensors,
                  const std::function<SafetensorsDType(const Tensor&)>& dtype_of, bool misalign) {
    Json header = Json::object();
    std::string data;
    if (misalign) {
      header["pad"] = {{"dtype", "F16"}, {"shape", {1}}, {"data_offsets", {0, 2}}};
      data.append(2, '\0');
    }
    for (const Tensor& t : tensors) {
      const SafetensorsDType dtype = dtype_of(t);
      const size_t begin = data.size();
      for (float v : t.data) {
        if (dtype == SafetensorsDType::kF32) {
          data.append(reinterpret_cast<const char*>(&v), 4);
        } else {
          const uint16_t bits =
              dtype == SafetensorsDType::kBF16 ? kernels::FloatToBf16(v) : F32ToF16(v);
          data.append(reinterpret_cast<const char*>(&bits), 2);
        }
      }
      header[t.name] = {{"dtype", SafetensorsDTypeName(dtype)},
                        {"shape", t.shape},
                        {"data_offsets", {begin, data.size()}}};
    }
    std::string text = header.dump();
    text.append((8 - text.size() % 8) % 8, ' ');  // data section 8-aligned: "pad" misaligns
    std::string bytes(8, '\0');
    for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((text.size() >> (8 * i)) & 0xff);
    WriteText(file, bytes + text + data);
  }

  // fp32 -> fp16 for values that are exact in fp16 (the test only uses such values).
  static uint16_t F32ToF16(float v) {
    for (uint32_t bits = 0; bits < 0x10000; ++bits) {
      if (kernels::F16ToFloat(static_cast<uint16_t>(bits)) == v) return static_cast<uint16_t>(bits);
    }
    ADD_FAILURE() << v << " is not exact in fp16";
    return 0;
  }

  // The tiny model in one F32 file with `config`.
  void WriteTiny(const Json& config, const std::vector<Tensor>& tensors = TinyTensors()) {
    WriteConfig(config);
    WriteF32("model.safetensors", tensors);
  }

  std::string dir_;
};

TEST_F(HfLoaderTest, LoadsF32CheckpointPointingIntoTheMapping) {
  const std::vector<Tensor> tensors = TinyTensors();
  WriteTiny(TinyConfig(), tensors);
  ASSERT_OK_AND_ASSIGN(ModelWeights w, LoadHfModel(dir_));
  const ModelConfig& c = w.config;
  EXPECT_EQ(c.name, std::filesystem::path(dir_).filename().string());
  EXPECT_EQ(c.dim, kDim);
  EXPECT_EQ(c.hidden_dim, kHidden);
  EXPECT_EQ(c.n_layers, kLayers);
  EXPECT_EQ(c.n_heads, kHeads);
  EXPECT_EQ(c.n_kv_heads, kKvHeads);
  EXPECT_EQ(c.head_dim, kHeadDim);
  EXPECT_EQ(c.vocab_size, kVocab);
  EXPECT_EQ(c.max_seq_len, 32);
  EXPECT_EQ(c.norm_eps, 1e-6f);
  EXPECT_EQ(c.rope.theta, 500000.0f);
  EXPECT_EQ(c.rope.head_dim, kHeadDim);
  EXPECT_EQ(c.rope.layout, kernels::RopeLayout::kHalfSplit);
  EXPECT_EQ(c.rope.scaling.factor, 0.0f);
  EXPECT_FALSE(c.tied_embeddings);
  EXPECT_FALSE(c.attention_bias);
  EXPECT_EQ(c.bos_token_id, 1);
  EXPECT_THAT(c.stop_token_ids, ElementsAre(2));
  EXPECT_EQ(w.OwnedBytes(), 0u);  // aligned F32: no copies

  EXPECT_TRUE(SameFloats(w.token_embedding, Find(tensors, "model.embed_tokens.weight").data));
  EXPECT_TRUE(SameFloats(w.final_norm, Find(tensors, "model.norm.weight").data));
  EXPECT_TRUE(SameFloats(w.classifier, Find(tensors, "lm_head.weight").data));
  ASSERT_EQ(w.layers.size(), static_cast<size_t>(kLayers));
  for (int l = 0; l < kLayers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    const LayerWeights& lw = w.layers[l];
    EXPECT_TRUE(SameFloats(lw.attn_norm, Find(tensors, p + "input_layernorm.weight").data));
    EXPECT_TRUE(SameFloats(lw.wq, Find(tensors, p + "self_attn.q_proj.weight").data));
    EXPECT_TRUE(SameFloats(lw.wk, Find(tensors, p + "self_attn.k_proj.weight").data));
    EXPECT_TRUE(SameFloats(lw.wv, Find(tensors, p + "self_attn.v_proj.weight").data));
    EXPECT_TRUE(SameFloats(lw.wo, Find(tensors, p + "self_attn.o_proj.weight").data));
    EXPECT_TRUE(SameFloats(lw.ffn_norm, Find(tensors, p + "post_attention_layernorm.weight").data));
    EXPECT_TRUE(SameFloats(lw.w1, Find(tensors, p + "mlp.gate_proj.weight").data));
    EXPECT_TRUE(SameFloats(lw.w2, Find(tensors, p + "mlp.down_proj.weight").data));
    EXPECT_TRUE(SameFloats(lw.w3, Find(tensors, p + "mlp.up_proj.weight").data));
    EXPECT_EQ(lw.bq, nullptr);
  }
}

TEST_F(HfLoaderTest, WeightsOutliveTheLoaderAndMoves) {
  const std::vector<Tensor> tensors = TinyTensors();
  WriteTiny(TinyConfig(), tensors);
  ModelWeights moved;
  {
    ASSERT_OK_AND_ASSIGN(ModelWeights w, LoadHfModel(dir_));
    moved = std::move(w);
  }
  std::filesystem::remove_all(dir_);  // the mapping stays valid after unlinking
  EXPECT_TRUE(
      SameFloats(moved.layers[1].w3, Find(tensors, "model.layers.1.mlp.up_proj.weight").data));
}

TEST_F(HfLoaderTest, DirectoryNameWithTrailingSlashIsItsBasename) {
  WriteTiny(TinyConfig());
  ASSERT_OK_AND_ASSIGN(ModelWeights w, LoadHfModel(dir_ + "/"));
  EXPECT_EQ(w.config.name, std::filesystem::path(dir_).filename().string());
}

TEST_F(HfLoaderTest, LoadsShardedCheckpoint) {
  std::vector<Tensor> tensors = TinyTensors();
  const std::vector<Tensor> first(tensors.begin(), tensors.begin() + 10);
  const std::vector<Tensor> second(tensors.begin() + 10, tensors.end());
  WriteConfig(TinyConfig());
  WriteF32("model-00001-of-00002.safetensors", first);
  WriteF32("model-00002-of-00002.safetensors", second);
  WriteText("model.safetensors.index.json", "{}");
  ASSERT_OK_AND_ASSIGN(ModelWeights w, LoadHfModel(dir_));
  EXPECT_TRUE(SameFloats(w.token_embedding, Find(tensors, "model.embed_tokens.weight").data));
  EXPECT_TRUE(SameFloats(w.classifier, Find(tensors, "lm_head.weight").data));
  EXPECT_TRUE(
      SameFloats(w.layers[1].w2, Find(tensors, "model.layers.1.mlp.down_proj.weight").data));
}

TEST_F(HfLoaderTest, TensorInTwoShardsIsInvalid) {
  const std::vector<Tensor> tensors = TinyTensors();
  WriteConfig(TinyConfig());
  WriteF32("a.safetensors", tensors);
  WriteF32("b.safetensors", {tensors[0]});
  EXPECT_THAT(LoadHfModel(dir_),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("'model.embed_tokens.weight' appears in both")));
}

TEST_F(HfLoaderTest, MissingDirectoryIsNotFound) {
  EXPECT_THAT(LoadHfModel(dir_ + "/does_not_exist"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("does_not_exist")));
}

TEST_F(HfLoaderTest, RegularFileInsteadOfDirectoryIsInvalid) {
  WriteText("file", "x");
  EXPECT_THAT(LoadHfModel(dir_ + "/file"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not a directory")));
}

TEST_F(HfLoaderTest, MissingConfigIsNotFound) {
  WriteF32("model.safetensors", TinyTensors());
  EXPECT_THAT(LoadHfModel(dir_), StatusIs(absl::StatusCode::kNotFound, HasSubstr("config.json")));
}

TEST_F(HfLoaderTest, ConfigNotJsonIsInvalid) {
  WriteText("config.json", "{\"hidden_size\": 8,");
  WriteF32("model.safetensors", TinyTensors());
  EXPECT_THAT(LoadHfModel(dir_),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("config.json"), HasSubstr("not valid JSON"))));
  WriteText("config.json", "[1, 2, 3]");
  EXPECT_THAT(LoadHfModel(dir_),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not an object")));
}

TEST_F(HfLoaderTest, MissingRequiredFieldIsNamed) {
  WriteF32("model.safetensors", TinyTensors());
  for (const char* field :
       {"hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
        "vocab_size", "max_position_embeddings", "rms_norm_eps"}) {
    Json config = TinyConfig();
    config.erase(field);
    WriteConfig(config);
    EXPECT_THAT(LoadHfModel(dir_), StatusIs(absl::StatusCode::kInvalidArgument,
                                            AllOf(HasSubstr(std::string("\"") + field + "\""),
                                                  HasSubstr("config.json"), HasSubstr("missing"))))
        << field;
  }
}

TEST_F(HfLoaderTest, WrongFieldTypeIsInvalid) {
  WriteF32("model.safetensors", TinyTensors());
  const std::vector<std::pair<const char*, Json>> cases = {
      {"hidden_size", "8"},     {"hidden_size", 8.5},       {"num_hidden_layers", true},
      {"rms_norm_eps", "1e-6"}, {"rope_theta", {1, 2}},     {"tie_word_embeddings", 1},
      {"eos_token_id", "2"},    {"eos_token_id", {2, "3"}}, {"rope_scaling", 2.0},
      {"model_type", 7},        {"attention_bias", "no"},   {"head_dim", 4.0}};
  for (const auto& [field, value] : cases) {
    Json config = TinyConfig();
    config[field] = value;
    WriteConfig(config);
    EXPECT_THAT(LoadHfModel(dir_), StatusIs(absl::StatusCode::kInvalidArgument,
                                            AllOf(HasSubstr(field), HasSubstr("must be"))))
        << field << " = " << value.dump();
  }
}

TEST_F(HfLoaderTest, BadFieldValuesAreInvalid) {
  WriteF32("model.safetensors", TinyTensors());
  for (const auto& [field, value] : std::vector<std::pair<const char*, Json>>{
           {"hidden_size", 0}, {"num_attention_heads", -2}, {"vocab_size", 1ll << 40}}) {
    Json config = TinyConfig();
    config[field] = value;
    WriteConfig(config);
    EXPECT_THAT(LoadHfModel(dir_), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(field)))
        << field;
  }
  Json config = TinyConfig();
  config["bos_token_id"] = kVocab;
  WriteConfig(config);
  EXPECT_THAT(LoadHfModel(dir_),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("bos_token_id")));
}

// Found by tests/fuzz/hf_config_fuzzer: head_dim = 2e9 made the loader allocate a 4 GB RoPE table
// before reading any tensor. Sizes are bounded; heads x head_dim too (it overflowed an int).
TEST_F(HfLoaderTest, HugeSizesAreInvalidBeforeAnyAllocation) {
  WriteF32("model.safetensors", TinyTensors());
  for (const auto& [field, value] :
       std::vector<std::pair<const char*, Json>>{{"head_dim", 2000000000},
                                                 {"hidden_size", 1 << 24},
                                                 {"intermediate_size", 1 << 21},
                                                 {"num_hidden_layers", 1 << 20},
                                                 {"vocab_size", 1 << 30}}) {
    Json config = TinyConfig();
    config[field] = value;
    WriteConfig(config);
    EXPECT_THAT(LoadHfModel(dir_), StatusIs(absl::StatusCode::kInvalidArgument,
                                            AllOf(HasSubstr(field), HasSubstr("limit"))))
        << field;
  }
  Json config = TinyConfig();
  config["head_dim"] = 1 << 20;
  WriteConfig(config);
  EXPECT_THAT(LoadHfModel(dir_),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("num_attention_heads"), HasSubstr("x head_dim"))));
}

TEST_F(HfLoaderTest, OptionalFieldsTakeTheirDefaults) {
  Json config = TinyConfig();
  for (const char* field :
       {"num_key_value_heads", "rope_theta", "rope_scaling", "tie_word_embeddings", "model_type",
        "hidden_act", "bos_token_id", "eos_token_id"}) {
    config.erase(field);
  }
  config["head_dim"] = nullptr;  // null counts as absent
  WriteTiny(config, TinyTensors(/*kv_heads=*/kHeads));
  ASSERT_OK_AND_ASSIGN(ModelWeights w, LoadHfModel(dir_));
  EXPECT_EQ(w.config.n_kv_heads, kHeads);
  EXPECT_EQ(w.config.head_dim, kHeadDim);
  EXPECT_EQ(w.config.rope.theta, 10000.0f);
  EXPECT_EQ(w.config.rope.scaling.factor, 0.0f);
  EXPECT_FALSE(w.config.tied_embeddings);
  EXPECT_EQ(w.config.bos_token_id, 1);
  EXPECT_TRUE(w.config.stop_token_ids.empty());
}

TEST_F(HfLoaderTest, ExplicitHeadDimIsUsed) {
  Json config = TinyConfig();
  config["head_dim"] = 2;  // q_dim = 4 != hidden_size
  std::vector<Tensor> tensors = TinyTensors();
  for (Tensor& t : tensors) {
    auto resize = [&t](std::vector<int64_t> shape) {
      t.shape = shape;
      t.data = Values(shape.size() == 1 ? shape[0] : shape[0] * shape[1], 99);
    };
    if (t.name.ends_with("q_proj.weight")) resize({4, kDim});
    if (t.name.ends_with("k_proj.weight") || t.name.ends_with("v_proj.weight")) resize({2, kDim});
    if (t.name.ends_with("o_proj.weight")) resize({kDim, 4});
  }
  WriteTiny(config, tensors);
  ASSERT_OK_AND_ASSIGN(ModelWeights w, LoadHfModel(dir_));
  EXPECT_EQ(w.config.head_dim, 2);
  EXPECT_EQ(w.config.rope.head_dim, 2);
  EXPECT_EQ(w.config.q_dim(), 4);
}

TEST_F(HfLoaderTest, EosListBecomesStopTokens) {
  Json config = TinyConfig();
  config["eos_token_id"] = {2, 5, 7};
  WriteTiny(config);
  ASSERT_OK_AND_ASSIGN(ModelWeights w, LoadHfModel(dir_));
  EXPECT_THAT(w.config.stop_token_ids, ElementsAre(2, 5, 7));
}

TEST_F(HfLoaderTest, Llama3RopeScalingIsParsed) {
  Json config = TinyConfig();
  config["rope_scaling"] = {{"rope_type", "llama3"},
                            {"factor", 8.0},
                            {"low_freq_factor", 1.0},
                            {"high_freq_factor", 4.0},
                            {"original_max_position_embeddings", 16}};
  WriteTiny(config);
  ASSERT_OK_AND_ASSIGN(ModelWeights w, LoadHfModel(dir_));
  EXPECT_EQ(w.config.rope.scaling.factor, 8.0f);
  EXPECT_EQ(w.config.rope.scaling.low_freq_factor, 1.0f);
  EXPECT_EQ(w.config.rope.scaling.high_freq_factor, 4.0f);
  EXPECT_EQ(w.config.rope.scaling.original_max_position_embeddings, 16);

  config["rope_scaling"] = {{"type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0}};
  WriteConfig(config);
  EXPECT_THAT(LoadHfModel(dir_), StatusIs(absl::StatusCode::kInvalidArgument,
                                          HasSubstr("rope_scaling.high_freq_factor")));

  config["rope_scaling"] = {{"rope_type", "default"}};
  WriteConfig(config);
  ASSERT_OK_AND_ASSIGN(ModelWeights plain, LoadHfModel(dir_));
  EXPECT_EQ(plain.config.rope.scaling.factor, 0.0f);
}

TEST_F(HfLoaderTest, UnsupportedRopeScalingIsUnimplemented) {
  Json config = TinyConfig();
  config["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}};
  WriteTiny(config);
  EXPECT_THAT(LoadHfModel(dir_), StatusIs(absl::StatusCode::kUnimplemented, HasSubstr("yarn")));
  config["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};
  WriteConfig(config);
  EXPECT_THAT(LoadHfModel(dir_), StatusIs(absl::StatusCode::kUnimplemented, HasSubstr("linear")));
  config["rope_scaling"] = {{"factor", 2.0}};
  WriteConfig(config);
  EXPECT_THAT(LoadHfModel(dir_),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("rope_scaling.rope_type")));
}

TEST_F(HfLoaderTest, UnsupportedModelTypeIsInvalid) {
  Json config = TinyConfig();
  config["model_type"] = "gpt2";
  WriteTiny(config);
  EXPECT_THAT(LoadHfModel(dir_), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("gpt2")));
}

TEST_F(HfLoaderTest, UnsupportedFeaturesAreUnimplemented) {
  Json config = TinyConfig();
  config["hidden_act"] = "gelu";
  WriteTiny(config);
  EXPECT_THAT(LoadHfModel(dir_), StatusIs(absl::StatusCode::kUnimplemented, HasSubstr("gelu")));
  config = TinyConfig();
  config["mlp_bias"] = true;
  WriteConfig(config);
  EXPECT_THAT(LoadHfModel(dir_), StatusIs(absl::StatusCode::kUnimplemented, HasSubstr("mlp_bias")));

  std::vector<Tensor> tensors = TinyTensors(kKvHeads, /*bias=*/true);
  tensors.push_back({"model.layers.0.self_attn.o_proj.bias", {kDim}, Values(kDim, 5)});
  config = TinyConfig();
  config["attention_bias"] = true;
  WriteTiny(config, tensors);
  EXPECT_THAT(LoadHfModel(dir_), StatusIs(absl::StatusCode::kUnimplemented,
                                          HasSubstr("model.layers.0.self_attn.o_proj.bias")));
}

TEST_F(HfLoaderTest, MistralSlidingWindowIsIgnored) {
  Json config = TinyConfig();
  config["model_type"] = "mistral";
  config["sliding_window"] = 4;
  WriteTiny(config);
  ASSERT_OK_AND_ASSIGN(ModelWeights w, LoadHfModel(dir_));
  EXPECT_FALSE(w.config.attention_bias);
}

TEST_F(HfLoaderTest, NoSafetensorsFilesIsNotFound) {
  WriteConfig(TinyConfig());
  WriteText("pytorch_model.bin", "x");
  EXPECT_THAT(LoadHfModel(dir_), StatusIs(absl::StatusCode::kNotFound,
                                          AllOf(HasSubstr("safetensors"), HasSubstr(dir_))));
}

TEST_F(HfLoaderTest, MalformedSafetensorsFileIsInvalid) {
  WriteConfig(TinyConfig());
  WriteText("model.safetensors", "abc");
  EXPECT_THAT(LoadHfModel(dir_),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("model.safetensors")));
}

TEST_F(HfLoaderTest, MissingTensorIsNamed) {
  std::vector<Tensor> tensors = TinyTensors();
  Remove(&tensors, "model.layers.1.mlp.up_proj.weight");
  WriteTiny(TinyConfig(), tensors);
  EXPECT_THAT(LoadHfModel(dir_), StatusIs(absl::StatusCode::kInvalidArgument,
                                          HasSubstr("'model.layers.1.mlp.up_proj.weight'")));
}

TEST_F(HfLoaderTest, WrongTensorShapeIsNamed) {
  // Checkpoint with 2 KV heads, config saying 1: k_proj is [8, 8], expected [4, 8].
  WriteTiny(TinyConfig(), TinyTensors(/*kv_heads=*/2));
  EXPECT_THAT(LoadHfModel(dir_),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("'model.layers.0.self_attn.k_proj.weight'"),
                             HasSubstr("shape [8, 8]"), HasSubstr("expected [4, 8]"))));
}

TEST_F(HfLoaderTest, LmHeadMissingWhenUntiedIsInvalid) {
  WriteTiny(TinyConfig(), TinyTensors(kKvHeads, false, /*lm_head=*/false));
  EXPECT_THAT(LoadHfModel(dir_),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("lm_head.weight"), HasSubstr("tie_word_embeddings"))));
}

TEST_F(HfLoaderTest, TiedEmbeddingsShareTheEmbedding) {
  Json config = TinyConfig();
  config["tie_word_embeddings"] = true;
  WriteTiny(config, TinyTensors(kKvHeads, false, /*lm_head=*/false));
  ASSERT_OK_AND_ASSIGN(ModelWeights w, LoadHfModel(dir_));
  EXPECT_TRUE(w.config.tied_embeddings);
  EXPECT_EQ(w.classifier, w.token_embedding);
  // An lm_head saved alongside tied embeddings is ignored.
  WriteTiny(config, TinyTensors());
  ASSERT_OK_AND_ASSIGN(ModelWeights w2, LoadHfModel(dir_));
  EXPECT_EQ(w2.classifier, w2.token_embedding);
}

TEST_F(HfLoaderTest, Qwen2LoadsAttentionBiases) {
  Json config = TinyConfig();
  config["model_type"] = "qwen2";
  config["architectures"] = {"Qwen2ForCausalLM"};
  config["use_sliding_window"] = false;
  config["sliding_window"] = 32768;
  const std::vector<Tensor> tensors = TinyTensors(kKvHeads, /*bias=*/true);
  WriteTiny(config, tensors);
  ASSERT_OK_AND_ASSIGN(ModelWeights w, LoadHfModel(dir_));
  EXPECT_TRUE(w.config.attention_bias);
  for (int l = 0; l < kLayers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".self_attn.";
    EXPECT_TRUE(SameFloats(w.layers[l].bq, Find(tensors, p + "q_proj.bias").data));
    EXPECT_TRUE(SameFloats(w.layers[l].bk, Find(tensors, p + "k_proj.bias").data));
    EXPECT_TRUE(SameFloats(w.layers[l].bv, Find(tensors, p + "v_proj.bias").data));
  }

  WriteTiny(config, TinyTensors());  // no biases
  EXPECT_THAT(LoadHfModel(dir_), StatusIs(absl::StatusCode::kInvalidArgument,
                                          HasSubstr("'model.layers.0.self_attn.q_proj.bias'")));
}

TEST_F(HfLoaderTest, LlamaHonoursExplicitAttentionBias) {
  Json config = TinyConfig();
  config["attention_bias"] = true;
  WriteTiny(config, TinyTensors(kKvHeads, /*bias=*/true));
  ASSERT_OK_AND_ASSIGN(ModelWeights w, LoadHfModel(dir_));
  EXPECT_TRUE(w.config.attention_bias);
  EXPECT_NE(w.layers[1].bv, nullptr);
}

TEST_F(HfLoaderTest, Bf16CheckpointLoadsBf16RoundedValues) {
  const std::vector<Tensor> tensors = TinyTensors();
  WriteConfig(TinyConfig());
  WriteMixed(
      "model.safetensors", tensors, [](const Tensor&) { return SafetensorsDType::kBF16; },
      /*misalign=*/false);
  ASSERT_OK_AND_ASSIGN(ModelWeights w, LoadHfModel(dir_));
  EXPECT_GT(w.OwnedBytes(), 0u);
  auto check = [&tensors](const float* got, const std::string& name) {
    const std::vector<float>& orig = Find(tensors, name).data;
    ASSERT_NE(got, nullptr) << name;
    for (size_t i = 0; i < orig.size(); ++i) {
      ASSERT_EQ(got[i], kernels::Bf16ToFloat(kernels::FloatToBf16(orig[i])))
          << name << "[" << i << "]";
    }
  };
  check(w.token_embedding, "model.embed_tokens.weight");
  check(w.final_norm, "model.norm.weight");
  check(w.classifier, "lm_head.weight");
  for (int l = 0; l < kLayers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    const LayerWeights& lw = w.layers[l];
    check(lw.attn_norm, p + "input_layernorm.weight");
    check(lw.wq, p + "self_attn.q_proj.weight");
    check(lw.wk, p + "self_attn.k_proj.weight");
    check(lw.wv, p + "self_attn.v_proj.weight");
    check(lw.wo, p + "self_attn.o_proj.weight");
    check(lw.ffn_norm, p + "post_attention_layernorm.weight");
    check(lw.w1, p + "mlp.gate_proj.weight");
    check(lw.w2, p + "mlp.down_proj.weight");
    check(lw.w3, p + "mlp.up_proj.weight");
  }
  // Rounding actually happened: at least one value differs from its fp32 original.
  EXPECT_FALSE(
      SameFloats(w.layers[0].w1, Find(tensors, "model.layers.0.mlp.gate_proj.weight").data));
}

// Loaded as bf16 (--weights_dtype bf16), a BF16 checkpoint's linear matrices are used in place
// in the mapping, and an F32 one's are rounded straight to bf16: both hold exactly what loading
// fp32 and converting gives, with no fp32 copy of any linear matrix.
TEST_F(HfLoaderTest, Bf16LoadUsesBf16TensorsInPlaceAndNeverWidensLinearLayers) {
  const std::vector<Tensor> tensors = TinyTensors();
  for (SafetensorsDType file_dtype : {SafetensorsDType::kBF16, SafetensorsDType::kF32}) {
    SCOPED_TRACE(SafetensorsDTypeName(file_dtype));
    std::filesystem::remove(dir_ + "/model.safetensors");
    WriteConfig(TinyConfig());
    WriteMixed(
        "model.safetensors", tensors, [&](const Tensor&) { return file_dtype; },
        /*misalign=*/false);
    ASSERT_OK_AND_ASSIGN(ModelWeights direct, LoadHfModel(dir_, kernels::DType::kBF16));
    ASSERT_OK_AND_ASSIGN(ModelWeights converted, LoadHfModel(dir_));
    ASSERT_THAT(ConvertLinearWeights(converted, kernels::DType::kBF16), IsOk());
    EXPECT_EQ(direct.weights_dtype, kernels::DType::kBF16);
    const auto same = [](const uint16_t* a, const uint16_t* b, size_t n) {
      return a != nullptr && b != nullptr && std::memcmp(a, b, n * sizeof(uint16_t)) == 0;
    };
    const ModelConfig& c = direct.config;
    const size_t dim = c.dim, hidden = c.hidden_dim, q = c.q_dim(), kv = c.kv_dim();
    for (int l = 0; l < kLayers; ++l) {
      const LayerWeights& a = direct.layers[l];
      const LayerWeights& b = converted.layers[l];
      EXPECT_EQ(a.wq, nullptr);  // no fp32 linear matrix
      EXPECT_EQ(a.w2, nullptr);
      EXPECT_TRUE(same(a.bf16.wq, b.bf16.wq, q * dim)) << l;
      EXPECT_TRUE(same(a.bf16.wk, b.bf16.wk, kv * dim)) << l;
      EXPECT_TRUE(same(a.bf16.wv, b.bf16.wv, kv * dim)) << l;
      EXPECT_TRUE(same(a.bf16.wo, b.bf16.wo, dim * q)) << l;
      EXPECT_TRUE(same(a.bf16.w1, b.bf16.w1, hidden * dim)) << l;
      EXPECT_TRUE(same(a.bf16.w2, b.bf16.w2, dim * hidden)) << l;
      EXPECT_TRUE(same(a.bf16.w3, b.bf16.w3, hidden * dim)) << l;
    }
    EXPECT_TRUE(same(direct.classifier_bf16, converted.classifier_bf16, c.vocab_size * dim));
    EXPECT_EQ(direct.classifier, nullptr);  // untied lm_head: bf16 only
    // BF16 in the file: the linear matrices are the mapping's bytes, so only the fp32
    // embedding and norms were allocated.
    if (file_dtype == SafetensorsDType::kBF16) {
      EXPECT_EQ(direct.OwnedBytes(),
                (static_cast<size_t>(c.vocab_size) * dim + (2 * kLayers + 1) * dim) * 4);
    }
  }
  EXPECT_THAT(LoadHfModel(dir_, kernels::DType::kF16),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("fp16")));
}

TEST_F(HfLoaderTest, UnalignedF32AndF16TensorsAreConverted) {
  std::vector<Tensor> tensors = TinyTensors();
  // Values exact in fp16 for the norm weights, which are stored as F16.
  for (Tensor& t : tensors) {
    if (t.name.ends_with("norm.weight")) {
      for (size_t i = 0; i < t.data.size(); ++i) t.data[i] = 0.25f * static_cast<float>(i) - 1.0f;
    }
  }
  WriteConfig(TinyConfig());
  WriteMixed(
      "model.safetensors", tensors,
      [](const Tensor& t) {
        return t.name.ends_with("norm.weight") ? SafetensorsDType::kF16 : SafetensorsDType::kF32;
      },
      /*misalign=*/true);
  ASSERT_OK_AND_ASSIGN(ModelWeights w, LoadHfModel(dir_));
  EXPECT_GT(w.OwnedBytes(), 0u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(w.token_embedding) % alignof(float), 0u);
  EXPECT_TRUE(SameFloats(w.token_embedding, Find(tensors, "model.embed_tokens.weight").data));
  EXPECT_TRUE(SameFloats(w.final_norm, Find(tensors, "model.norm.weight").data));
  EXPECT_TRUE(SameFloats(w.layers[1].ffn_norm,
                         Find(tensors, "model.layers.1.post_attention_layernorm.weight").data));
  EXPECT_TRUE(
      SameFloats(w.layers[1].wo, Find(tensors, "model.layers.1.self_attn.o_proj.weight").data));
}

}  // namespace
}  // namespace dapq::worker
