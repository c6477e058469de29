// File: cluster/etcd_url_test.cc
// etcd:// URL parsing: endpoints (lists, default port, IPv6), prefix normalisation, and the
// errors (InvalidArgument naming the URL; Unimplemented for etcds://).
#include "cluster/etcd_url.h"

#include <string>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "tests/util/status_matchers.h"

namespace dapq::cluster {
namespace {
using ::dapq::testing::StatusIs;
using ::testing::HasSubstr;

TEST(EtcdUrlTest, ParsesEndpointsAndDefaultPrefix) {
  ASSERT_OK_AND_ASSIGN(EtcdUrl url, ParseEtcdUrl("etcd://127.0.0.1:2379"));
  ASSERT_EQ(url.endpoints.size(), 1u);
  EXPECT_EQ(url.endpoints[0], (EtcdEndpoint{"127.0.0.1", 2379}));
  EXPECT_EQ(url.prefix, "/dapq");

  ASSERT_OK_AND_ASSIGN(url, ParseEtcdUrl("etcd://etcd-0.etcd:1,etcd-1.etcd,[::1]:3/"));
  ASSERT_EQ(url.endpoints.size(), 3u);
  EXPECT_EQ(url.endpoints[0], (EtcdEndpoint{"etcd-0.etcd", 1}));
  EXPECT_EQ(url.endpoints[1], (EtcdEndpoint{"etcd-1.etcd", kEtcdDefaultPort}));
  EXPECT_EQ(url.endpoints[2], (EtcdEndpoint{"::1", 3}));
  EXPECT_EQ(url.endpoints[2].ToString(), "[::1]:3");
  EXPECT_EQ(url.prefix, "/dapq");
}

TEST(EtcdUrlTest, NormalisesThePrefix) {
  for (const auto& [text, prefix] :
       std::vector<std::pair<std::string, std::string>>{{"etcd://h:1/prod", "/prod"},
                                                        {"etcd://h:1/prod/", "/prod"},
                                                        {"etcd://h:1//a//b///", "/a/b"},
                                                        {"etcd://h:1", "/dapq"},
                                                        {"etcd://h:1///", "/dapq"}}) {
    SCOPED_TRACE(text);
    ASSERT_OK_AND_ASSIGN(EtcdUrl url, ParseEtcdUrl(text));
    EXPECT_EQ(url.prefix, prefix);
  }
}

TEST(EtcdUrlTest, BadUrlsAreInvalidArgumentNamingTheUrl) {
  for (const char* bad :
       {"", "http://h:1", "etcd://", "etcd:///p", "etcd://h:", "etcd://h:0", "etcd://h:65536",
        "etcd://h:12x", "etcd://h:-1", "etcd://:1", "etcd://a:1,,b:2", "etcd://::1:2",
        "etcd://[::1", "etcd://[::1]x", "etcd://h:1/a b", "etcd://h:1/a?b", "etcd://h o:1"}) {
    SCOPED_TRACE(bad);
    EXPECT_THAT(ParseEtcdUrl(bad), StatusIs(absl::StatusCode::kInvalidArgument,
                                            HasSubstr(std::string("'") + bad + "'")));
  }
}

TEST(EtcdUrlTest, TlsIsUnimplemented) {
  EXPECT_THAT(ParseEtcdUrl("etcds://h:1/p"),
              StatusIs(absl::StatusCode::kUnimplemented, HasSubstr("etcds://h:1/p")));
  EXPECT_TRUE(IsEtcdUrl("etcds://h:1"));
  EXPECT_TRUE(IsEtcdUrl("etcd://h:1"));
  EXPECT_FALSE(IsEtcdUrl("/tmp/rendezvous"));
}

}  // namespace
}  // namespace dapq::cluster
