// File: coordinator/tenant_auth_test.cc
// The token file's rules, bearer-header parsing, and tenant-scoped session ids.
#include "coordinator/tenant_auth.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <set>

#include "api/request_rules.h"
#include "api/tenant_scope.h"
#include "coordinator/tenant_limiter.h"

namespace dapq::coordinator {
namespace {

using ::testing::HasSubstr;

constexpr char kFile[] =
    "# tenant token\n"
    "alice  alice-secret-token-01\n"
    "\n"
    "bob\tbob-secret-token-000002   # trailing comment\n"
    "alice  alice-second-token-03\n";

TEST(TenantAuthTest, TokensMapToTheirTenants) {
  auto auth = TenantAuth::Parse(kFile, "tokens");
  ASSERT_TRUE(auth.ok()) << auth.status();
  EXPECT_EQ((*auth)->tenants(), 2);
  EXPECT_EQ(*(*auth)->Authenticate("Bearer alice-secret-token-01"), "alice");
  EXPECT_EQ(*(*auth)->Authenticate("Bearer alice-second-token-03"), "alice");
  EXPECT_EQ(*(*auth)->Authenticate("bearer bob-secret-token-000002 "), "bob");
}

TEST(TenantAuthTest, BadCredentialsAreUnauthenticated) {
  auto auth = TenantAuth::Parse(kFile, "tokens");
  ASSERT_TRUE(auth.ok());
  for (const char* header :
       {"", "alice-secret-token-01", "Basic YWxpY2U6eA==", "Bearer alice-secret-token-0",
        "Bearer alice-secret-token-011", "Bearer "}) {
    absl::StatusOr<std::string> t = (*auth)->Authenticate(header);
    EXPECT_EQ(t.status().code(), absl::StatusCode::kUnauthenticated) << header;
  }
  EXPECT_THAT(std::string((*auth)->Authenticate("").status().message()),
              HasSubstr("authorization: Bearer"));
}

TEST(TenantAuthTest, MalformedFilesNameTheLine) {
  struct Case {
    const char* text;
    const char* message;
  } cases[] = {
      {"alice\n", "line 1: expected \"TENANT TOKEN\""},
      {"a b c\n", "line 1: expected"},
      {"\nal/ice alice-secret-token-01\n", "line 2: tenant must be"},
      {"alice short\n", "line 1: token of 5 characters; at least 16"},
      {"a alice-secret-token-01\nb alice-secret-token-01\n", "line 2: this token is already"},
      {"# only a comment\n", "no \"TENANT TOKEN\" line"},
  };
  for (const Case& c : cases) {
    auto auth = TenantAuth::Parse(c.text, "tokens.txt");
    ASSERT_FALSE(auth.ok()) << c.text;
    EXPECT_EQ(auth.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(auth.status().message()), HasSubstr("tokens.txt"));
    EXPECT_THAT(std::string(auth.status().message()), HasSubstr(c.message)) << c.text;
  }
  EXPECT_EQ(TenantAuth::Load("/nonexistent/tokens").status().code(), absl::StatusCode::kNotFound);
}

TEST(TenantScopeTest, SessionIdsAreScopedPerTenant) {
  EXPECT_EQ(api::ScopedSessionId("", "chat-1"), "chat-1");  // authentication off
  EXPECT_EQ(api::ScopedSessionId("alice", ""), "");         // no session
  const std::string a = api::ScopedSessionId("alice", "chat-1");
  const std::string b = api::ScopedSessionId("bob", "chat-1");
  EXPECT_NE(a, b);
  EXPECT_NE(a, "chat-1");
  EXPECT_EQ(a, api::ScopedSessionId("alice", "chat-1"));  // stable across calls and restarts
  EXPECT_NE(a, api::ScopedSessionId("alice", "chat-2"));
  // Scoped ids keep the id syntax and limit, even for the longest client ids.
  std::set<std::string> seen;
  for (const std::string& id : {std::string("x"), std::string(100, 'y'), std::string(128, 'z'),
                                std::string(127, 'z') + "q"}) {
    const std::string scoped = api::ScopedSessionId("tenant-with-a-long-name", id);
    EXPECT_TRUE(api::ValidateSessionId(scoped).ok()) << scoped;
    EXPECT_TRUE(seen.insert(scoped).second) << scoped;
  }
}

TEST(TenantLimiterTest, EachTenantHasItsOwnShare) {
  TenantLimiter limiter(2);
  TenantLimiter::Slot a1, a2, a3, b1;
  ASSERT_TRUE(limiter.Acquire("alice", &a1).ok());
  ASSERT_TRUE(limiter.Acquire("alice", &a2).ok());
  const absl::Status third = limiter.Acquire("alice", &a3);
  EXPECT_EQ(third.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(third.message()), HasSubstr("tenant alice has 2 requests in flight"));
  EXPECT_TRUE(limiter.Acquire("bob", &b1).ok());  // alice's load does not block bob
  {
    TenantLimiter::Slot done = std::move(a1);  // a finished request frees its slot
  }
  EXPECT_EQ(limiter.in_flight("alice"), 1);
  EXPECT_TRUE(limiter.Acquire("alice", &a3).ok());
  TenantLimiter unlimited(0);
  TenantLimiter::Slot any;
  for (int i = 0; i < 100; ++i) EXPECT_TRUE(unlimited.Acquire("x", &any).ok());
}

}  // namespace
}  // namespace dapq::coordinator
