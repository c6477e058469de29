// File: eval/metrics_test.cc
// The metrics on hand-made inputs, and on stories260K through the evaluator: method full
// reproduces the full-cache reference exactly (KL 0, attention mass 1, the same needle
// log-probability); a compressed cache loses attention mass; TP=2 measures what TP=1 does.
#include "eval/metrics.h"

#include <cmath>
#include <memory>

#include "eval/evaluator.h"
#include "gtest/gtest.h"
#include "tests/util/status_matchers.h"
#include "tests/util/test_paths.h"
#include "worker/llama2c_loader.h"

namespace dapq::eval {
namespace {

namespace wc = worker::compress;

TEST(MetricsTest, LogProbArgmaxAndKl) {
  // The metrics run in double; 1e-7 covers the rounding of log(3) to float (< 2^-24 * 1.1).
  const std::vector<float> p = {0.0f, std::log(3.0f)};  // probabilities 1/4, 3/4
  EXPECT_NEAR(LogProb(p, 1), std::log(0.75), 1e-7);
  EXPECT_EQ(Argmax(p), 1);
  EXPECT_EQ(Argmax(std::vector<float>{2, 2, 1}), 0);  // ties: lowest index
  EXPECT_EQ(MeanKl(p, p, 2), 0.0);
  const std::vector<float> q = {0.0f, 0.0f};  // uniform
  const double kl = 0.25 * std::log(0.5) + 0.75 * std::log(1.5);
  EXPECT_NEAR(MeanKl(p, q, 2), kl, 1e-7);
  std::vector<float> two_rows = p;
  two_rows.insert(two_rows.end(), p.begin(), p.end());
  std::vector<float> mixed = p;
  mixed.insert(mixed.end(), q.begin(), q.end());
  EXPECT_NEAR(MeanKl(two_rows, mixed, 2), kl / 2, 1e-7);
}

TEST(MetricsTest, ScoreNeedleReadsTheRowBeforeEachNeedleToken) {
  // Fed: cue (2 tokens) + needle {2, 1}; row 1 predicts needle[0], row 2 needle[1].
  const std::vector<float> rows = {9, 0, 0,   // row 0: after cue[0], ignored
                                   0, 0, 5,   // row 1: argmax 2
                                   0, 5, 0,   // row 2: argmax 1
                                   9, 0, 0};  // row 3: after the needle, ignored
  const std::vector<int> needle = {2, 1};
  NeedleScore s = ScoreNeedle(rows, 3, 2, needle);
  EXPECT_TRUE(s.exact_match);
  EXPECT_NEAR(s.log_prob,
              LogProb(std::span(rows).subspan(3, 3), 2) + LogProb(std::span(rows).subspan(6, 3), 1),
              1e-12);
  const std::vector<int> wrong = {2, 2};
  EXPECT_FALSE(ScoreNeedle(rows, 3, 2, wrong).exact_match);
}

TEST(MetricsTest, KeptAttentionMassCountsKeptPromptPositionsOnly) {
  AttentionProfile profile(1, 2, 4);  // 1 layer, 2 query heads (one KV head), 4 prompt tokens
  profile.steps = 2;
  const double head0[] = {1.0, 0.5, 0.25, 0.25}, head1[] = {0.0, 0.0, 1.0, 1.0};
  for (int j = 0; j < 4; ++j) {
    profile.row(0, 0)[j] = head0[j];
    profile.row(0, 1)[j] = head1[j];
  }
  const std::vector<int32_t> kept = {0, 2, 9};  // 9: a continuation position, ignored
  const double mass = KeptAttentionMass(profile, 2, [&](int, int) { return std::span(kept); });
  EXPECT_NEAR(mass, ((1.0 + 0.25) / 2 + 1.0 / 2) / 2, 1e-12);
}

class EvaluatorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto w = worker::LoadLlama2cModel(testing::Stories260KPath());
    ASSERT_TRUE(w.ok()) << w.status();
    model_ = std::make_shared<const worker::ModelWeights>(*std::move(w));
    auto t = worker::Tokenizer::Load(testing::Tok512Path(), 512);
    ASSERT_TRUE(t.ok()) << t.status();
    auto p = MakeNeedlePrompt(*t, 3);
    ASSERT_TRUE(p.ok()) << p.status();
    prompt_ = *std::move(p);
  }
  std::unique_ptr<worker::Engine> MakeEngine(int tp) {
    worker::EngineOptions o;
    o.tp = tp;
    o.prefix_cache = false;  // as dapq eval runs it: every configuration prefills the prompt
    auto e = worker::Engine::Create(model_, o);
    EXPECT_TRUE(e.ok()) << e.status();
    return e.ok() ? *std::move(e) : nullptr;
  }
  std::shared_ptr<const worker::ModelWeights> model_;
  NeedlePrompt prompt_;
};

TEST_F(EvaluatorTest, FullMethodReproducesTheReferenceExactly) {
  auto engine = MakeEngine(1);
  ASSERT_OK_AND_ASSIGN(const Reference ref, BuildReference(*engine, prompt_, 16));
  EXPECT_EQ(ref.continuation.size(), 16u);
  EXPECT_EQ(ref.attention.steps, 16);
  ASSERT_OK_AND_ASSIGN(const SampleMetrics m,
                       EvaluateConfig(*engine, ref, wc::CompressionConfig{}));
  EXPECT_EQ(m.kl, 0.0);
  EXPECT_EQ(m.needle_log_prob, ref.needle.log_prob);
  EXPECT_EQ(m.exact_match, ref.needle.exact_match);
  EXPECT_NEAR(m.attention_mass, 1.0, 1e-12);
  EXPECT_EQ(m.kept_fraction, 1.0);
}

TEST_F(EvaluatorTest, CompressionLosesAttentionAndTensorParallelAgrees) {
  wc::CompressionConfig snapkv;
  snapkv.method = wc::Method::kSnapKv;
  snapkv.budget_ratio = 0.12;
  auto engine1 = MakeEngine(1);
  ASSERT_OK_AND_ASSIGN(const Reference ref1, BuildReference(*engine1, prompt_, 16));
  ASSERT_OK_AND_ASSIGN(const SampleMetrics m1, EvaluateConfig(*engine1, ref1, snapkv));
  EXPECT_LT(m1.kept_fraction, 0.2);
  EXPECT_GT(m1.kl, 0.0);
  EXPECT_GT(m1.attention_mass, m1.kept_fraction);  // better than keeping tokens at random
  EXPECT_LT(m1.attention_mass, 1.0);

  auto engine2 = MakeEngine(2);
  ASSERT_OK_AND_ASSIGN(const Reference ref2, BuildReference(*engine2, prompt_, 16));
  EXPECT_EQ(ref2.continuation, ref1.continuation);
  ASSERT_OK_AND_ASSIGN(const SampleMetrics m2, EvaluateConfig(*engine2, ref2, snapkv));
  // Bounds on the metrics (aggregates in double of two TP degrees' fp32 outputs), not per-element
  // fp32 tolerances: the rounding differences they see are at most ~5e-6, far inside.
  EXPECT_NEAR(m2.attention_mass, m1.attention_mass, 1e-4);
  EXPECT_NEAR(m2.kl, m1.kl, 1e-3 + 1e-2 * m1.kl);
  EXPECT_NEAR(m2.needle_log_prob, m1.needle_log_prob, 1e-3);
  EXPECT_EQ(m2.kept_fraction, m1.kept_fraction);
}

}  // namespace
}  // namespace dapq::eval
