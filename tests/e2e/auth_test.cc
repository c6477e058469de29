// File: tests/e2e/auth_test.cc
// Authentication and tenant separation on a real local cluster (coordinator and worker
// processes) started with an --auth_token_file: calls without a token or with a wrong one are
// UNAUTHENTICATED on every public service and on the HTTP API (401); a tenant's sessions and
// batch jobs are invisible to another tenant (its "chat-1" is another session; its job ids are
// NOT_FOUND); the worker groups' Registry is not served on the public port; batch files outside
// the coordinator's --batch_dir (directly, through "..", through a link) are refused.
#include <grpcpp/grpcpp.h>

#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "common/auth_token.h"
#include "dapq/v1/admin.grpc.pb.h"
#include "dapq/v1/batch.grpc.pb.h"
#include "dapq/v1/inference.grpc.pb.h"
#include "dapq/v1/worker.grpc.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "launcher/local_cluster.h"
#include "tests/util/run_command.h"
#include "tests/util/test_paths.h"

namespace dapq {
namespace {

using ::testing::HasSubstr;

constexpr char kAlice[] = "alice-token-0123456789";
constexpr char kBob[] = "bob-token-9876543210";

class AuthTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const std::string dir = testing::MakeTempDir("auth_test");
    std::ofstream(dir + "/tokens.txt")
        << "# tenant token\nalice " << kAlice << "\nbob " << kBob << "\n";
    launcher::LocalClusterOptions o;
    o.bin_dir = launcher::ProgramDir() + "/../cli";
    o.model = testing::Stories260KPath();
    o.tokenizer = testing::Tok512Path();
    o.groups = 1;
    o.tp = 1;
    o.work_dir = dir;
    o.heartbeat_ms = 100;
    o.http_port = 0;
    o.auth_token_file = dir + "/tokens.txt";
    batch_dir_ = new std::string(dir + "/batches");
    std::filesystem::create_directories(*batch_dir_);
    std::ofstream(*batch_dir_ + "/questions.jsonl") << "{\"prompt\": \"Once upon\"}\n";
    std::filesystem::create_symlink(dir + "/tokens.txt", *batch_dir_ + "/tokens_link.jsonl");
    o.batch_dir = *batch_dir_;
    auto cluster = launcher::LocalCluster::Start(o);
    ASSERT_TRUE(cluster.ok()) << cluster.status();
    cluster_ = cluster->release();
    auto ready = cluster_->WaitReady(std::chrono::seconds(60));  // as alice, the first tenant
    ASSERT_TRUE(ready.ok()) << ready.status();
    channel_ = new std::shared_ptr<grpc::Channel>(
        grpc::CreateChannel(cluster_->address(), grpc::InsecureChannelCredentials()));
  }
  static void TearDownTestSuite() {
    delete batch_dir_;
    delete channel_;
    delete cluster_;
  }

  // A call context carrying `token` ("" = none).
  static std::unique_ptr<grpc::ClientContext> As(const std::string& token) {
    auto context = std::make_unique<grpc::ClientContext>();
    AttachToken(context.get(), token);
    context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    return context;
  }
  static grpc::Status Complete(const std::string& token, const dapq::v1::GenerateRequest& request,
                               dapq::v1::CompleteResponse* response) {
    return dapq::v1::Inference::NewStub(*channel_)->Complete(As(token).get(), request, response);
  }
  static dapq::v1::GenerateRequest Turn(const std::string& session, const std::string& text) {
    dapq::v1::GenerateRequest r;
    r.set_text(text);
    r.set_max_new_tokens(4);
    r.set_session_id(session);
    r.set_ignore_stop_tokens(true);
    return r;
  }

  static launcher::LocalCluster* cluster_;
  static std::shared_ptr<grpc::Channel>* channel_;
  static std::string* batch_dir_;
};
std::string* AuthTest::batch_dir_ = nullptr;

launcher::LocalCluster* AuthTest::cluster_ = nullptr;
std::shared_ptr<grpc::Channel>* AuthTest::channel_ = nullptr;

TEST_F(AuthTest, EveryPublicServiceNeedsAValidToken) {
  for (const std::string& token : {std::string(), std::string("not-a-valid-token-xx")}) {
    const char* expected = token.empty() ? "missing credentials" : "invalid token";
    dapq::v1::CompleteResponse completion;
    grpc::Status s = Complete(token, Turn("", "Once upon a time"), &completion);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED) << s.error_message();
    EXPECT_THAT(s.error_message(), HasSubstr(expected));

    dapq::v1::ClusterStatusResponse status;
    s = dapq::v1::Admin::NewStub(*channel_)->ClusterStatus(As(token).get(), {}, &status);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED);

    dapq::v1::SubmitBatchRequest submit;
    submit.add_items()->set_text("x");
    dapq::v1::SubmitBatchResponse submitted;
    s = dapq::v1::Batch::NewStub(*channel_)->SubmitBatch(As(token).get(), submit, &submitted);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED);

    dapq::v1::ListBatchesResponse listed;
    s = dapq::v1::Batch::NewStub(*channel_)->ListBatches(As(token).get(), {}, &listed);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  }
  dapq::v1::CompleteResponse ok;
  EXPECT_TRUE(Complete(kBob, Turn("", "Once upon a time"), &ok).ok());
}

TEST_F(AuthTest, TheHttpApiNeedsAValidTokenToo) {
  const std::string url = absl::StrCat("http://127.0.0.1:", cluster_->http_port());
  const std::string body = "-d '{\"prompt\": \"Once\", \"max_tokens\": 2}' ";
  testing::CommandResult r =
      testing::RunCommand("curl -sS -w ' HTTP %{http_code}' -H 'Content-Type: application/json' " +
                              body + url + "/v1/completions",
                          false);
  EXPECT_THAT(r.out, HasSubstr("HTTP 401"));
  EXPECT_THAT(r.out, HasSubstr("invalid_api_key"));
  r = testing::RunCommand("curl -sS -w ' HTTP %{http_code}' -H 'Authorization: Bearer " +
                              std::string(kBob) + "' -H 'Content-Type: application/json' " + body +
                              url + "/v1/completions",
                          false);
  EXPECT_THAT(r.out, HasSubstr("HTTP 200"));
  r = testing::RunCommand("curl -sS -w ' HTTP %{http_code}' " + url + "/health", false);
  EXPECT_THAT(r.out, HasSubstr("HTTP 200"));  // probes need no token
}

TEST_F(AuthTest, ATenantsSessionIsItsOwn) {
  dapq::v1::CompleteResponse a1, b1, a2;
  ASSERT_TRUE(Complete(kAlice, Turn("chat-1", "Once upon a time, Lily"), &a1).ok());
  const int after_a1 = a1.summary().next_position();
  ASSERT_GT(after_a1, 4);
  // Bob's "chat-1" is another session: it starts at position 0, and does not end Alice's.
  ASSERT_TRUE(Complete(kBob, Turn("chat-1", "The dog"), &b1).ok());
  EXPECT_EQ(b1.summary().next_position(), b1.summary().prompt_tokens() + 4);
  ASSERT_TRUE(Complete(kAlice, Turn("chat-1", " and then"), &a2).ok());
  EXPECT_EQ(a2.summary().next_position(), after_a1 + a2.summary().prompt_tokens() + 4);
}

TEST_F(AuthTest, ATenantsBatchJobsAreInvisibleToOthers) {
  auto stub = dapq::v1::Batch::NewStub(*channel_);
  dapq::v1::SubmitBatchRequest submit;
  submit.add_items()->set_text("Lily saw a cat");
  submit.set_name("alice-job");
  dapq::v1::SubmitBatchResponse submitted;
  ASSERT_TRUE(stub->SubmitBatch(As(kAlice).get(), submit, &submitted).ok());
  const std::string job = submitted.job_id();

  dapq::v1::GetBatchRequest get;
  get.set_job_id(job);
  dapq::v1::BatchJob seen;
  EXPECT_TRUE(stub->GetBatch(As(kAlice).get(), get, &seen).ok());
  EXPECT_EQ(seen.name(), "alice-job");
  grpc::Status s = stub->GetBatch(As(kBob).get(), get, &seen);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(s.error_message(), "job " + job + " not found");  // as for an id nobody has

  dapq::v1::CancelBatchRequest cancel;
  cancel.set_job_id(job);
  EXPECT_EQ(stub->CancelBatch(As(kBob).get(), cancel, &seen).error_code(),
            grpc::StatusCode::NOT_FOUND);
  dapq::v1::StreamBatchResultsRequest results;
  results.set_job_id(job);
  auto context = As(kBob);
  auto reader = stub->StreamBatchResults(context.get(), results);
  dapq::v1::BatchItemResult item;
  EXPECT_FALSE(reader->Read(&item));
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::NOT_FOUND);

  dapq::v1::ListBatchesResponse listed;
  ASSERT_TRUE(stub->ListBatches(As(kBob).get(), {}, &listed).ok());
  for (const auto& j : listed.jobs()) EXPECT_NE(j.job_id(), job);
  ASSERT_TRUE(stub->ListBatches(As(kAlice).get(), {}, &listed).ok());
  bool found = false;
  for (const auto& j : listed.jobs()) found = found || j.job_id() == job;
  EXPECT_TRUE(found);
}

TEST_F(AuthTest, BatchFilesOutsideTheBatchDirectoryAreRefused) {
  auto stub = dapq::v1::Batch::NewStub(*channel_);
  auto submit = [&](const std::string& jsonl, const std::string& output) {
    dapq::v1::SubmitBatchRequest request;
    request.set_jsonl_path(jsonl);
    request.set_output_path(output);
    request.mutable_defaults()->set_max_new_tokens(2);
    dapq::v1::SubmitBatchResponse response;
    return stub->SubmitBatch(As(kAlice).get(), request, &response);
  };
  const std::string& dir = *batch_dir_;
  // Outside the directory: directly, through "..", and through a link that leads out.
  for (const std::string& path :
       {std::string("/etc/passwd"), dir + "/../tokens.txt", dir + "/tokens_link.jsonl"}) {
    SCOPED_TRACE(path);
    const grpc::Status s = submit(path, "");
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
    EXPECT_THAT(s.error_message(), ::testing::HasSubstr("jsonl_path"));
    EXPECT_THAT(s.error_message(), ::testing::Not(::testing::HasSubstr(kAlice)));  // nothing read
  }
  const grpc::Status out = submit(dir + "/questions.jsonl", "/tmp/dapq_results.jsonl");
  EXPECT_EQ(out.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << out.error_message();
  EXPECT_THAT(out.error_message(), ::testing::HasSubstr("output_path"));
  // Inside it, both are accepted.
  const grpc::Status in = submit(dir + "/questions.jsonl", dir + "/results.jsonl");
  EXPECT_TRUE(in.ok()) << in.error_message();
}

TEST_F(AuthTest, WorkerGroupsCannotRegisterOnThePublicPort) {
  dapq::v1::HeartbeatRequest beat;
  beat.mutable_status()->set_group_id("impostor");
  beat.mutable_status()->set_healthy(true);
  dapq::v1::HeartbeatResponse answer;
  const grpc::Status s =
      dapq::v1::Registry::NewStub(*channel_)->Heartbeat(As(kAlice).get(), beat, &answer);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNIMPLEMENTED) << s.error_message();
}

}  // namespace
}  // namespace dapq
