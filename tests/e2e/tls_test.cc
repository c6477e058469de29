// File: tests/e2e/tls_test.cc
// TLS on a real local cluster (`dapq serve --tls auto`'s throwaway CA, made with openssl): a
// plaintext client cannot talk to it; a client that trusts the CA can; the internal Registry
// refuses a certificate from another CA and a client without one, so nobody outside the cluster
// can register a group; KvPeer behind mutual TLS serves only certificates of its CA.
#include "common/tls.h"

#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "dapq/v1/admin.grpc.pb.h"
#include "dapq/v1/inference.grpc.pb.h"
#include "dapq/v1/worker.grpc.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kvstore/grpc_peer_tier.h"
#include "kvstore/memory_tier.h"
#include "kvstore/peer_service.h"
#include "launcher/local_cluster.h"
#include "tests/util/test_paths.h"

namespace dapq {
namespace {

TlsFiles Files(const std::string& cert, const std::string& key, const std::string& ca) {
  TlsFiles f;
  f.cert = cert;
  f.key = key;
  f.ca = ca;
  return f;
}

std::shared_ptr<grpc::Channel> Channel(const std::string& address, const TlsFiles& files) {
  auto creds = MakeChannelCredentials(files);
  EXPECT_TRUE(creds.ok()) << creds.status();
  return grpc::CreateChannel(address, *creds);
}

grpc::Status Status(const std::string& address, const TlsFiles& files) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  dapq::v1::ClusterStatusResponse response;
  return dapq::v1::Admin::NewStub(Channel(address, files))->ClusterStatus(&context, {}, &response);
}

grpc::Status Register(const std::string& address, const TlsFiles& files) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  dapq::v1::HeartbeatRequest beat;
  beat.mutable_status()->set_group_id("impostor");
  beat.mutable_status()->set_address("127.0.0.1:1");
  beat.mutable_status()->set_healthy(true);
  dapq::v1::HeartbeatResponse answer;
  return dapq::v1::Registry::NewStub(Channel(address, files))->Heartbeat(&context, beat, &answer);
}

class TlsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const std::string dir = testing::MakeTempDir("tls_test");
    auto cluster_tls = launcher::MakeThrowawayTls(dir + "/tls");
    ASSERT_TRUE(cluster_tls.ok()) << cluster_tls.status();
    auto other = launcher::MakeThrowawayTls(dir + "/other");  // another CA, same names
    ASSERT_TRUE(other.ok()) << other.status();
    tls_ = new TlsFiles(*cluster_tls);
    other_ = new TlsFiles(*other);
    launcher::LocalClusterOptions o;
    o.bin_dir = launcher::ProgramDir() + "/../cli";
    o.model = testing::Stories260KPath();
    o.tokenizer = testing::Tok512Path();
    o.groups = 1;
    o.tp = 2;
    o.work_dir = dir;
    o.heartbeat_ms = 100;
    o.tls = *tls_;
    auto cluster = launcher::LocalCluster::Start(o);
    ASSERT_TRUE(cluster.ok()) << cluster.status();
    cluster_ = cluster->release();
    auto ready = cluster_->WaitReady(std::chrono::seconds(60));  // over TLS, as the launcher
    ASSERT_TRUE(ready.ok()) << ready.status();
  }
  static void TearDownTestSuite() {
    delete cluster_;
    delete tls_;
    delete other_;
  }
  static std::string Internal() { return absl::StrCat("127.0.0.1:", cluster_->internal_port()); }

  static launcher::LocalCluster* cluster_;
  static TlsFiles* tls_;
  static TlsFiles* other_;
};

launcher::LocalCluster* TlsTest::cluster_ = nullptr;
TlsFiles* TlsTest::tls_ = nullptr;
TlsFiles* TlsTest::other_ = nullptr;

TEST_F(TlsTest, PlaintextClientsCannotTalkToATlsCluster) {
  const grpc::Status s = Status(cluster_->address(), TlsFiles{});
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << s.error_message();
}

TEST_F(TlsTest, ClientsThatTrustTheCaAreServed) {
  EXPECT_TRUE(Status(cluster_->address(), Files("", "", tls_->ca)).ok());
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  dapq::v1::GenerateRequest request;
  request.set_text("Once upon a time");
  request.set_max_new_tokens(4);
  dapq::v1::CompleteResponse response;
  const grpc::Status s =
      dapq::v1::Inference::NewStub(Channel(cluster_->address(), Files("", "", tls_->ca)))
          ->Complete(&context, request, &response);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(response.token_ids_size(), 4);
  // A client that trusts another CA does not trust this server.
  EXPECT_EQ(Status(cluster_->address(), Files("", "", other_->ca)).error_code(),
            grpc::StatusCode::UNAVAILABLE);
}

TEST_F(TlsTest, OnlyTheClustersCertificatesMayRegisterAGroup) {
  ASSERT_GT(cluster_->internal_port(), 0);
  // Another CA's certificate (trusting the cluster's CA, so only the client side differs).
  EXPECT_EQ(Register(Internal(), Files(other_->cert, other_->key, tls_->ca)).error_code(),
            grpc::StatusCode::UNAVAILABLE);
  // No certificate at all.
  EXPECT_EQ(Register(Internal(), Files("", "", tls_->ca)).error_code(),
            grpc::StatusCode::UNAVAILABLE);
  // Plaintext.
  EXPECT_EQ(Register(Internal(), TlsFiles{}).error_code(), grpc::StatusCode::UNAVAILABLE);
}

TEST_F(TlsTest, KvPeerServesOnlyCertificatesOfItsCa) {
  auto backing = *kvstore::MemoryTier::Create({"peer", 1 << 20, 0.9, 0.7});
  kvstore::KvPeerService service(backing.get());
  grpc::ServerBuilder builder;
  int port = 0;
  auto creds = MakeServerCredentials(*tls_, /*require_client_cert=*/true, "127.0.0.1:0", false);
  ASSERT_TRUE(creds.ok()) << creds.status();
  builder.AddListeningPort("127.0.0.1:0", *creds, &port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_GT(port, 0);
  kvstore::GrpcPeerTierOptions o;
  o.address = absl::StrCat("127.0.0.1:", port);
  o.timeout_ms = 5000;
  const std::string block(256, 'k');

  ASSERT_TRUE(SetClientTls(Files(other_->cert, other_->key, tls_->ca)).ok());
  auto stranger = kvstore::GrpcPeerTier::Create(o);
  ASSERT_TRUE(stranger.ok());
  EXPECT_EQ((*stranger)->Put("s.b0", block).code(), absl::StatusCode::kUnavailable);
  EXPECT_FALSE(backing->Contains("s.b0"));

  ASSERT_TRUE(SetClientTls(*tls_).ok());
  auto member = kvstore::GrpcPeerTier::Create(o);
  ASSERT_TRUE(member.ok());
  EXPECT_TRUE((*member)->Put("s.b0", block).ok());
  EXPECT_TRUE(backing->Contains("s.b0"));
  ASSERT_TRUE(SetClientTls(TlsFiles{}).ok());
  server->Shutdown();
}

TEST(TlsConfigTest, PlaintextOnlyOnLoopbackUnlessAllowed) {
  EXPECT_TRUE(IsLoopbackAddress("127.0.0.1:50051"));
  EXPECT_TRUE(IsLoopbackAddress("localhost:1"));
  EXPECT_TRUE(IsLoopbackAddress("[::1]:9"));
  EXPECT_FALSE(IsLoopbackAddress("0.0.0.0:50051"));
  EXPECT_FALSE(IsLoopbackAddress("10.1.2.3:50051"));
  auto refused = MakeServerCredentials(TlsFiles{}, false, "0.0.0.0:50051", false);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(refused.status().message()), ::testing::HasSubstr("--tls_cert"));
  EXPECT_TRUE(MakeServerCredentials(TlsFiles{}, false, "0.0.0.0:50051", true).ok());
  EXPECT_EQ(
      MakeServerCredentials(Files("a.crt", "", ""), false, "127.0.0.1:1", false).status().code(),
      absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MakeChannelCredentials(Files("", "", "/nonexistent/ca.crt")).status().code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace dapq
