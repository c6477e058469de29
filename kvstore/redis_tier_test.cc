// File: kvstore/redis_tier_test.cc
// The Redis remote tier against a real redis-server started on loopback: round trips, a store
// spilling down to Redis, the server going away mid-transfer (Unavailable, the block stays on
// its upper tier, reconnect after a restart), and Redis evicting a key (DataLoss, never used).
// Over TLS (rediss://, a TLS-only server that requires client certificates; throwaway CAs made
// with openssl): a mutual-TLS round trip, the server refusing a certificate of another CA, the
// client refusing a server of another CA or of another name, and a plaintext client against
// the TLS port and a TLS client against a plaintext port failing within the timeout. The
// plaintext policy of OpenRemoteTier: redis:// to a non-loopback address is refused before any
// connection unless allowed, rediss:// without TLS files is InvalidArgument.
#include "kvstore/redis_tier.h"

#include <chrono>
#include <random>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kvstore/block_codec.h"
#include "kvstore/kv_store.h"
#include "kvstore/remote_tier.h"
#include "launcher/local_cluster.h"
#include "tests/util/kv_blocks.h"
#include "tests/util/redis_server.h"
#include "tests/util/status_matchers.h"
#include "tests/util/test_paths.h"

namespace dapq::kvstore {
namespace {
using ::dapq::testing::IsOk;
using ::dapq::testing::StatusIs;

std::string Block(uint64_t seed, int tokens = 10) { return dapq::testing::TestBlock(seed, tokens); }

RedisTierOptions Options(int port) {
  RedisTierOptions o;
  o.port = port;
  o.key_prefix = "test:";
  return o;
}

TEST(RedisTierTest, RoundTripAndErase) {
  ASSERT_OK_AND_ASSIGN(auto server, dapq::testing::RedisServer::Start());
  ASSERT_OK_AND_ASSIGN(auto tier, RedisTier::Connect(Options(server->port())));
  ASSERT_THAT(tier->Put("s.b0", Block(1)), IsOk());
  ASSERT_OK_AND_ASSIGN(std::string got, tier->Get("s.b0"));
  EXPECT_EQ(got, Block(1));
  EXPECT_EQ(tier->used_bytes(), Block(1).size());
  ASSERT_THAT(tier->Erase("s.b0"), IsOk());
  EXPECT_THAT(tier->Get("s.b0"), StatusIs(absl::StatusCode::kNotFound));
}

TEST(RedisTierTest, UnreachableServerIsUnavailable) {
  ASSERT_OK_AND_ASSIGN(int port, dapq::testing::PickFreePort());
  EXPECT_THAT(RedisTier::Connect(Options(port)),
              StatusIs(absl::StatusCode::kUnavailable, ::testing::HasSubstr("127.0.0.1")));
}

TEST(RedisTierTest, StoreSpillsToRedisAndSurvivesTheServerGoingAway) {
  ASSERT_OK_AND_ASSIGN(auto server, dapq::testing::RedisServer::Start());
  ASSERT_OK_AND_ASSIGN(auto remote, RedisTier::Connect(Options(server->port())));
  ASSERT_OK_AND_ASSIGN(auto store, KvStore::Open(dapq::testing::SmallStoreOver(remote.get())));
  for (int i = 0; i < 8; ++i) ASSERT_THAT(store->Put("s", absl::StrCat("s.", i), Block(i)), IsOk());
  ASSERT_THAT(store->Spill(), IsOk());
  EXPECT_GT(store->Stats()[2].blocks, 0);  // tiers: device, host, remote
  for (int i = 0; i < 8; ++i) {
    ASSERT_OK_AND_ASSIGN(std::string got, store->Get(absl::StrCat("s.", i)));
    EXPECT_EQ(got, Block(i));
  }
  // The server dies: spilling fails with Unavailable and nothing is lost from the upper tiers.
  for (int i = 8; i < 12; ++i)
    ASSERT_THAT(store->Put("t", absl::StrCat("t.", i), Block(i)), IsOk());
  server->Kill();
  EXPECT_THAT(store->Spill(), StatusIs(absl::StatusCode::kUnavailable));
  for (int i = 8; i < 12; ++i) {
    ASSERT_OK_AND_ASSIGN(std::string got, store->Get(absl::StrCat("t.", i)));
    EXPECT_EQ(got, Block(i));
  }
}

TEST(RedisTierTest, EvictedKeyIsDataLoss) {
  // A tiny Redis that evicts: write far more than it holds.
  ASSERT_OK_AND_ASSIGN(auto server,
                       dapq::testing::RedisServer::Start(
                           {"--maxmemory", "4mb", "--maxmemory-policy", "allkeys-lru"}));
  ASSERT_OK_AND_ASSIGN(auto tier, RedisTier::Connect(Options(server->port())));
  const std::string big = Block(7, 2000);  // ~130 KB
  for (int i = 0; i < 60; ++i) ASSERT_THAT(tier->Put(absl::StrCat("k", i), big), IsOk());
  int evicted = 0;
  for (int i = 0; i < 60; ++i) {
    absl::StatusOr<std::string> got = tier->Get(absl::StrCat("k", i));
    if (absl::IsDataLoss(got.status())) {
      ++evicted;
      EXPECT_THAT(got, StatusIs(absl::StatusCode::kDataLoss, ::testing::HasSubstr("evicted")));
    } else {
      ASSERT_TRUE(got.ok()) << got.status();
      EXPECT_EQ(*got, big);
    }
  }
  EXPECT_GT(evicted, 0);
}

// --- TLS (rediss://) ---------------------------------------------------------------------------

TlsFiles Files(const std::string& cert, const std::string& key, const std::string& ca) {
  TlsFiles f;
  f.cert = cert;
  f.key = key;
  f.ca = ca;
  return f;
}

class RedisTlsTest : public ::testing::Test {
 protected:
  // Two throwaway CAs, each with a certificate for localhost / 127.0.0.1 (server and client
  // use). The server of each test uses tls_'s certificate and admits clients that tls_'s CA
  // signed.
  static void SetUpTestSuite() {
    const std::string dir = dapq::testing::MakeTempDir("redis_tls_test");
    auto tls = launcher::MakeThrowawayTls(dir + "/tls");
    ASSERT_TRUE(tls.ok()) << tls.status();
    auto other = launcher::MakeThrowawayTls(dir + "/other");  // another CA, same names
    ASSERT_TRUE(other.ok()) << other.status();
    tls_ = new TlsFiles(*tls);
    other_ = new TlsFiles(*other);
  }
  static void TearDownTestSuite() {
    delete tls_;
    delete other_;
    tls_ = other_ = nullptr;
  }
  void SetUp() override {
    ASSERT_NE(tls_, nullptr);
    auto server = dapq::testing::RedisServer::StartTls(tls_->cert, tls_->key, tls_->ca);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
  }
  std::string Url(absl::string_view scheme = "rediss", absl::string_view host = "127.0.0.1") {
    return absl::StrCat(scheme, "://", host, ":", server_->port());
  }
  static RemoteTierOptions Remote(const std::string& url, const TlsFiles& files) {
    RemoteTierOptions o;
    o.url = url;
    o.key_prefix = "tls";
    o.tls = files;
    o.timeout_ms = 1000;
    return o;
  }

  static TlsFiles* tls_;
  static TlsFiles* other_;
  std::unique_ptr<dapq::testing::RedisServer> server_;
};
TlsFiles* RedisTlsTest::tls_ = nullptr;
TlsFiles* RedisTlsTest::other_ = nullptr;

TEST_F(RedisTlsTest, RoundTripOverMutualTls) {
  ASSERT_OK_AND_ASSIGN(auto tier, OpenRemoteTier(Remote(Url(), *tls_)));
  for (int i = 0; i < 4; ++i) ASSERT_THAT(tier->Put(absl::StrCat("s.b", i), Block(i)), IsOk());
  const std::string big = Block(9, 2000);  // ~130 KB: many TLS records each way
  ASSERT_THAT(tier->Put("big", big), IsOk());
  for (int i = 0; i < 4; ++i) {
    ASSERT_OK_AND_ASSIGN(std::string got, tier->Get(absl::StrCat("s.b", i)));
    EXPECT_EQ(got, Block(i));
  }
  ASSERT_OK_AND_ASSIGN(std::string got, tier->Get("big"));
  EXPECT_EQ(got, big);
  ASSERT_THAT(tier->Erase("s.b0"), IsOk());
  EXPECT_THAT(tier->Get("s.b0"), StatusIs(absl::StatusCode::kNotFound));
}

TEST_F(RedisTlsTest, ServerNameIsChecked) {
  // The certificate names localhost and 127.0.0.1: dialling by name works, and --tls_server_name
  // replaces the host in the check.
  ASSERT_OK_AND_ASSIGN(auto by_name, OpenRemoteTier(Remote(Url("rediss", "localhost"), *tls_)));
  ASSERT_THAT(by_name->Put("a", Block(1)), IsOk());
  TlsFiles wrong_name = *tls_;
  wrong_name.server_name = "redis.example.com";
  EXPECT_THAT(OpenRemoteTier(Remote(Url(), wrong_name)),
              StatusIs(absl::StatusCode::kUnavailable,
                       ::testing::AllOf(::testing::HasSubstr("certificate verify failed"),
                                        ::testing::HasSubstr("hostname mismatch"))));
}

TEST_F(RedisTlsTest, ClientCertificateOfAnotherCaIsRefused) {
  // We trust the server, but present a certificate its CA did not sign.
  const TlsFiles impostor = Files(other_->cert, other_->key, tls_->ca);
  // With TLS 1.3 our handshake completes before the server checks our certificate: its alert
  // arrives on the first command, and names the reason.
  EXPECT_THAT(
      OpenRemoteTier(Remote(Url(), impostor)),
      StatusIs(absl::StatusCode::kUnavailable,
               ::testing::AllOf(::testing::HasSubstr(absl::StrCat("127.0.0.1:", server_->port())),
                                ::testing::HasSubstr("alert unknown ca"))));
}

TEST_F(RedisTlsTest, ClientThatTrustsAnotherCaRefusesTheServer) {
  const TlsFiles wary = Files(tls_->cert, tls_->key, other_->ca);
  EXPECT_THAT(
      OpenRemoteTier(Remote(Url(), wary)),
      StatusIs(absl::StatusCode::kUnavailable,
               ::testing::AllOf(::testing::HasSubstr(absl::StrCat("127.0.0.1:", server_->port())),
                                ::testing::HasSubstr("TLS handshake"),
                                ::testing::HasSubstr("certificate verify failed"))));
}

TEST_F(RedisTlsTest, PlaintextClientAgainstTheTlsPortFailsWithinTheTimeout) {
  const auto start = std::chrono::steady_clock::now();
  EXPECT_THAT(
      OpenRemoteTier(Remote(Url("redis"), TlsFiles{})),
      StatusIs(absl::StatusCode::kUnavailable,
               ::testing::AllOf(::testing::HasSubstr(absl::StrCat("127.0.0.1:", server_->port())),
                                ::testing::HasSubstr("use rediss://"))));
  // A few timeouts at most (connect, write, read of 1000 ms each), never a hang.
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10));
}

TEST_F(RedisTlsTest, TlsClientAgainstAPlaintextServerFailsWithinTheTimeout) {
  ASSERT_OK_AND_ASSIGN(auto plain, dapq::testing::RedisServer::Start());
  const auto start = std::chrono::steady_clock::now();
  EXPECT_THAT(OpenRemoteTier(Remote(absl::StrCat("rediss://127.0.0.1:", plain->port()), *tls_)),
              StatusIs(absl::StatusCode::kUnavailable,
                       ::testing::AllOf(::testing::HasSubstr("TLS handshake"),
                                        ::testing::HasSubstr("a plaintext server?"))));
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10));
}

// --- OpenRemoteTier's plaintext policy ---------------------------------------------------------

TEST(RemoteRedisTest, PlaintextToNonLoopbackIsRefusedWithoutConnecting) {
  RemoteTierOptions o;
  o.url = "redis://10.0.0.1:6379";
  const auto start = std::chrono::steady_clock::now();
  EXPECT_THAT(OpenRemoteTier(o),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       ::testing::AllOf(::testing::HasSubstr("10.0.0.1:6379"),
                                        ::testing::HasSubstr("--allow_plaintext"))));
  // Dialling 10.0.0.1 would be Unavailable after up to timeout_ms; the refusal comes first.
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(500));
}

TEST(RemoteRedisTest, PlaintextOnLoopbackOrWhenAllowed) {
  ASSERT_OK_AND_ASSIGN(auto server, dapq::testing::RedisServer::Start());
  RemoteTierOptions o;
  o.url = absl::StrCat("redis://127.0.0.1:", server->port());
  ASSERT_OK_AND_ASSIGN(auto tier, OpenRemoteTier(o));
  ASSERT_THAT(tier->Put("a", Block(3)), IsOk());
  // 0.0.0.0 is not a loopback address to the policy, yet Linux dials it as the local host: the
  // same server, reachable only with allow_plaintext.
  o.url = absl::StrCat("redis://0.0.0.0:", server->port());
  EXPECT_THAT(OpenRemoteTier(o), StatusIs(absl::StatusCode::kFailedPrecondition));
  o.allow_plaintext = true;
  o.key_prefix = "other";
  ASSERT_OK_AND_ASSIGN(auto allowed, OpenRemoteTier(o));
  ASSERT_THAT(allowed->Put("a", Block(4)), IsOk());
  ASSERT_OK_AND_ASSIGN(std::string got, allowed->Get("a"));
  EXPECT_EQ(got, Block(4));
}

TEST(RemoteRedisTest, RedissWithoutTlsFilesIsInvalidArgument) {
  RemoteTierOptions o;
  o.url = "rediss://127.0.0.1:6380";
  EXPECT_THAT(OpenRemoteTier(o), StatusIs(absl::StatusCode::kInvalidArgument,
                                          ::testing::AllOf(::testing::HasSubstr("kv_remote"),
                                                           ::testing::HasSubstr("--tls_ca"))));
}

TEST(RemoteRedisTest, MalformedUrlNamesTheForms) {
  RemoteTierOptions o;
  o.url = "rediss://127.0.0.1";
  EXPECT_THAT(OpenRemoteTier(o), StatusIs(absl::StatusCode::kInvalidArgument,
                                          ::testing::HasSubstr("rediss://HOST:PORT")));
  o.url = "memcache://127.0.0.1:11211";
  EXPECT_THAT(OpenRemoteTier(o),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("kv_remote")));
}

}  // namespace
}  // namespace dapq::kvstore
