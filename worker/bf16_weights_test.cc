// File: worker/bf16_weights_test.cc
// bf16 linear-layer weights (ConvertLinearWeights) against the fp32 engine, teacher-forced over
// the fp32 greedy continuations of several prompts: top-1 agreement at least 99% and mean
// KL(fp32 || bf16) at most 1e-2 (issue #12's bar), on stories260K and a synthetic GQA model,
// TP 1 and 2; the conversion's bookkeeping and flag parsing.
#include <cmath>
#include <cstdio>
#include <memory>
#include <vector>

#include "gtest/gtest.h"
#include "tests/util/status_matchers.h"
#include "tests/util/stories_model.h"
#include "tests/util/test_paths.h"
#include "worker/engine.h"
#include "worker/llama2c_loader.h"
#include "worker/synthetic_model.h"
#include "worker/tokenizer.h"

namespace dapq::worker {
namespace {

using ::dapq::testing::StatusIs;

struct Agreement {
  double top1 = 0;     // share of positions whose argmax agrees
  double mean_kl = 0;  // nats
  int positions = 0;
};

std::vector<double> LogSoftmax(const float* x, int n) {
  double mx = x[0];
  for (int i = 1; i < n; ++i) mx = std::max(mx, static_cast<double>(x[i]));
  double sum = 0;
  for (int i = 0; i < n; ++i) sum += std::exp(x[i] - mx);
  std::vector<double> out(n);
  for (int i = 0; i < n; ++i) out[i] = x[i] - mx - std::log(sum);
  return out;
}

// Teacher-forces prompt + the fp32 engine's greedy continuation through both engines.
Agreement Compare(std::shared_ptr<const ModelWeights> fp32,
                  std::shared_ptr<const ModelWeights> bf16,
                  const std::vector<std::vector<int>>& prompts, int tp) {
  EngineOptions o;
  o.tp = tp;
  o.prefix_cache = false;
  auto reference = *Engine::Create(fp32, o);
  auto candidate = *Engine::Create(bf16, o);
  const int vocab = fp32->config.vocab_size;
  Agreement a;
  int agree = 0;
  double kl = 0;
  for (const std::vector<int>& prompt : prompts) {
    GenerateOptions g;
    g.max_new_tokens = 32;
    g.stop_at_stop_tokens = false;
    auto greedy = reference->Generate(prompt, g);
    EXPECT_TRUE(greedy.ok()) << greedy.status();
    std::vector<int> text = prompt;
    text.insert(text.end(), greedy->tokens.begin(), greedy->tokens.end());
    std::vector<float> lr, lc;
    auto sr = reference->NewSequence();
    auto sc = candidate->NewSequence();
    EXPECT_TRUE(reference->PrefillAllLogits(*sr, text, &lr).ok());
    EXPECT_TRUE(candidate->PrefillAllLogits(*sc, text, &lc).ok());
    for (size_t t = prompt.size() - 1; t < text.size(); ++t) {
      const float* r = &lr[t * vocab];
      const float* c = &lc[t * vocab];
      const std::vector<double> p = LogSoftmax(r, vocab), q = LogSoftmax(c, vocab);
      double d = 0;
      for (int i = 0; i < vocab; ++i) d += std::exp(p[i]) * (p[i] - q[i]);
      kl += d;
      agree += std::max_element(r, r + vocab) - r == std::max_element(c, c + vocab) - c;
      ++a.positions;
    }
  }
  a.top1 = static_cast<double>(agree) / a.positions;
  a.mean_kl = kl / a.positions;
  return a;
}

std::shared_ptr<const ModelWeights> Bf16Copy(ModelWeights weights) {
  EXPECT_TRUE(ConvertLinearWeights(weights, kernels::DType::kBF16).ok());
  return std::make_shared<const ModelWeights>(std::move(weights));
}

class Bf16WeightsTest : public ::testing::TestWithParam<int> {};

TEST_P(Bf16WeightsTest, Stories260KAgreesWithFp32) {
  auto tok = Tokenizer::Load(dapq::testing::Tok512Path(), 512);
  ASSERT_TRUE(tok.ok()) << tok.status();
  std::vector<std::vector<int>> prompts;
  for (const char* text :
       {"Once upon a time", "Lily saw a big red ball in the park", "The dog ran to the lake and",
        "One day, Tom went to the zoo", "The sun was hot and the children", "She was happy because",
        "A little bird sat on a tree", "Max the cat wanted to play"}) {
    prompts.push_back(tok->Encode(text, true, false));
  }
  auto w = LoadLlama2cModel(dapq::testing::Stories260KPath());
  ASSERT_TRUE(w.ok()) << w.status();
  const Agreement a =
      Compare(dapq::testing::SharedStories260K(), Bf16Copy(*std::move(w)), prompts, GetParam());
  EXPECT_GE(a.top1, 0.99) << a.positions << " positions";
  EXPECT_LE(a.mean_kl, 1e-2);
  std::printf("stories260K bf16 vs fp32, tp %d: top-1 %.4f, mean KL %.2e over %d positions\n",
              GetParam(), a.top1, a.mean_kl, a.positions);
}

TEST_P(Bf16WeightsTest, SyntheticGqaAgreesWithFp32) {
  auto fp32 = MakeSyntheticModel("synthetic:tiny-gqa");
  auto bf16 = MakeSyntheticModel("synthetic:tiny-gqa");
  ASSERT_TRUE(fp32.ok() && bf16.ok());
  // Seeded prompts: 12 of 8 tokens, each continued by 32 greedy tokens (400 positions).
  std::vector<std::vector<int>> prompts;
  uint64_t x = 12;
  for (int p = 0; p < 12; ++p) {
    std::vector<int> prompt = {1};
    for (int t = 0; t < 7; ++t) {
      x = x * 6364136223846793005ull + 1442695040888963407ull;
      prompt.push_back(3 + static_cast<int>((x >> 33) % 300));
    }
    prompts.push_back(prompt);
  }
  const Agreement a = Compare(std::make_shared<const ModelWeights>(*std::move(fp32)),
                              Bf16Copy(*std::move(bf16)), prompts, GetParam());
  EXPECT_GE(a.top1, 0.99) << a.positions << " positions";
  EXPECT_LE(a.mean_kl, 1e-2);
  std::printf("synthetic:tiny-gqa bf16 vs fp32, tp %d: top-1 %.4f, mean KL %.2e over %d\n",
              GetParam(), a.top1, a.mean_kl, a.positions);
}

INSTANTIATE_TEST_SUITE_P(Tp, Bf16WeightsTest, ::testing::Values(1, 2));

TEST(ConvertLinearWeightsTest, SetsEveryMatrixAndParsesTheFlag) {
  auto w = MakeSyntheticModel("synthetic:tiny-gqa");
  ASSERT_TRUE(w.ok()) << w.status();
  const size_t before = w->OwnedBytes();
  ASSERT_TRUE(ConvertLinearWeights(*w, kernels::DType::kBF16).ok());
  EXPECT_EQ(w->weights_dtype, kernels::DType::kBF16);
  EXPECT_NE(w->layers[0].bf16.w2, nullptr);
  EXPECT_EQ(kernels::Bf16ToFloat(w->classifier_bf16[3]),
            kernels::Bf16ToFloat(kernels::FloatToBf16(w->classifier[3])));
  EXPECT_GT(w->OwnedBytes(), before);
  EXPECT_TRUE(ConvertLinearWeights(*w, kernels::DType::kBF16).ok());  // already
  EXPECT_THAT(ConvertLinearWeights(*w, kernels::DType::kF32),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_EQ(*ParseWeightsDtype("bf16"), kernels::DType::kBF16);
  EXPECT_THAT(ParseWeightsDtype("fp8"),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("weights_dtype")));
}

}  // namespace
}  // namespace dapq::worker
