// File: worker/hf_converter_test.cc
// Tests for ConvertToHf: stories260K (llama2.c, interleaved RoPE) -> HF directory -> LoadHfModel
// preserves the config and every weight, with wq/wk rows permuted to the half-split layout;
// half-split models are copied as is; untied heads, q/k/v biases and Llama-3 scaling survive.
#include "worker/hf_converter.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/util/status_matchers.h"
#include "tests/util/test_paths.h"
#include "worker/hf_loader.h"
#include "worker/llama2c_loader.h"
#include "worker/safetensors.h"

namespace dapq::worker {
namespace {

using ::dapq::testing::IsOk;
using ::dapq::testing::StatusIs;
using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::Not;

constexpr char kStoriesPath[] = "../shared/models/stories260K.bin";

bool SameBytes(const float* a, const float* b, size_t count) {
  return a != nullptr && b != nullptr && std::memcmp(a, b, count * sizeof(float)) == 0;
}

// A ModelWeights that borrows every pointer of `src` (which must outlive it).
ModelWeights Borrow(const ModelWeights& src) {
  ModelWeights w;
  w.config = src.config;
  w.token_embedding = src.token_embedding;
  w.final_norm = src.final_norm;
  w.classifier = src.classifier;
  w.layers = src.layers;
  return w;
}

// Checks that `got` ([heads * head_dim, cols]) is `orig` with rows permuted interleaved ->
// half-split: row h*hd + i = orig row h*hd + 2i, row h*hd + hd/2 + i = orig row h*hd + 2i + 1.
void ExpectHalfSplitPermutation(const float* got, const float* orig, int heads, int head_dim,
                                int cols, const std::string& what) {
  ASSERT_NE(got, nullptr) << what;
  const int half = head_dim / 2;
  for (int h = 0; h < heads; ++h) {
    for (long i = 0; i < half; ++i) {
      const long base = static_cast<long>(h) * head_dim;
      EXPECT_TRUE(SameBytes(got + (base + i) * cols, orig + (base + 2 * i) * cols, cols))
          << what << " head " << h << " i " << i << " (even)";
      EXPECT_TRUE(SameBytes(got + (base + half + i) * cols, orig + (base + 2 * i + 1) * cols, cols))
          << what << " head " << h << " i " << i << " (odd)";
    }
  }
  EXPECT_FALSE(SameBytes(got, orig, static_cast<size_t>(heads) * head_dim * cols))
      << what << " was not permuted";
}

nlohmann::json ReadJson(const std::string& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

class HfConverterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ =
        dapq::testing::MakeTempDir(std::string("hf_converter_test_") +
                                   ::testing::UnitTest::GetInstance()->current_test_info()->name());
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string dir_;
};

TEST_F(HfConverterTest, Stories260KRoundTripsThroughHf) {
  ASSERT_OK_AND_ASSIGN(ModelWeights src, LoadLlama2cModel(kStoriesPath));
  ASSERT_EQ(src.config.rope.layout, kernels::RopeLayout::kInterleaved);
  const std::string out = dir_ + "/nested/stories260K-hf";  // parents are created
  ASSERT_THAT(ConvertToHf(src, out), IsOk());
  ASSERT_OK_AND_ASSIGN(ModelWeights hf, LoadHfModel(out));

  const ModelConfig& a = src.config;
  const ModelConfig& b = hf.config;
  EXPECT_EQ(b.name, "stories260K-hf");
  EXPECT_EQ(b.dim, a.dim);
  EXPECT_EQ(b.hidden_dim, a.hidden_dim);
  EXPECT_EQ(b.n_layers, a.n_layers);
  EXPECT_EQ(b.n_heads, a.n_heads);
  EXPECT_EQ(b.n_kv_heads, a.n_kv_heads);
  EXPECT_EQ(b.head_dim, a.head_dim);
  EXPECT_EQ(b.vocab_size, a.vocab_size);
  EXPECT_EQ(b.max_seq_len, a.max_seq_len);
  EXPECT_EQ(b.norm_eps, a.norm_eps);
  EXPECT_EQ(b.rope.head_dim, a.rope.head_dim);
  EXPECT_EQ(b.rope.theta, a.rope.theta);
  EXPECT_EQ(b.rope.scaling.factor, a.rope.scaling.factor);
  EXPECT_EQ(b.rope.layout, kernels::RopeLayout::kHalfSplit);
  EXPECT_EQ(b.tied_embeddings, a.tied_embeddings);
  EXPECT_TRUE(b.tied_embeddings);
  EXPECT_EQ(b.attention_bias, a.attention_bias);
  EXPECT_EQ(b.bos_token_id, a.bos_token_id);
  EXPECT_EQ(b.stop_token_ids, a.stop_token_ids);
  EXPECT_EQ(hf.OwnedBytes(), 0u);  // F32 written aligned: loaded without copies

  const size_t dim = a.dim, hidden = a.hidden_dim, kv_dim = a.kv_dim(), q_dim = a.q_dim();
  EXPECT_TRUE(SameBytes(hf.token_embedding, src.token_embedding, a.vocab_size * dim));
  EXPECT_TRUE(SameBytes(hf.final_norm, src.final_norm, dim));
  EXPECT_EQ(hf.classifier, hf.token_embedding);
  for (int l = 0; l < a.n_layers; ++l) {
    SCOPED_TRACE("layer " + std::to_string(l));
    const LayerWeights& s = src.layers[l];
    const LayerWeights& h = hf.layers[l];
    EXPECT_TRUE(SameBytes(h.attn_norm, s.attn_norm, dim));
    EXPECT_TRUE(SameBytes(h.ffn_norm, s.ffn_norm, dim));
    EXPECT_TRUE(SameBytes(h.wv, s.wv, kv_dim * dim));
    EXPECT_TRUE(SameBytes(h.wo, s.wo, dim * q_dim));
    EXPECT_TRUE(SameBytes(h.w1, s.w1, hidden * dim));
    EXPECT_TRUE(SameBytes(h.w2, s.w2, dim * hidden));
    EXPECT_TRUE(SameBytes(h.w3, s.w3, hidden * dim));
    ExpectHalfSplitPermutation(h.wq, s.wq, a.n_heads, a.head_dim, a.dim, "wq");
    ExpectHalfSplitPermutation(h.wk, s.wk, a.n_kv_heads, a.head_dim, a.dim, "wk");
    EXPECT_EQ(h.bq, nullptr);
  }

  const nlohmann::json config = ReadJson(out + "/config.json");
  EXPECT_EQ(config["model_type"], "llama");
  EXPECT_EQ(config["architectures"], nlohmann::json::array({"LlamaForCausalLM"}));
  EXPECT_EQ(config["torch_dtype"], "float32");
  EXPECT_EQ(config["tie_word_embeddings"], true);
  EXPECT_EQ(config["eos_token_id"], nlohmann::json::array({1, 2}));
  EXPECT_EQ(config["rms_norm_eps"].get<double>(), 1e-5);  // shortest form, not 9.99999974e-06
  EXPECT_EQ(config["rope_theta"].get<double>(), 10000.0);
  EXPECT_TRUE(config["rope_scaling"].is_null());
  ASSERT_OK_AND_ASSIGN(SafetensorsFile st, SafetensorsFile::Open(out + "/model.safetensors"));
  EXPECT_THAT(st.Names(), Not(Contains("lm_head.weight")));
  EXPECT_EQ(st.Names().size(), 2u + 9u * a.n_layers);
  std::vector<std::string> files;  // no temporary files left behind
  for (const auto& e : std::filesystem::directory_iterator(out)) {
    files.push_back(e.path().filename().string());
  }
  std::sort(files.begin(), files.end());
  EXPECT_THAT(files, ElementsAre("config.json", "model.safetensors"));
}

TEST_F(HfConverterTest, HalfSplitModelIsCopiedAsIs) {
  ASSERT_OK_AND_ASSIGN(ModelWeights src, LoadLlama2cModel(kStoriesPath));
  ASSERT_THAT(ConvertToHf(src, dir_ + "/first"), IsOk());
  ASSERT_OK_AND_ASSIGN(ModelWeights first, LoadHfModel(dir_ + "/first"));
  ASSERT_THAT(ConvertToHf(first, dir_ + "/second"), IsOk());
  ASSERT_OK_AND_ASSIGN(ModelWeights second, LoadHfModel(dir_ + "/second"));
  const ModelConfig& c = first.config;
  for (int l = 0; l < c.n_layers; ++l) {
    EXPECT_TRUE(
        SameBytes(second.layers[l].wq, first.layers[l].wq, static_cast<size_t>(c.q_dim()) * c.dim))
        << l;
    EXPECT_TRUE(
        SameBytes(second.layers[l].wk, first.layers[l].wk, static_cast<size_t>(c.kv_dim()) * c.dim))
        << l;
  }
  // Converting into an existing directory replaces its files.
  ASSERT_THAT(ConvertToHf(first, dir_ + "/second"), IsOk());
}

TEST_F(HfConverterTest, UntiedClassifierIsWrittenAsLmHead) {
  ASSERT_OK_AND_ASSIGN(ModelWeights src, LoadLlama2cModel(kStoriesPath));
  ModelWeights untied = Borrow(src);
  const size_t n = static_cast<size_t>(src.config.vocab_size) * src.config.dim;
  float* head = untied.AllocateOwned(n);
  for (size_t i = 0; i < n; ++i) head[i] = 2.0f * src.token_embedding[i] + 0.5f;
  untied.classifier = head;
  untied.config.tied_embeddings = false;
  ASSERT_THAT(ConvertToHf(untied, dir_ + "/untied"), IsOk());
  ASSERT_OK_AND_ASSIGN(ModelWeights hf, LoadHfModel(dir_ + "/untied"));
  EXPECT_FALSE(hf.config.tied_embeddings);
  EXPECT_NE(hf.classifier, hf.token_embedding);
  EXPECT_TRUE(SameBytes(hf.classifier, head, n));
  EXPECT_EQ(ReadJson(dir_ + "/untied/config.json")["tie_word_embeddings"], false);
}

TEST_F(HfConverterTest, QkvBiasesArePermutedAndWrittenAsQwen2) {
  ASSERT_OK_AND_ASSIGN(ModelWeights src, LoadLlama2cModel(kStoriesPath));
  ModelWeights biased = Borrow(src);
  const ModelConfig& c = src.config;
  biased.config.attention_bias = true;
  for (LayerWeights& lw : biased.layers) {
    float* bq = biased.AllocateOwned(c.q_dim());
    float* bk = biased.AllocateOwned(c.kv_dim());
    float* bv = biased.AllocateOwned(c.kv_dim());
    for (int i = 0; i < c.q_dim(); ++i) bq[i] = 0.01f * i;
    for (int i = 0; i < c.kv_dim(); ++i) bk[i] = -0.02f * i;
    for (int i = 0; i < c.kv_dim(); ++i) bv[i] = 0.03f * i + 1.0f;
    lw.bq = bq;
    lw.bk = bk;
    lw.bv = bv;
  }
  ASSERT_THAT(ConvertToHf(biased, dir_ + "/biased"), IsOk());
  EXPECT_EQ(ReadJson(dir_ + "/biased/config.json")["model_type"], "qwen2");
  ASSERT_OK_AND_ASSIGN(ModelWeights hf, LoadHfModel(dir_ + "/biased"));
  EXPECT_TRUE(hf.config.attention_bias);
  for (int l = 0; l < c.n_layers; ++l) {
    SCOPED_TRACE("layer " + std::to_string(l));
    ExpectHalfSplitPermutation(hf.layers[l].bq, biased.layers[l].bq, c.n_heads, c.head_dim, 1,
                               "bq");
    ExpectHalfSplitPermutation(hf.layers[l].bk, biased.layers[l].bk, c.n_kv_heads, c.head_dim, 1,
                               "bk");
    EXPECT_TRUE(SameBytes(hf.layers[l].bv, biased.layers[l].bv, c.kv_dim()));
    ExpectHalfSplitPermutation(hf.layers[l].wq, src.layers[l].wq, c.n_heads, c.head_dim, c.dim,
                               "wq");
  }
}

TEST_F(HfConverterTest, Llama3RopeScalingAndStopTokensArePreserved) {
  ASSERT_OK_AND_ASSIGN(ModelWeights src, LoadLlama2cModel(kStoriesPath));
  ModelWeights scaled = Borrow(src);
  scaled.config.rope.theta = 500000.0f;
  scaled.config.rope.scaling = {8.0f, 1.0f, 4.0f, 64};
  scaled.config.norm_eps = 1e-6f;
  scaled.config.stop_token_ids = {2};
  ASSERT_THAT(ConvertToHf(scaled, dir_ + "/scaled"), IsOk());
  ASSERT_OK_AND_ASSIGN(ModelWeights hf, LoadHfModel(dir_ + "/scaled"));
  EXPECT_EQ(hf.config.rope.theta, 500000.0f);
  EXPECT_EQ(hf.config.rope.scaling.factor, 8.0f);
  EXPECT_EQ(hf.config.rope.scaling.low_freq_factor, 1.0f);
  EXPECT_EQ(hf.config.rope.scaling.high_freq_factor, 4.0f);
  EXPECT_EQ(hf.config.rope.scaling.original_max_position_embeddings, 64);
  EXPECT_EQ(hf.config.norm_eps, 1e-6f);
  EXPECT_THAT(hf.config.stop_token_ids, ElementsAre(2));
  EXPECT_EQ(ReadJson(dir_ + "/scaled/config.json")["rope_scaling"]["rope_type"], "llama3");
}

TEST_F(HfConverterTest, IncompleteModelIsRejected) {
  ModelWeights empty;
  EXPECT_THAT(ConvertToHf(empty, dir_ + "/empty"), StatusIs(absl::StatusCode::kInvalidArgument));
  ASSERT_OK_AND_ASSIGN(ModelWeights src, LoadLlama2cModel(kStoriesPath));
  ModelWeights broken = Borrow(src);
  broken.layers[2].w2 = nullptr;
  EXPECT_THAT(ConvertToHf(broken, dir_ + "/broken"),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("layer 2")));
}

TEST_F(HfConverterTest, UncreatableOutputDirectoryIsAnError) {
  ASSERT_OK_AND_ASSIGN(ModelWeights src, LoadLlama2cModel(kStoriesPath));
  std::ofstream(dir_ + "/file") << "x";
  const absl::Status s = ConvertToHf(src, dir_ + "/file/sub");
  EXPECT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.message()), ::testing::HasSubstr(dir_ + "/file/sub"));
}

}  // namespace
}  // namespace dapq::worker
