// File: tests/util/status_matchers.h
// GoogleTest matchers for absl::Status / absl::StatusOr (Abseil 20220623 has none):
//   EXPECT_THAT(s, IsOk());  EXPECT_THAT(s, StatusIs(absl::StatusCode::kNotFound, HasSubstr("x")));
//   ASSERT_OK_AND_ASSIGN(auto v, MakeV());
#ifndef DAPQ_TESTS_UTIL_STATUS_MATCHERS_H_
#define DAPQ_TESTS_UTIL_STATUS_MATCHERS_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dapq::testing {

inline const absl::Status& GetStatus(const absl::Status& s) { return s; }
template <typename T>
const absl::Status& GetStatus(const absl::StatusOr<T>& s) {
  return s.status();
}

MATCHER(IsOk, "is OK") {
  const absl::Status& s = GetStatus(arg);
  if (!s.ok()) *result_listener << "status: " << s;
  return s.ok();
}

MATCHER_P(StatusIs, code, "has status code " + ::testing::PrintToString(code)) {
  const absl::Status& s = GetStatus(arg);
  *result_listener << "status: " << s;
  return s.code() == code;
}

MATCHER_P2(StatusIs, code, message_matcher,
           "has status code " + ::testing::PrintToString(code) + " and a matching message") {
  const absl::Status& s = GetStatus(arg);
  *result_listener << "status: " << s;
  return s.code() == code && ::testing::Matches(message_matcher)(std::string(s.message()));
}

}  // namespace dapq::testing

#define DAPQ_TEST_CONCAT_INNER_(a, b) a##b
#define DAPQ_TEST_CONCAT_(a, b) DAPQ_TEST_CONCAT_INNER_(a, b)
#define ASSERT_OK_AND_ASSIGN(lhs, rexpr) \
  ASSERT_OK_AND_ASSIGN_IMPL_(DAPQ_TEST_CONCAT_(dapq_test_so_, __LINE__), lhs, rexpr)
#define ASSERT_OK_AND_ASSIGN_IMPL_(so, lhs, rexpr)   \
  auto so = (rexpr);                                 \
  ASSERT_TRUE(so.ok()) << "status: " << so.status(); \
  lhs = std::move(so).value()

#endif  // DAPQ_TESTS_UTIL_STATUS_MATCHERS_H_
