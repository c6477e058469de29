// File: worker/engine_test.cc
// The engine against the reference outputs of stories260K (../shared/models/README.md), and
// engine-level behaviour: explicit positions, chunked prefill, context limits, bad options.
// Logit tolerances: tests/util/tolerance.h.
#include "worker/engine.h"

#include <cmath>
#include <memory>

#include "gtest/gtest.h"
#include "tests/util/status_matchers.h"
#include "tests/util/test_paths.h"
#include "tests/util/tolerance.h"
#include "worker/llama2c_loader.h"
#include "worker/synthetic_model.h"
#include "worker/tokenizer.h"

namespace dapq::worker {
namespace {
using ::dapq::testing::AllClose;
using ::dapq::testing::DecoderReductionLength;
using ::dapq::testing::Fp32RopeTolerance;
using ::dapq::testing::Fp32Tolerance;
using ::dapq::testing::MaxAbs;
using ::dapq::testing::StatusIs;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;

std::shared_ptr<const ModelWeights> Stories() {
  auto w = LoadLlama2cModel(dapq::testing::Stories260KPath());
  EXPECT_TRUE(w.ok()) << w.status();
  return std::make_shared<const ModelWeights>(*std::move(w));
}

std::unique_ptr<Engine> MakeEngine(std::shared_ptr<const ModelWeights> m, int tp = 1,
                                   int chunk = 1024) {
  EngineOptions o;
  o.tp = tp;
  o.prefill_chunk = chunk;
  auto e = Engine::Create(std::move(m), o);
  EXPECT_TRUE(e.ok()) << e.status();
  return *std::move(e);
}

constexpr int kReferenceGreedyFromBos[] = {403, 407, 261, 378, 432, 383, 286, 261, 376, 298,
                                           315, 421, 395, 317, 426, 338, 401, 396, 267, 337};

TEST(EngineReferenceTest, PositionZeroLogitsMatchReference) {
  auto model = Stories();
  auto engine = MakeEngine(model);
  auto seq = engine->NewSequence();
  std::vector<float> logits;
  const int bos = 1;
  ASSERT_THAT(engine->Prefill(*seq, std::span<const int>(&bos, 1), &logits), dapq::testing::IsOk());
  ASSERT_EQ(logits.size(), 512u);
  // llama2.c's fp32 logits (another summation order), printed to 5 decimals: rounding along the
  // forward pass plus half a unit of the last printed digit.
  const double tol =
      Fp32Tolerance(MaxAbs(logits), DecoderReductionLength(model->config, 1)) + 0.5e-5;
  EXPECT_TRUE(AllClose(std::span(logits).first(4),
                       std::vector<float>{-6.22291f, 8.40434f, -6.22374f, -6.22254f}, tol));
  EXPECT_EQ(ArgMax(logits), 403);
}

TEST(EngineReferenceTest, GreedyFromBosMatchesReferenceTokensAndText) {
  auto engine = MakeEngine(Stories());
  GenerateOptions g;
  g.max_new_tokens = 80;
  const std::vector<int> prompt = {1};
  ASSERT_OK_AND_ASSIGN(GenerateResult r, engine->Generate(prompt, g));
  ASSERT_GE(r.tokens.size(), 20u);
  EXPECT_THAT(std::vector<int>(r.tokens.begin(), r.tokens.begin() + 20),
              ElementsAreArray(kReferenceGreedyFromBos));
  ASSERT_OK_AND_ASSIGN(Tokenizer tok, Tokenizer::Load(dapq::testing::Tok512Path(), 512));
  const std::string text = tok.DecodeAll(r.tokens, 1);
  EXPECT_THAT(
      text,
      ::testing::StartsWith(
          "Once upon a time, there was a little girl named Lily. She loved to play outside in "
          "the park. One day, she saw a big, red ball. She wanted to play with it, but it was "
          "too high."));
}

TEST(EngineReferenceTest, ZooPromptMatchesReferenceText) {
  auto engine = MakeEngine(Stories());
  ASSERT_OK_AND_ASSIGN(Tokenizer tok, Tokenizer::Load(dapq::testing::Tok512Path(), 512));
  const std::vector<int> prompt = tok.Encode("Zoo", true, false);
  // llama2.c `-n 60`: positions 0..59 are run, so 60 - (prompt - 1) tokens are sampled.
  GenerateOptions g;
  g.max_new_tokens = 60 - (static_cast<int>(prompt.size()) - 1);
  ASSERT_OK_AND_ASSIGN(GenerateResult r, engine->Generate(prompt, g));
  std::vector<int> all(prompt.begin() + 1, prompt.end());
  all.insert(all.end(), r.tokens.begin(), r.tokens.end());
  EXPECT_EQ(tok.DecodeAll(all, 1),
            "Zoo was a little girl named Lily. She loved to play outside in the park. One day, "
            "she saw a big, red ball. She wanted to play with it, but she didn't want to play "
            "with");
}

TEST(EngineTest, ChunkedPrefillEqualsOneShot) {
  auto model = Stories();
  ASSERT_OK_AND_ASSIGN(Tokenizer tok, Tokenizer::Load(dapq::testing::Tok512Path(), 512));
  const std::vector<int> prompt = tok.Encode(
      "Once upon a time, there was a little dog named Max. Max liked to run.", true, false);
  std::vector<float> one, chunked;
  auto e1 = MakeEngine(model, 1, 1024);
  auto s1 = e1->NewSequence();
  ASSERT_TRUE(e1->Prefill(*s1, prompt, &one).ok());
  auto e2 = MakeEngine(model, 1, 3);
  auto s2 = e2->NewSequence();
  ASSERT_TRUE(e2->Prefill(*s2, prompt, &chunked).ok());
  // Chunks change the attention GEMMs' shapes only: rounding along one forward pass.
  const int context = static_cast<int>(prompt.size());
  EXPECT_TRUE(AllClose(chunked, one,
                       Fp32Tolerance(MaxAbs(one), DecoderReductionLength(model->config, context))));
  EXPECT_EQ(s1->next_position(), static_cast<int>(prompt.size()));
  EXPECT_EQ(s2->cached_tokens(), static_cast<int>(prompt.size()));
}

// RoPE makes attention depend on relative positions only: the same tokens fed at positions
// 100.. give the same logits as at 0.., and the engine records the explicit positions.
TEST(EngineTest, ExplicitPositionsAreHonoured) {
  auto model = Stories();
  auto engine = MakeEngine(model);
  const std::vector<int> tokens = {1, 403, 407, 261, 378};
  std::vector<int32_t> at0 = {0, 1, 2, 3, 4}, at100 = {100, 101, 102, 103, 104};
  auto a = engine->NewSequence();
  auto b = engine->NewSequence();
  std::vector<float> la, lb;
  ASSERT_TRUE(engine->Forward(*a, tokens, at0, &la).ok());
  ASSERT_TRUE(engine->Forward(*b, tokens, at100, &lb).ok());
  // Rounding along the forward pass, plus RoPE angles up to 104 rad instead of 4.
  EXPECT_TRUE(AllClose(
      lb, la, Fp32RopeTolerance(MaxAbs(la), DecoderReductionLength(model->config, 5), 104)));
  EXPECT_EQ(b->next_position(), 105);
  EXPECT_EQ(b->cached_tokens(), 5);
  EXPECT_THAT(b->cache(0).positions(2, 1), ElementsAreArray(at100));
  // A shifted continuation: decode at position 105 differs from decoding at 5 only by rounding.
  const int next = 432;
  const int32_t p105 = 105, p5 = 5;
  ASSERT_TRUE(engine->Forward(*a, std::span<const int>(&next, 1), std::span(&p5, 1), &la).ok());
  ASSERT_TRUE(engine->Forward(*b, std::span<const int>(&next, 1), std::span(&p105, 1), &lb).ok());
  EXPECT_EQ(ArgMax(la), ArgMax(lb));
}

TEST(EngineTest, ContextLimitIsOutOfRange) {
  auto engine = MakeEngine(Stories());
  std::vector<int> prompt(500, 261);
  prompt[0] = 1;
  GenerateOptions g;
  g.max_new_tokens = 13;
  EXPECT_THAT(engine->Generate(prompt, g),
              StatusIs(absl::StatusCode::kOutOfRange, HasSubstr("context limit 512")));
  auto seq = engine->NewSequence();
  std::vector<int> too_long(513, 261);
  EXPECT_THAT(engine->Prefill(*seq, too_long, nullptr), StatusIs(absl::StatusCode::kOutOfRange));
}

TEST(EngineTest, BadInputsAreRejected) {
  auto engine = MakeEngine(Stories());
  GenerateOptions g;
  EXPECT_THAT(engine->Generate(std::vector<int>{}, g),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("empty prompt")));
  const std::vector<int> bad_token = {1, 9999};
  EXPECT_THAT(engine->Generate(bad_token, g),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("token id 9999")));
  g.max_new_tokens = -1;
  EXPECT_THAT(engine->Generate(std::vector<int>{1}, g),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("max_new_tokens")));
  g.max_new_tokens = 4;
  g.sampling.temperature = -2;
  EXPECT_THAT(engine->Generate(std::vector<int>{1}, g),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("temperature")));
}

TEST(EngineTest, TensorParallelDegreeMustDivideHeads) {
  EngineOptions o;
  o.tp = 3;
  EXPECT_THAT(Engine::Create(Stories(), o),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("tp=3 must divide")));
  o.tp = 8;  // divides n_heads=8 but not n_kv_heads=4
  EXPECT_THAT(Engine::Create(Stories(), o), StatusIs(absl::StatusCode::kInvalidArgument));
  o.tp = 0;
  EXPECT_THAT(Engine::Create(Stories(), o), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(EngineTest, SeededSamplingReplays) {
  auto engine = MakeEngine(Stories());
  GenerateOptions g;
  g.max_new_tokens = 40;
  g.sampling = {0.9f, 0.9f, 77};
  ASSERT_OK_AND_ASSIGN(GenerateResult a, engine->Generate(std::vector<int>{1}, g));
  ASSERT_OK_AND_ASSIGN(GenerateResult b, engine->Generate(std::vector<int>{1}, g));
  EXPECT_EQ(a.tokens, b.tokens);
  g.sampling.seed = 78;
  ASSERT_OK_AND_ASSIGN(GenerateResult c, engine->Generate(std::vector<int>{1}, g));
  EXPECT_NE(a.tokens, c.tokens);
}

}  // namespace
}  // namespace dapq::worker
