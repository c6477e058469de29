// File: worker/compress/scorers_test.cc
// Every scorer on tiny hand-computed cases (a few tokens, head_dim 2, scores derived by hand in
// the comments), through the public Scorer interface. Each tolerance is Fp32Tolerance(scale, n)
// (tests/util/tolerance.h) with n the length of the sums behind a score: the logits (head_dim 2),
// the softmax over the keys (denominator and divide), the window's queries.
#include <cmath>
#include <vector>

#include "gtest/gtest.h"
#include "tests/util/status_matchers.h"
#include "tests/util/tolerance.h"
#include "worker/compress/scorer.h"

namespace dapq::worker::compress {
namespace {
using ::dapq::testing::Fp32Tolerance;

const float kSqrt2 = std::sqrt(2.0f);
const float kLn2 = std::log(2.0f), kLn3 = std::log(3.0f);

CompressionConfig Config(Method m) {
  CompressionConfig c;
  c.method = m;
  c.budget_tokens = 64;
  auto r = c.Resolve();
  EXPECT_TRUE(r.ok()) << r.status();
  return *r;
}

std::vector<float> Score(const CompressionConfig& c, const ScoringInputs& in) {
  auto scorer = MakeScorer(c);
  EXPECT_TRUE(scorer.ok()) << scorer.status();
  std::vector<float> scores(static_cast<size_t>(in.kv_heads) * in.n, -1.0f);
  EXPECT_THAT((*scorer)->Score(in, scores), dapq::testing::IsOk());
  return scores;
}

// One query head, one KV head, head_dim 2, three keys: k0 = (0,0), k1 = (1,0), k2 = (0,1).
struct Tiny {
  std::vector<float> keys = {0, 0, 1, 0, 0, 1};
  std::vector<float> values = {3, 4, 0, 1, 1, 0};
  // Window queries for slots 1 and 2: q1 = (sqrt2 ln2, 0), q2 = (0, sqrt2 ln3) (post-RoPE; the
  // pre-RoPE copies are equal because the tests use position-independent cases or set them).
  std::vector<float> q = {kSqrt2 * kLn2, 0, 0, kSqrt2* kLn3};
  std::vector<int32_t> positions = {1, 2};
  float inv_freq = 1.0f;
  ScoringInputs In() {
    ScoringInputs in;
    in.n = 3;
    in.next_position = 3;
    in.q_heads = in.kv_heads = 1;
    in.head_dim = 2;
    in.keys = keys.data();
    in.values = values.data();
    in.kv_head_stride = 6;
    in.window_q_pre = q.data();
    in.window_q_post = q.data();
    in.window_positions = positions.data();
    in.window_rows = 2;
    in.inv_freq = &inv_freq;
    return in;
  }
};

TEST(ScorersTest, SnapKvSumsCausalWindowAttention) {
  Tiny t;
  CompressionConfig c = Config(Method::kSnapKv);
  c.query_window = 2;
  // q1 sees k0, k1: logits 0, ln2 -> 1/3, 2/3. q2 sees k0..k2: 0, 0, ln3 -> 1/5, 1/5, 3/5.
  const std::vector<float> s = Score(c, t.In());
  const double tol = Fp32Tolerance(2.0, 2 + 3 + 1 + 2);  // two queries' probabilities
  EXPECT_NEAR(s[0], 1.0 / 3 + 1.0 / 5, tol);
  EXPECT_NEAR(s[1], 2.0 / 3 + 1.0 / 5, tol);
  EXPECT_NEAR(s[2], 3.0 / 5, tol);
}

TEST(ScorersTest, TovaUsesTheLastQueryOnly) {
  Tiny t;
  const std::vector<float> s = Score(Config(Method::kTova), t.In());
  const double tol = Fp32Tolerance(1.0, 2 + 3 + 1);
  EXPECT_NEAR(s[0], 0.2, tol);
  EXPECT_NEAR(s[1], 0.2, tol);
  EXPECT_NEAR(s[2], 0.6, tol);
}

TEST(ScorersTest, DapqRotatesContentToTheFuturePosition) {
  Tiny t;
  CompressionConfig c = Config(Method::kDapq);
  c.query_window = 1;
  c.mean_tokens = 1;
  // Content = last pre-RoPE query (0, a) with a = sqrt2 ln3, rotated to position n = 3 by angle
  // 3 (inv_freq 1, interleaved pair): q~ = (-a sin 3, a cos 3). Logits q~.k / sqrt2 over all keys.
  const double a = kSqrt2 * kLn3;
  const double l[3] = {0, -a * std::sin(3.0) / std::sqrt(2.0), a * std::cos(3.0) / std::sqrt(2.0)};
  const double z = std::exp(l[0]) + std::exp(l[1]) + std::exp(l[2]);
  const double tol = Fp32Tolerance(1.0, 2 + 2 + 3 + 1);  // the rotation, then one softmax row
  std::vector<float> s = Score(c, t.In());
  for (int j = 0; j < 3; ++j) EXPECT_NEAR(s[j], std::exp(l[j]) / z, tol) << j;
  // offset 2, stride irrelevant for one query: angle 5.
  c.offset = 2;
  const double m[3] = {0, -a * std::sin(5.0) / std::sqrt(2.0), a * std::cos(5.0) / std::sqrt(2.0)};
  const double zm = std::exp(m[0]) + std::exp(m[1]) + std::exp(m[2]);
  s = Score(c, t.In());
  for (int j = 0; j < 3; ++j) EXPECT_NEAR(s[j], std::exp(m[j]) / zm, tol) << j;
}

TEST(ScorersTest, DapqActualPositionsWithLastContentIsSnapKv) {
  // Pre-RoPE queries that RoPE maps onto the post-RoPE window queries at positions 1, 2.
  Tiny t;
  std::vector<float> pre(4);
  for (int i = 0; i < 2; ++i) {
    const float angle = static_cast<float>(t.positions[i]);
    const float x = t.q[2 * i], y = t.q[2 * i + 1];
    pre[2 * i] = x * std::cos(angle) + y * std::sin(angle);  // inverse rotation
    pre[2 * i + 1] = -x * std::sin(angle) + y * std::cos(angle);
  }
  ScoringInputs in = t.In();
  in.window_q_pre = pre.data();
  CompressionConfig d = Config(Method::kDapq);
  d.query_window = 2;
  d.positions = Positions::kActual;
  d.content = Content::kLast;
  CompressionConfig s = Config(Method::kSnapKv);
  s.query_window = 2;
  const std::vector<float> a = Score(d, in), b = Score(s, in);
  // Both sides fp32; DapQ also rotates the pre-RoPE queries (2 ops per component).
  EXPECT_TRUE(dapq::testing::AllClose(a, b, Fp32Tolerance(2.0, 2 + 2 + 3 + 1 + 2)));
}

TEST(ScorersTest, DapqZeroContentIsUniform) {
  Tiny t;
  CompressionConfig c = Config(Method::kDapq);
  c.query_window = 2;
  c.content = Content::kZero;
  c.gamma = 0.5f;  // weights 1 and 0.5
  for (float s : Score(c, t.In())) EXPECT_NEAR(s, 1.5 / 3, Fp32Tolerance(1.5, 2 + 3 + 1 + 2));
}

TEST(ScorersTest, H2oAveragesTheGroupAndOptionallyNormalises) {
  std::vector<float> acc = {2, 1, 0.5f, 0.25f};
  std::vector<float> keys(8, 0.0f);
  ScoringInputs in;
  in.n = 4;
  in.q_heads = 2;
  in.kv_heads = 1;
  in.head_dim = 2;
  in.keys = in.values = keys.data();
  in.accumulated_attention = acc.data();
  CompressionConfig c = Config(Method::kH2o);
  EXPECT_EQ(Score(c, in), (std::vector<float>{1, 0.5f, 0.25f, 0.125f}));
  c.h2o_normalize = true;  // divided by the queries that saw each key: 4, 3, 2, 1
  const std::vector<float> s = Score(c, in);
  EXPECT_FLOAT_EQ(s[0], 0.25f);
  EXPECT_FLOAT_EQ(s[1], 0.5f / 3);
  EXPECT_FLOAT_EQ(s[2], 0.125f);
  EXPECT_FLOAT_EQ(s[3], 0.125f);
}

TEST(ScorersTest, StreamingPrefersRecentTokens) {
  Tiny t;
  const std::vector<float> s = Score(Config(Method::kStreamingLlm), t.In());
  EXPECT_LT(s[0], s[1]);
  EXPECT_LT(s[1], s[2]);
}

TEST(ScorersTest, ExpectedAttentionWithOneQueryIsSoftmaxTimesValueNorm) {
  // One observed query (1, 0): mu = (1, 0), covariance 0; one future position at 0: R = I.
  // k0 = (0,0), k1 = (sqrt2 ln2, 0): logits 0, ln2 -> 1/3, 2/3; |v0| = 5, |v1| = 1.
  std::vector<float> keys = {0, 0, kSqrt2 * kLn2, 0};
  std::vector<float> values = {3, 4, 0, 1};
  std::vector<double> sum = {1, 0}, outer = {1, 0, 0, 0};
  float inv_freq = 1.0f;
  ScoringInputs in;
  in.n = 2;
  in.next_position = 0;
  in.q_heads = in.kv_heads = 1;
  in.head_dim = 2;
  in.keys = keys.data();
  in.values = values.data();
  in.kv_head_stride = 4;
  in.query_sum = sum.data();
  in.query_outer = outer.data();
  in.query_count = 1;
  in.inv_freq = &inv_freq;
  CompressionConfig c = Config(Method::kExpectedAttention);
  c.expected_future = 1;
  const std::vector<float> s = Score(c, in);
  // Probabilities times |v| <= 5; the query statistics, logits and |v| are 2-term sums.
  const double tol = Fp32Tolerance(5.0, 2 + 2 + 2 + 2 + 1);
  EXPECT_NEAR(s[0], 5.0 / 3, tol);
  EXPECT_NEAR(s[1], 2.0 / 3, tol);
}

TEST(ScorersTest, RandomIsSeededPerGlobalHead) {
  Tiny t;
  CompressionConfig c = Config(Method::kRandom);
  const std::vector<float> a = Score(c, t.In()), b = Score(c, t.In());
  EXPECT_EQ(a, b);
  for (float x : a) EXPECT_TRUE(x >= 0 && x < 1);
  ScoringInputs other = t.In();
  other.kv_head_begin = 1;
  EXPECT_NE(Score(c, other), a);
  c.seed = 99;
  EXPECT_NE(Score(c, t.In()), a);
}

TEST(ScorersTest, FullHasNoScorer) {
  CompressionConfig c;
  EXPECT_THAT(MakeScorer(c), dapq::testing::StatusIs(absl::StatusCode::kUnimplemented));
}

}  // namespace
}  // namespace dapq::worker::compress
