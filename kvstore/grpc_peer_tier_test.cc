// File: kvstore/grpc_peer_tier_test.cc
// The gRPC peer tier against a real KvPeer server on 127.0.0.1 (port chosen by the kernel):
// round trips, a store spilling to the peer, the peer going away mid-transfer (Unavailable, the
// blocks stay on the upper tiers), corruption on the peer (DataLoss), bad keys; OpenRemoteTier's
// URLs and key prefixes.
#include "kvstore/grpc_peer_tier.h"

#include <grpcpp/grpcpp.h>

#include <random>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kvstore/block_codec.h"
#include "kvstore/kv_store.h"
#include "kvstore/memory_tier.h"
#include "kvstore/peer_service.h"
#include "kvstore/remote_tier.h"
#include "tests/util/kv_blocks.h"
#include "tests/util/status_matchers.h"

namespace dapq::kvstore {
namespace {
using ::dapq::testing::IsOk;
using ::dapq::testing::StatusIs;

std::string Block(uint64_t seed) { return dapq::testing::TestBlock(seed); }

// A peer: a memory tier served over gRPC on loopback.
class Peer {
 public:
  Peer() {
    backing_ = *MemoryTier::Create({"peer-host", 1 << 20, 0.9, 0.7});
    service_ = std::make_unique<KvPeerService>(backing_.get());
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(service_.get());
    server_ = builder.BuildAndStart();
  }
  ~Peer() { Stop(); }
  void Stop() {
    if (server_) server_->Shutdown();
    server_.reset();
  }
  std::string address() const { return absl::StrCat("127.0.0.1:", port_); }
  MemoryTier& backing() { return *backing_; }

 private:
  std::unique_ptr<MemoryTier> backing_;
  std::unique_ptr<KvPeerService> service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

std::unique_ptr<GrpcPeerTier> Client(const std::string& address) {
  GrpcPeerTierOptions o;
  o.address = address;
  o.timeout_ms = 2000;
  auto t = GrpcPeerTier::Create(o);
  EXPECT_TRUE(t.ok()) << t.status();
  return *std::move(t);
}

TEST(GrpcPeerTierTest, RoundTripThroughARealServer) {
  Peer peer;
  auto tier = Client(peer.address());
  ASSERT_THAT(tier->Put("s.b0", Block(1)), IsOk());
  EXPECT_TRUE(peer.backing().Contains("s.b0"));
  ASSERT_OK_AND_ASSIGN(std::string got, tier->Get("s.b0"));
  EXPECT_EQ(got, Block(1));
  ASSERT_THAT(tier->Erase("s.b0"), IsOk());
  EXPECT_FALSE(peer.backing().Contains("s.b0"));
  EXPECT_THAT(tier->Put("bad/key", Block(2)),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("key")));
}

// Two workers share one peer through the URL form the binaries take (--kv_remote): their
// prefixes keep the same key apart, and each sees only its own.
TEST(RemoteTierTest, GrpcUrlsWithPrefixesShareOnePeer) {
  Peer peer;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Tier> a,
                       OpenRemoteTier({"grpc://" + peer.address(), 1 << 20, "g0-r0"}));
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Tier> b,
                       OpenRemoteTier({"grpc://" + peer.address(), 1 << 20, "g1-r0"}));
  EXPECT_EQ(a->options().name, "remote");
  ASSERT_THAT(a->Put("s.b0", Block(1)), IsOk());
  ASSERT_THAT(b->Put("s.b0", Block(2)), IsOk());
  EXPECT_TRUE(peer.backing().Contains("g0-r0.s.b0"));
  EXPECT_TRUE(peer.backing().Contains("g1-r0.s.b0"));
  ASSERT_OK_AND_ASSIGN(std::string got_a, a->Get("s.b0"));
  ASSERT_OK_AND_ASSIGN(std::string got_b, b->Get("s.b0"));
  EXPECT_EQ(got_a, Block(1));
  EXPECT_EQ(got_b, Block(2));
  EXPECT_EQ(a->Keys(), std::vector<std::string>{"s.b0"});
  ASSERT_THAT(a->Erase("s.b0"), IsOk());
  EXPECT_FALSE(peer.backing().Contains("g0-r0.s.b0"));
  EXPECT_TRUE(peer.backing().Contains("g1-r0.s.b0"));
}

TEST(RemoteTierTest, MalformedUrlsNameTheFlag) {
  for (const char* url : {"", "redis://", "redis://host", "grpc://:50", "grpc://h:0",
                          "grpc://h:99999", "http://h:1", "grpc://h:x"}) {
    EXPECT_THAT(OpenRemoteTier({url, 1 << 20, ""}).status(),
                StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("kv_remote")))
        << url;
  }
  EXPECT_THAT(OpenRemoteTier({"grpc://h:1", 1 << 20, "bad/prefix"}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
  // Nothing listens on the port: Redis is contacted at once and says so.
  EXPECT_THAT(OpenRemoteTier({"redis://127.0.0.1:1", 1 << 20, ""}).status(),
              StatusIs(absl::StatusCode::kUnavailable));
}

TEST(GrpcPeerTierTest, CorruptionOnThePeerIsDataLoss) {
  Peer peer;
  auto tier = Client(peer.address());
  ASSERT_THAT(tier->Put("k", Block(3)), IsOk());
  std::string bad = Block(3);
  bad[50] ^= 1;
  ASSERT_THAT(peer.backing().Put("k", bad), IsOk());  // bit rot on the peer
  EXPECT_THAT(tier->Get("k"),
              StatusIs(absl::StatusCode::kDataLoss, ::testing::HasSubstr("verification")));
}

TEST(GrpcPeerTierTest, StoreSpillsToThePeerAndSurvivesItGoingAway) {
  Peer peer;
  auto remote = Client(peer.address());
  ASSERT_OK_AND_ASSIGN(auto store, KvStore::Open(dapq::testing::SmallStoreOver(remote.get())));
  for (int i = 0; i < 8; ++i) ASSERT_THAT(store->Put("s", absl::StrCat("s.", i), Block(i)), IsOk());
  ASSERT_THAT(store->Spill(), IsOk());
  EXPECT_GT(store->Stats()[2].blocks, 0);
  for (int i = 0; i < 8; ++i) {
    ASSERT_OK_AND_ASSIGN(std::string got, store->Get(absl::StrCat("s.", i)));
    EXPECT_EQ(got, Block(i));
  }
  for (int i = 8; i < 12; ++i)
    ASSERT_THAT(store->Put("t", absl::StrCat("t.", i), Block(i)), IsOk());
  peer.Stop();
  EXPECT_THAT(store->Spill(),
              StatusIs(absl::StatusCode::kUnavailable, ::testing::HasSubstr("peer")));
  for (int i = 8; i < 12; ++i) {
    ASSERT_OK_AND_ASSIGN(std::string got, store->Get(absl::StrCat("t.", i)));
    EXPECT_EQ(got, Block(i));
  }
}

}  // namespace
}  // namespace dapq::kvstore
