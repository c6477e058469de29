// File: worker/compress/compression_config_test.cc
// Compression configs: parsing, defaults per method, budget arithmetic, and every bad config
// rejected with InvalidArgument naming the field.
#include "worker/compress/compression_config.h"

#include "gtest/gtest.h"
#include "tests/util/status_matchers.h"

namespace dapq::worker::compress {
namespace {
using ::dapq::testing::IsOk;
using ::dapq::testing::StatusIs;
using ::testing::HasSubstr;

CompressionConfig Dapq(int budget) {
  CompressionConfig c;
  c.method = Method::kDapq;
  c.budget_tokens = budget;
  return c;
}

TEST(CompressionConfigTest, ParsesNamesAndRejectsUnknownOnes) {
  ASSERT_OK_AND_ASSIGN(Method m, ParseMethod("expected_attention"));
  EXPECT_EQ(m, Method::kExpectedAttention);
  EXPECT_EQ(MethodName(Method::kStreamingLlm), "streaming");
  EXPECT_THAT(ParseMethod("snapkv2"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       ::testing::AllOf(HasSubstr("unknown method 'snapkv2'"), HasSubstr("dapq"))));
  EXPECT_THAT(ParseContent("median"), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ParseStorage("paged"), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(CompressionConfigTest, DefaultsPerMethod) {
  // DapQ's defaults come from the evaluation (bench/results/eval/README.md).
  ASSERT_OK_AND_ASSIGN(CompressionConfig d, Dapq(64).Resolve());
  EXPECT_EQ(d.window, 0);
  EXPECT_EQ(d.query_window, 32);
  EXPECT_EQ(d.pool_kernel, 1);
  EXPECT_EQ(d.sinks, 0);
  EXPECT_EQ(d.content, Content::kLastToken);
  EXPECT_EQ(d.positions, Positions::kFuture);
  CompressionConfig s = Dapq(64);
  s.method = Method::kSnapKv;
  ASSERT_OK_AND_ASSIGN(s, s.Resolve());
  EXPECT_EQ(s.window, 32);
  EXPECT_EQ(s.query_window, 32);
  CompressionConfig st = Dapq(64);
  st.method = Method::kStreamingLlm;
  ASSERT_OK_AND_ASSIGN(st, st.Resolve());
  EXPECT_EQ(st.sinks, 4);
  EXPECT_EQ(st.pool_kernel, 1);
}

TEST(CompressionConfigTest, DefaultWindowIsCappedForSmallBudgetsExplicitIsNot) {
  CompressionConfig s = Dapq(16);
  s.method = Method::kSnapKv;
  ASSERT_OK_AND_ASSIGN(CompressionConfig r, s.Resolve(/*n=*/400));
  EXPECT_EQ(r.window, 8);         // min(32, 16 / 2)
  EXPECT_EQ(r.query_window, 32);  // the observation window is not a budget
  s.window = 12;
  ASSERT_OK_AND_ASSIGN(r, s.Resolve(400));
  EXPECT_EQ(r.window, 12);
}

TEST(CompressionConfigTest, BudgetForTokensAndRatios) {
  EXPECT_EQ(Dapq(64).BudgetFor(1000), 64);
  CompressionConfig r;
  r.method = Method::kSnapKv;
  r.budget_ratio = 0.03;
  EXPECT_EQ(r.BudgetFor(1000), 30);
  EXPECT_EQ(r.BudgetFor(10), 1);
  r.budget_ratio = 0.125;
  EXPECT_EQ(r.BudgetFor(16), 2);  // exact products are not rounded up
  CompressionConfig full;
  EXPECT_EQ(full.BudgetFor(77), 77);
}

TEST(CompressionConfigTest, RejectsBadConfigsNamingTheField) {
  EXPECT_THAT(Dapq(0).Validate(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("budget")));
  EXPECT_THAT(Dapq(-5).Validate(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("budget=-5")));
  CompressionConfig both = Dapq(10);
  both.budget_ratio = 0.5;
  EXPECT_THAT(both.Validate(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("exactly one")));
  for (double ratio : {0.0 - 0.1, 1.5}) {
    CompressionConfig r;
    r.method = Method::kDapq;
    r.budget_ratio = ratio;
    EXPECT_THAT(r.Validate(),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("budget_ratio")));
  }
  CompressionConfig w = Dapq(16);
  w.window = 17;
  EXPECT_THAT(w.Validate(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("exceed budget=16")));
  CompressionConfig k = Dapq(16);
  k.pool_kernel = 4;
  EXPECT_THAT(k.Validate(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("pool_kernel=4")));
  CompressionConfig g = Dapq(16);
  g.gamma = 0;
  EXPECT_THAT(g.Validate(), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("gamma")));
  CompressionConfig a = Dapq(16);
  a.allocator = Allocator::kAdaptive;
  EXPECT_THAT(a.Validate(), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("per_head")));
  a.storage = Storage::kPerHead;
  EXPECT_THAT(a.Validate(), IsOk());
  CompressionConfig full;  // method full needs no budget
  EXPECT_THAT(full.Validate(), IsOk());
}

}  // namespace
}  // namespace dapq::worker::compress
