// File: cluster/etcd_client_test.cc
// EtcdClient against a real etcd (tests/util/etcd_server.h): put/get/prefix/delete with binary
// keys and values, transactions (create-if-absent, compare-and-put, an atomic counter under
// contention), leases (expiry removes the key, keepalive keeps it, revoke), etcd's own errors
// keeping their code, bad arguments, an unreachable endpoint (Unavailable naming it), failover
// to the next endpoint, and a silent endpoint hitting the per-call deadline.
#include "cluster/etcd_client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/util/etcd_server.h"
#include "tests/util/redis_server.h"
#include "tests/util/status_matchers.h"

namespace dapq::cluster {
namespace {
using ::dapq::testing::EtcdServer;
using ::dapq::testing::IsOk;
using ::dapq::testing::StatusIs;
using ::testing::HasSubstr;

std::shared_ptr<EtcdClient> ClientFor(const std::vector<std::string>& endpoints,
                                      absl::Duration timeout = absl::Seconds(5)) {
  EtcdClientOptions options;
  for (const std::string& e : endpoints) {
    const size_t colon = e.rfind(':');
    options.endpoints.push_back({e.substr(0, colon), std::stoi(e.substr(colon + 1))});
  }
  options.timeout = timeout;
  absl::StatusOr<std::unique_ptr<EtcdClient>> client = EtcdClient::Create(std::move(options));
  EXPECT_TRUE(client.ok()) << client.status();
  return client.ok() ? std::shared_ptr<EtcdClient>(std::move(*client)) : nullptr;
}

// Polls an external condition (etcd expiring a lease) every 50 ms until it holds or `timeout`
// passes; returns whether it held.
bool PollUntil(const std::function<bool()>& done, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  for (;;) {
    if (done()) return true;
    if (absl::Now() >= deadline) return false;
    ::poll(nullptr, 0, 50);
  }
}

TEST(EtcdClientTest, PutGetDeleteAndPrefixWithBinaryBytes) {
  ASSERT_OK_AND_ASSIGN(auto etcd, EtcdServer::Start());
  auto client = ClientFor({etcd->endpoint()});
  const std::string binary("v\0\xff\x01", 4);
  ASSERT_OK_AND_ASSIGN(int64_t rev1, client->Put("/p/a", "1"));
  ASSERT_OK_AND_ASSIGN(int64_t rev2, client->Put(std::string("/p/b\xff", 5), binary));
  EXPECT_GT(rev2, rev1);
  ASSERT_THAT(client->Put("/pz", "outside").status(), IsOk());
  ASSERT_THAT(client->Put("/p", "the prefix itself, without its slash").status(), IsOk());

  ASSERT_OK_AND_ASSIGN(std::optional<EtcdKeyValue> a, client->Get("/p/a"));
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(a->value, "1");
  EXPECT_EQ(a->mod_revision, rev1);
  EXPECT_EQ(a->create_revision, rev1);
  EXPECT_EQ(a->version, 1);
  EXPECT_EQ(a->lease, 0);
  ASSERT_OK_AND_ASSIGN(std::optional<EtcdKeyValue> missing, client->Get("/p/nope"));
  EXPECT_FALSE(missing.has_value());

  ASSERT_OK_AND_ASSIGN(EtcdRange range, client->GetPrefix("/p/"));
  ASSERT_EQ(range.kvs.size(), 2u);
  EXPECT_EQ(range.kvs[0].key, "/p/a");
  EXPECT_EQ(range.kvs[1].key, std::string("/p/b\xff", 5));
  EXPECT_EQ(range.kvs[1].value, binary);
  EXPECT_GE(range.revision, rev2);

  ASSERT_OK_AND_ASSIGN(int64_t deleted, client->Delete("/p/a"));
  EXPECT_EQ(deleted, 1);
  ASSERT_OK_AND_ASSIGN(deleted, client->Delete("/p/a"));
  EXPECT_EQ(deleted, 0);
  ASSERT_OK_AND_ASSIGN(deleted, client->DeletePrefix("/p/"));
  EXPECT_EQ(deleted, 1);
  ASSERT_OK_AND_ASSIGN(range, client->GetPrefix("/p"));
  ASSERT_EQ(range.kvs.size(), 2u);  // "/p" and "/pz" remain
  EXPECT_EQ(range.kvs[0].key, "/p");
  EXPECT_EQ(range.kvs[1].key, "/pz");
}

TEST(EtcdClientTest, TxnCreateIfAbsentAndCompareAndPut) {
  ASSERT_OK_AND_ASSIGN(auto etcd, EtcdServer::Start());
  auto client = ClientFor({etcd->endpoint()});
  ASSERT_OK_AND_ASSIGN(bool created, client->CreateIfAbsent("/t/k", "first"));
  EXPECT_TRUE(created);
  ASSERT_OK_AND_ASSIGN(created, client->CreateIfAbsent("/t/k", "second"));
  EXPECT_FALSE(created);
  ASSERT_OK_AND_ASSIGN(std::optional<EtcdKeyValue> kv, client->Get("/t/k"));
  ASSERT_TRUE(kv.has_value());
  EXPECT_EQ(kv->value, "first");

  ASSERT_OK_AND_ASSIGN(bool put, client->CompareAndPut("/t/k", kv->mod_revision + 1, "stale"));
  EXPECT_FALSE(put);
  ASSERT_OK_AND_ASSIGN(put, client->CompareAndPut("/t/k", kv->mod_revision, "third"));
  EXPECT_TRUE(put);
  ASSERT_OK_AND_ASSIGN(put, client->CompareAndPut("/t/new", 0, "absent is revision 0"));
  EXPECT_TRUE(put);

  // A transaction with several compares, both branches and reads.
  ASSERT_OK_AND_ASSIGN(
      EtcdTxnResult r,
      client->Txn({EtcdCompare::ValueIs("/t/k", "third"), EtcdCompare::KeyExists("/t/new"),
                   EtcdCompare::KeyMissing("/t/none")},
                  {EtcdOp::Put("/t/x", "y"), EtcdOp::Delete("/t/new"), EtcdOp::Get("/t/k")},
                  {EtcdOp::Get("/t/new")}));
  EXPECT_TRUE(r.succeeded);
  ASSERT_EQ(r.kvs.size(), 1u);
  EXPECT_EQ(r.kvs[0].value, "third");
  ASSERT_OK_AND_ASSIGN(r, client->Txn({EtcdCompare::KeyExists("/t/new")}, {},
                                      {EtcdOp::Get("/t/x"), EtcdOp::Get("/t/new")}));
  EXPECT_FALSE(r.succeeded);
  ASSERT_EQ(r.kvs.size(), 1u);  // "/t/new" is gone
  EXPECT_EQ(r.kvs[0].value, "y");
}

TEST(EtcdClientTest, IncrementIsAtomicUnderContention) {
  ASSERT_OK_AND_ASSIGN(auto etcd, EtcdServer::Start());
  auto client = ClientFor({etcd->endpoint()});
  constexpr int kThreads = 4, kEach = 15;
  std::vector<std::vector<int64_t>> seen(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i) {
        absl::StatusOr<int64_t> v = client->Increment("/c/counter", absl::Seconds(30));
        ASSERT_TRUE(v.ok()) << v.status();
        seen[t].push_back(*v);
      }
    });
  }
  for (std::thread& t : threads) t.join();
  std::vector<int64_t> all;
  for (const auto& s : seen) all.insert(all.end(), s.begin(), s.end());
  std::sort(all.begin(), all.end());
  ASSERT_EQ(all.size(), static_cast<size_t>(kThreads * kEach));
  for (size_t i = 0; i < all.size(); ++i) EXPECT_EQ(all[i], static_cast<int64_t>(i + 1));
  ASSERT_OK_AND_ASSIGN(std::optional<EtcdKeyValue> kv, client->Get("/c/counter"));
  EXPECT_EQ(kv->value, std::to_string(kThreads * kEach));

  ASSERT_THAT(client->Put("/c/text", "abc").status(), IsOk());
  EXPECT_THAT(client->Increment("/c/text"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("abc")));
}

TEST(EtcdClientTest, LeaseExpiryRemovesTheKeyAndKeepAliveKeepsIt) {
  ASSERT_OK_AND_ASSIGN(auto etcd, EtcdServer::Start());
  auto client = ClientFor({etcd->endpoint()});
  ASSERT_OK_AND_ASSIGN(int64_t kept, client->LeaseGrant(2));
  ASSERT_OK_AND_ASSIGN(int64_t dropped, client->LeaseGrant(2));
  ASSERT_THAT(client->Put("/l/kept", "k", kept).status(), IsOk());
  ASSERT_THAT(client->Put("/l/dropped", "d", dropped).status(), IsOk());
  ASSERT_OK_AND_ASSIGN(std::optional<EtcdKeyValue> kv, client->Get("/l/kept"));
  EXPECT_EQ(kv->lease, kept);

  const absl::Time start = absl::Now();
  bool keepalive_ok = true;
  EXPECT_TRUE(PollUntil(
      [&] {
        absl::StatusOr<int64_t> ttl = client->LeaseKeepAliveOnce(kept);
        keepalive_ok = keepalive_ok && ttl.ok() && *ttl >= 1;
        absl::StatusOr<std::optional<EtcdKeyValue>> d = client->Get("/l/dropped");
        return d.ok() && !d->has_value();
      },
      absl::Seconds(10)));
  EXPECT_GE(absl::Now() - start, absl::Seconds(1));  // not before the TTL (etcd's minimum ~2 s)
  EXPECT_TRUE(keepalive_ok);
  ASSERT_OK_AND_ASSIGN(kv, client->Get("/l/kept"));
  EXPECT_TRUE(kv.has_value()) << "the kept-alive lease expired";
  EXPECT_THAT(client->LeaseKeepAliveOnce(dropped), StatusIs(absl::StatusCode::kNotFound));

  ASSERT_THAT(client->LeaseRevoke(kept), IsOk());
  ASSERT_OK_AND_ASSIGN(kv, client->Get("/l/kept"));
  EXPECT_FALSE(kv.has_value()) << "revoke deletes the lease's keys at once";
  EXPECT_THAT(client->LeaseRevoke(kept),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("lease not found")));
}

TEST(EtcdClientTest, EtcdErrorsKeepTheirCodeAndBadArgumentsAreRejected) {
  ASSERT_OK_AND_ASSIGN(auto etcd, EtcdServer::Start());
  auto client = ClientFor({etcd->endpoint()});
  EXPECT_THAT(client->Put("/e/k", "v", /*lease=*/12345).status(),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("requested lease not found")));
  EXPECT_THAT(client->Put("", "v").status(), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(client->Get("").status(), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(client->DeletePrefix("").status(), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(client->LeaseGrant(0).status(), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(EtcdClient::Create({}).status(), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(EtcdClient::FromUrl("etcds://127.0.0.1:1").status(),
              StatusIs(absl::StatusCode::kUnimplemented));
  EXPECT_THAT(EtcdClient::FromUrl("etcd://127.0.0.1:0").status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("etcd://127.0.0.1:0")));
}

TEST(EtcdClientTest, UnreachableEndpointIsUnavailableNamingIt) {
  ASSERT_OK_AND_ASSIGN(int port, dapq::testing::PickFreePort());
  const std::string endpoint = absl::StrCat("127.0.0.1:", port);
  ASSERT_OK_AND_ASSIGN(auto client, EtcdClient::FromUrl("etcd://" + endpoint));
  EXPECT_THAT(client->Get("/k").status(),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr(endpoint)));
  EXPECT_THAT(client->LeaseGrant(5).status(),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr(endpoint)));
}

TEST(EtcdClientTest, FailsOverToTheNextEndpoint) {
  ASSERT_OK_AND_ASSIGN(auto etcd, EtcdServer::Start());
  ASSERT_OK_AND_ASSIGN(int dead, dapq::testing::PickFreePort());
  auto client = ClientFor({absl::StrCat("127.0.0.1:", dead), etcd->endpoint()});
  ASSERT_THAT(client->Put("/f/k", "v").status(), IsOk());
  ASSERT_OK_AND_ASSIGN(std::optional<EtcdKeyValue> kv, client->Get("/f/k"));
  EXPECT_EQ(kv->value, "v");
  // The live endpoint is now preferred; when it dies too, both are named.
  etcd->Kill();
  EXPECT_THAT(client->Get("/f/k").status(),
              StatusIs(absl::StatusCode::kUnavailable,
                       ::testing::AllOf(HasSubstr(etcd->endpoint()),
                                        HasSubstr(absl::StrCat("127.0.0.1:", dead)))));
}

TEST(EtcdClientTest, SilentEndpointHitsThePerCallDeadline) {
  // A listening socket that never accepts: connecting succeeds (the kernel completes the
  // handshake), the request is never answered.
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(::listen(fd, 16), 0);
  ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  const std::string endpoint = absl::StrCat("127.0.0.1:", ntohs(addr.sin_port));
  auto client = ClientFor({endpoint}, absl::Seconds(30));
  const absl::Time start = absl::Now();
  EXPECT_THAT(client->Get("/k", absl::Milliseconds(300)).status(),
              StatusIs(absl::StatusCode::kDeadlineExceeded, HasSubstr(endpoint)));
  EXPECT_LT(absl::Now() - start, absl::Seconds(3));
  ::close(fd);
}

}  // namespace
}  // namespace dapq::cluster
