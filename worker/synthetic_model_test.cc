// File: worker/synthetic_model_test.cc
// Synthetic model specs: shapes, layer overrides, seeds, determinism, bad specs.
#include "worker/synthetic_model.h"

#include <cstring>

#include "gtest/gtest.h"
#include "tests/util/status_matchers.h"
#include "worker/model_loader.h"

namespace dapq::worker {
namespace {
using ::dapq::testing::StatusIs;
using ::testing::HasSubstr;

TEST(SyntheticModelTest, Llama3ShapesWithLayerOverride) {
  ASSERT_OK_AND_ASSIGN(ModelConfig c, SyntheticModelConfig("synthetic:llama3-8b-2l"));
  EXPECT_EQ(c.dim, 4096);
  EXPECT_EQ(c.hidden_dim, 14336);
  EXPECT_EQ(c.n_layers, 2);
  EXPECT_EQ(c.n_heads, 32);
  EXPECT_EQ(c.n_kv_heads, 8);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.vocab_size, 128256);
  EXPECT_FLOAT_EQ(c.rope.theta, 500000.0f);
  EXPECT_FLOAT_EQ(c.rope.scaling.factor, 8.0f);
  EXPECT_EQ(c.rope.layout, kernels::RopeLayout::kHalfSplit);
  ASSERT_OK_AND_ASSIGN(ModelConfig full, SyntheticModelConfig("synthetic:llama3-8b"));
  EXPECT_EQ(full.n_layers, 32);
}

TEST(SyntheticModelTest, SameSeedSameWeightsOtherSeedDiffers) {
  ASSERT_OK_AND_ASSIGN(ModelWeights a, LoadModel("synthetic:tiny-gqa"));
  ASSERT_OK_AND_ASSIGN(ModelWeights b, MakeSyntheticModel("synthetic:tiny-gqa@1234"));
  ASSERT_OK_AND_ASSIGN(ModelWeights c, MakeSyntheticModel("synthetic:tiny-gqa@5"));
  const size_t n = static_cast<size_t>(a.config.q_dim()) * a.config.dim;
  EXPECT_EQ(std::memcmp(a.layers[1].wq, b.layers[1].wq, n * sizeof(float)), 0);
  EXPECT_NE(std::memcmp(a.layers[1].wq, c.layers[1].wq, n * sizeof(float)), 0);
  // Variance ~ 1 / fan_in.
  double sq = 0;
  for (size_t i = 0; i < n; ++i) sq += a.layers[1].wq[i] * a.layers[1].wq[i];
  EXPECT_NEAR(sq / n, 1.0 / a.config.dim, 0.2 / a.config.dim);
}

TEST(SyntheticModelTest, BadSpecsAreRejected) {
  EXPECT_THAT(SyntheticModelConfig("synthetic:gpt5"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("llama3-8b")));
  EXPECT_THAT(SyntheticModelConfig("synthetic:llama3-8b-0l"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("layer count")));
  EXPECT_THAT(SyntheticModelConfig("synthetic:llama3-8b-xl"),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(SyntheticModelConfig("synthetic:tiny-gqa@abc"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("seed")));
  EXPECT_THAT(LoadModel(""), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(LoadModel("/nonexistent/model"), StatusIs(absl::StatusCode::kNotFound));
}

}  // namespace
}  // namespace dapq::worker
