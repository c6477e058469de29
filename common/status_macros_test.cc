// File: common/status_macros_test.cc
// Tests for DAPQ_RETURN_IF_ERROR, DAPQ_ASSIGN_OR_RETURN and DAPQ_CHECK.
#include "common/status_macros.h"

#include "common/check.h"
#include "gtest/gtest.h"
#include "tests/util/status_matchers.h"

namespace dapq {
namespace {
using ::dapq::testing::IsOk;
using ::dapq::testing::StatusIs;

absl::StatusOr<int> Half(int x) {
  if (x % 2 != 0) return absl::InvalidArgumentError("odd");
  return x / 2;
}

absl::StatusOr<int> Quarter(int x) {
  DAPQ_ASSIGN_OR_RETURN(int h, Half(x));
  DAPQ_ASSIGN_OR_RETURN(int q, Half(h));
  return q;
}

absl::Status CheckEven(int x) {
  DAPQ_RETURN_IF_ERROR(Half(x).status());
  return absl::OkStatus();
}

TEST(StatusMacrosTest, AssignOrReturnPropagatesErrors) {
  EXPECT_EQ(*Quarter(8), 2);
  EXPECT_THAT(Quarter(6), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(CheckEven(4), IsOk());
  EXPECT_THAT(CheckEven(3), StatusIs(absl::StatusCode::kInvalidArgument, "odd"));
}

TEST(StatusMacrosTest, CheckIsStatementSafe) {
  int n = 0;
  if (n == 0)
    DAPQ_CHECK(n == 0) << "not reached";
  else
    n = 2;
  EXPECT_EQ(n, 0);
}

TEST(StatusMacrosDeathTest, CheckAbortsWithMessage) {
  EXPECT_DEATH({ DAPQ_CHECK(1 + 1 == 3) << "arith"; }, "DAPQ_CHECK failed: 1 \\+ 1 == 3 arith");
}

}  // namespace
}  // namespace dapq
