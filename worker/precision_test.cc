// File: worker/precision_test.cc
// Reduced precision against the fp32 engine: bf16 linear-layer weights (ConvertLinearWeights),
// a bf16 or fp16 KV cache (EngineOptions::kv_dtype), and both together, teacher-forced over the
// fp32 greedy continuations of several prompts: top-1 agreement at least 99% and mean
// KL(fp32 || candidate) at most 1e-2 (issue #12's bar), on stories260K and a synthetic GQA
// model, TP 1 and 2; a 2-byte KV cache holds half the bytes; the conversion's bookkeeping and
// flag parsing.
#include <cmath>
#include <cstdio>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
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

// Teacher-forces prompt + the fp32 engine's greedy continuation through both engines (the
// candidate: `bf16` weights, or fp32 ones with a KV cache of `kv_dtype`).
Agreement Compare(std::shared_ptr<const ModelWeights> fp32,
                  std::shared_ptr<const ModelWeights> bf16,
                  const std::vector<std::vector<int>>& prompts, int tp,
                  kernels::DType kv_dtype = kernels::DType::kF32) {
  EngineOptions o;
  o.tp = tp;
  o.prefix_cache = false;
  auto reference = *Engine::Create(fp32, o);
  o.kv_dtype = kv_dtype;
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

std::vector<std::vector<int>> StoriesPrompts() {
  auto tok = Tokenizer::Load(dapq::testing::Tok512Path(), 512);
  EXPECT_TRUE(tok.ok()) << tok.status();
  std::vector<std::vector<int>> prompts;
  for (const char* text :
       {"Once upon a time", "Lily saw a big red ball in the park", "The dog ran to the lake and",
        "One day, Tom went to the zoo", "The sun was hot and the children", "She was happy because",
        "A little bird sat on a tree", "Max the cat wanted to play",
        // A long one: its prefill multiplies more than 64 rows at once (oneDNN's bf16 matmul
        // with bf16 weights rather than our small-m kernel).
        dapq::testing::kStoryDocument}) {
    prompts.push_back(tok->Encode(text, true, false));
  }
  return prompts;
}

// Seeded prompts: 48 of 8 tokens, each continued by 32 greedy tokens (1584 positions: the random
// model's logits are flat, so near-ties make a 1% bar noisy on fewer).
std::vector<std::vector<int>> SyntheticPrompts() {
  std::vector<std::vector<int>> prompts;
  uint64_t x = 12;
  for (int p = 0; p < 48; ++p) {
    std::vector<int> prompt = {1};
    for (int t = 0; t < 7; ++t) {
      x = x * 6364136223846793005ull + 1442695040888963407ull;
      prompt.push_back(3 + static_cast<int>((x >> 33) % 300));
    }
    prompts.push_back(prompt);
  }
  return prompts;
}

// (tp, bf16 weights, KV dtype).
struct Precision {
  int tp;
  bool bf16_weights;
  kernels::DType kv_dtype;
};

std::string Describe(const Precision& p) {
  return absl::StrCat("weights ", p.bf16_weights ? "bf16" : "fp32", ", KV ",
                      kernels::DTypeName(p.kv_dtype), ", tp ", p.tp);
}

class PrecisionTest : public ::testing::TestWithParam<Precision> {};

TEST_P(PrecisionTest, Stories260KAgreesWithFp32) {
  const Precision& c = GetParam();
  std::shared_ptr<const ModelWeights> candidate = dapq::testing::SharedStories260K();
  if (c.bf16_weights) {
    auto w = LoadLlama2cModel(dapq::testing::Stories260KPath());
    ASSERT_TRUE(w.ok()) << w.status();
    candidate = Bf16Copy(*std::move(w));
  }
  const Agreement a =
      Compare(dapq::testing::SharedStories260K(), candidate, StoriesPrompts(), c.tp, c.kv_dtype);
  EXPECT_GE(a.top1, 0.99) << a.positions << " positions";
  EXPECT_LE(a.mean_kl, 1e-2);
  std::printf("stories260K %s vs fp32: top-1 %.4f, mean KL %.2e over %d positions\n",
              Describe(c).c_str(), a.top1, a.mean_kl, a.positions);
}

TEST_P(PrecisionTest, SyntheticGqaAgreesWithFp32) {
  const Precision& c = GetParam();
  auto fp32 = MakeSyntheticModel("synthetic:tiny-gqa");
  auto other = MakeSyntheticModel("synthetic:tiny-gqa");
  ASSERT_TRUE(fp32.ok() && other.ok());
  const auto candidate = c.bf16_weights ? Bf16Copy(*std::move(other))
                                        : std::make_shared<const ModelWeights>(*std::move(other));
  const Agreement a = Compare(std::make_shared<const ModelWeights>(*std::move(fp32)), candidate,
                              SyntheticPrompts(), c.tp, c.kv_dtype);
  EXPECT_GE(a.top1, 0.99) << a.positions << " positions";
  EXPECT_LE(a.mean_kl, 1e-2);
  std::printf("synthetic:tiny-gqa %s vs fp32: top-1 %.4f, mean KL %.2e over %d\n",
              Describe(c).c_str(), a.top1, a.mean_kl, a.positions);
}

INSTANTIATE_TEST_SUITE_P(Modes, PrecisionTest,
                         ::testing::Values(Precision{1, true, kernels::DType::kF32},
                                           Precision{2, true, kernels::DType::kF32},
                                           Precision{1, false, kernels::DType::kBF16},
                                           Precision{2, false, kernels::DType::kBF16},
                                           Precision{1, false, kernels::DType::kF16},
                                           Precision{1, true, kernels::DType::kBF16}),
                         [](const ::testing::TestParamInfo<Precision>& info) {
                           return absl::StrCat(
                               info.param.bf16_weights ? "Bf16Weights" : "Fp32Weights",
                               kernels::DTypeName(info.param.kv_dtype), "KvTp", info.param.tp);
                         });

// A 2-byte KV cache holds half the bytes of fp32 for the same sequence (session_store_test.cc
// restores such caches through the KV store bit for bit).
TEST(KvDtypeTest, HalvesTheCache) {
  auto model = dapq::testing::SharedStories260K();
  const std::vector<int> prompt = StoriesPrompts()[1];
  EngineOptions o;
  o.prefix_cache = false;
  auto fp32 = *Engine::Create(model, o);
  for (kernels::DType dtype : {kernels::DType::kBF16, kernels::DType::kF16}) {
    SCOPED_TRACE(kernels::DTypeName(dtype));
    o.kv_dtype = dtype;
    auto engine = *Engine::Create(model, o);
    auto a = engine->NewSequence();
    auto b = fp32->NewSequence();
    std::vector<float> la, lb;
    ASSERT_TRUE(engine->Prefill(*a, prompt, &la).ok());
    ASSERT_TRUE(fp32->Prefill(*b, prompt, &lb).ok());
    EXPECT_EQ(a->kv_used_bytes() * 2, b->kv_used_bytes());
    EXPECT_EQ(a->kv_allocated_bytes() * 2, b->kv_allocated_bytes());
  }
}

TEST(ConvertLinearWeightsTest, SetsEveryMatrixAndParsesTheFlag) {
  auto w = MakeSyntheticModel("synthetic:tiny-gqa");
  ASSERT_TRUE(w.ok()) << w.status();
  const size_t before = w->OwnedBytes();
  const float classifier3 = w->classifier[3];
  ASSERT_FALSE(w->config.tied_embeddings);
  ASSERT_TRUE(ConvertLinearWeights(*w, kernels::DType::kBF16).ok());
  EXPECT_EQ(w->weights_dtype, kernels::DType::kBF16);
  EXPECT_NE(w->layers[0].bf16.w2, nullptr);
  EXPECT_EQ(kernels::Bf16ToFloat(w->classifier_bf16[3]),
            kernels::Bf16ToFloat(kernels::FloatToBf16(classifier3)));
  // The fp32 matrices are gone, and so is their memory: every linear matrix and the (untied)
  // classifier now takes 2 bytes per weight instead of 4.
  EXPECT_EQ(w->layers[0].w2, nullptr);
  EXPECT_EQ(w->classifier, nullptr);
  const ModelConfig& c = w->config;
  const size_t matrices =
      static_cast<size_t>(c.n_layers) *
          (2 * c.dim * c.q_dim() + 2 * c.dim * c.kv_dim() + 3 * c.dim * c.hidden_dim) +
      static_cast<size_t>(c.vocab_size) * c.dim;
  EXPECT_EQ(before - w->OwnedBytes(), 2 * matrices);
  EXPECT_TRUE(ConvertLinearWeights(*w, kernels::DType::kBF16).ok());  // already
  EXPECT_THAT(ConvertLinearWeights(*w, kernels::DType::kF32),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_EQ(*ParseWeightsDtype("bf16"), kernels::DType::kBF16);
  EXPECT_THAT(ParseWeightsDtype("fp8"),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("weights_dtype")));
  EXPECT_EQ(*ParseKvDtype("fp16"), kernels::DType::kF16);
  EXPECT_THAT(ParseKvDtype("int8"),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("kv_dtype")));
}

}  // namespace
}  // namespace dapq::worker
