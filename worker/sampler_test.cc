// File: worker/sampler_test.cc
// Sampler: greedy ties, seeded reproducibility, top-p restricting to the nucleus, bad options.
#include "worker/sampler.h"

#include <cmath>
#include <set>
#include <vector>

#include "gtest/gtest.h"
#include "tests/util/status_matchers.h"

namespace dapq::worker {
namespace {
using ::dapq::testing::IsOk;
using ::dapq::testing::StatusIs;

TEST(SamplerTest, GreedyTakesLowestIndexAmongTies) {
  Sampler s({0.0f, 0.9f, 1});
  std::vector<float> logits = {0.5f, 2.0f, 2.0f, -1.0f};
  EXPECT_EQ(s.Sample(logits), 1);
}

TEST(SamplerTest, SameSeedSameTokens) {
  std::vector<int> a, b;
  for (std::vector<int>* out : {&a, &b}) {
    Sampler s({1.0f, 1.0f, 1234});
    for (int i = 0; i < 50; ++i) {
      std::vector<float> logits = {0.1f, 0.3f, 0.2f, 0.4f, 0.0f};
      out->push_back(s.Sample(logits));
    }
  }
  EXPECT_EQ(a, b);
  EXPECT_GT(std::set<int>(a.begin(), a.end()).size(), 1u);  // it does sample
}

TEST(SamplerTest, TopPSamplesOnlyFromTheNucleus) {
  Sampler s({1.0f, 0.5f, 7});
  for (int i = 0; i < 200; ++i) {
    // probabilities ~ 0.6, 0.2, 0.1, 0.1: the 0.5 nucleus is token 0 alone
    std::vector<float> logits = {std::log(0.6f), std::log(0.2f), std::log(0.1f), std::log(0.1f)};
    EXPECT_EQ(s.Sample(logits), 0);
  }
}

TEST(SamplerTest, RejectsBadOptions) {
  EXPECT_THAT(SamplingOptions({-1.0f, 0.9f, 1}).Validate(),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("temperature")));
  EXPECT_THAT(SamplingOptions({1.0f, 0.0f, 1}).Validate(),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("top_p")));
  EXPECT_THAT(SamplingOptions({1.0f, 1.5f, 1}).Validate(),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(SamplingOptions({0.7f, 1.0f, 1}).Validate(), IsOk());
}

}  // namespace
}  // namespace dapq::worker
