// File: tests/e2e/cluster_test.cc
// Multi-process tests of the service on loopback: a real dapq-coordinator and dapq-worker
// processes (TP groups over Gloo), driven through the public gRPC API. Outputs are compared
// token for token with the in-process engine; faults are real (SIGKILL of a worker rank or the
// coordinator).
#include <grpcpp/grpcpp.h>
#include <signal.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <thread>

#include "absl/strings/str_split.h"
#include "dapq/v1/admin.grpc.pb.h"
#include "dapq/v1/batch.grpc.pb.h"
#include "dapq/v1/inference.grpc.pb.h"
#include "dapq/v1/kv.grpc.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/types.h"
#include "launcher/local_cluster.h"
#include "nlohmann/json.hpp"
#include "tests/util/batch_client.h"
#include "tests/util/run_command.h"
#include "tests/util/status_matchers.h"
#include "tests/util/stored_blocks.h"
#include "tests/util/test_paths.h"
#include "worker/engine.h"
#include "worker/model_loader.h"
#include "worker/service/request_options.h"
#include "worker/session_store.h"
#include "worker/tokenizer.h"

namespace dapq {
namespace {

using ::testing::HasSubstr;

constexpr char kStory[] =
    "Once upon a time, there was a little girl named Lily. She loved to play outside in the "
    "park with her friends. One day, she saw a big red ball under a tree";

std::string BinDir() { return launcher::ProgramDir() + "/../cli"; }

// Tokens the in-process engine (tp=1) generates for `request` on `model`, the way a worker
// interprets the request (same conversion code).
// The in-process engine's tokens for `request` (tp=1), with the weights and KV cache in the given
// types (the workers' --weights_dtype / --kv_dtype).
std::vector<int> Reference(const std::string& model, const dapq::v1::GenerateRequest& request,
                           bool with_tokenizer = true, const std::string& weights_dtype = "fp32",
                           kernels::DType kv_dtype = kernels::DType::kF32) {
  auto weights = worker::LoadModelAs(model, weights_dtype);
  EXPECT_TRUE(weights.ok()) << weights.status();
  auto m = std::make_shared<const worker::ModelWeights>(std::move(*weights));
  worker::EngineOptions o;
  o.kv_dtype = kv_dtype;
  auto engine = worker::Engine::Create(m, o);
  EXPECT_TRUE(engine.ok());
  std::unique_ptr<worker::Tokenizer> tok;
  if (with_tokenizer) {
    tok = std::make_unique<worker::Tokenizer>(
        *worker::Tokenizer::Load(testing::Tok512Path(), m->config.vocab_size));
  }
  auto prompt = worker::service::PromptTokens(request, worker::service::PromptCodec{tok.get()},
                                              m->config.vocab_size, false);
  EXPECT_TRUE(prompt.ok()) << prompt.status();
  auto options = worker::service::ToGenerateOptions(request);
  EXPECT_TRUE(options.ok()) << options.status();
  auto result = (*engine)->Generate(*prompt, *options);
  EXPECT_TRUE(result.ok()) << result.status();
  return result->tokens;
}

dapq::v1::GenerateRequest StoryRequest(int max_new_tokens, const std::string& method = "",
                                       int budget = 0) {
  dapq::v1::GenerateRequest r;
  r.set_text(kStory);
  r.set_max_new_tokens(max_new_tokens);
  if (!method.empty()) {
    r.mutable_compression()->set_method(method);
    r.mutable_compression()->set_budget_tokens(budget);
  }
  return r;
}

struct Completion {
  grpc::Status status;
  dapq::v1::CompleteResponse response;
};

Completion Complete(const std::string& address, const dapq::v1::GenerateRequest& request) {
  auto stub = dapq::v1::Inference::NewStub(
      grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  Completion c;
  c.status = stub->Complete(&context, request, &c.response);
  return c;
}

std::vector<int> Tokens(const Completion& c) {
  return std::vector<int>(c.response.token_ids().begin(), c.response.token_ids().end());
}

// `tweak` (optional) adjusts the options before the start.
std::unique_ptr<launcher::LocalCluster> StartCluster(
    const std::string& name, const std::string& model, int groups, int tp, bool tokenizer = true,
    int max_in_flight = 64,
    const std::function<void(launcher::LocalClusterOptions&)>& tweak = nullptr) {
  launcher::LocalClusterOptions o;
  o.bin_dir = BinDir();
  o.model = model;
  if (tokenizer) o.tokenizer = testing::Tok512Path();
  o.groups = groups;
  o.tp = tp;
  o.work_dir = testing::MakeTempDir(name);
  o.heartbeat_ms = 100;
  o.max_in_flight = max_in_flight;
  if (tweak) tweak(o);
  auto cluster = launcher::LocalCluster::Start(o);
  EXPECT_TRUE(cluster.ok()) << cluster.status();
  auto ready = (*cluster)->WaitReady(std::chrono::seconds(60));
  EXPECT_TRUE(ready.ok()) << ready.status();
  return std::move(*cluster);
}

class ClusterTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    cluster_ = StartCluster("cluster_test", testing::Stories260KPath(), 2, 2).release();
  }
  static void TearDownTestSuite() {
    delete cluster_;
    cluster_ = nullptr;
  }
  static launcher::LocalCluster* cluster_;
};
launcher::LocalCluster* ClusterTest::cluster_ = nullptr;

TEST_F(ClusterTest, Tp2GroupMatchesTheInProcessEngineWithAndWithoutCompression) {
  for (const auto& [method, budget] :
       std::vector<std::pair<std::string, int>>{{"", 0}, {"dapq", 8}, {"snapkv", 12}}) {
    const dapq::v1::GenerateRequest request = StoryRequest(80, method, budget);
    const Completion c = Complete(cluster_->address(), request);
    ASSERT_TRUE(c.status.ok()) << c.status.error_message();
    EXPECT_EQ(Tokens(c), Reference(testing::Stories260KPath(), request)) << method;
    EXPECT_EQ(c.response.summary().generated_tokens(), c.response.token_ids_size());
    if (!method.empty()) {
      EXPECT_LT(c.response.summary().kv_kept_slots(), c.response.summary().kv_full_slots());
      EXPECT_EQ(c.response.summary().kv_kept_slots(), budget * 5 * 4);  // layers x KV heads
    }
  }
}

TEST_F(ClusterTest, TwoGroupsServeConcurrentStreamsAndSessionsStayOnTheirGroup) {
  const dapq::v1::GenerateRequest request = StoryRequest(60, "dapq", 16);
  const std::vector<int> expected = Reference(testing::Stories260KPath(), request);
  std::vector<Completion> results(6);
  std::vector<std::thread> threads;
  for (auto& r : results) {
    threads.emplace_back([&r, &request] { r = Complete(cluster_->address(), request); });
  }
  for (auto& t : threads) t.join();
  std::set<std::string> groups;
  for (const Completion& c : results) {
    ASSERT_TRUE(c.status.ok()) << c.status.error_message();
    EXPECT_EQ(Tokens(c), expected);
    groups.insert(c.response.summary().group_id());
  }
  EXPECT_EQ(groups.size(), 2u) << "six concurrent requests should use both groups";

  // A session: every turn on the same group, positions continuing.
  dapq::v1::GenerateRequest turn = StoryRequest(20);
  turn.set_session_id("story-1");
  const Completion first = Complete(cluster_->address(), turn);
  ASSERT_TRUE(first.status.ok()) << first.status.error_message();
  turn.set_text(" The end.");
  for (int i = 0; i < 3; ++i) {
    const Completion next = Complete(cluster_->address(), turn);
    ASSERT_TRUE(next.status.ok()) << next.status.error_message();
    EXPECT_EQ(next.response.summary().group_id(), first.response.summary().group_id());
    EXPECT_GT(next.response.summary().next_position(), first.response.summary().next_position());
  }
}

TEST_F(ClusterTest, BadRequestsNameTheField) {
  struct Case {
    std::string name;
    std::function<void(dapq::v1::GenerateRequest&)> edit;
    grpc::StatusCode code;
    std::string field;
  };
  const std::vector<Case> cases = {
      {"empty prompt", [](auto& r) { r.set_text(""); }, grpc::StatusCode::INVALID_ARGUMENT,
       "prompt.text"},
      {"no prompt", [](auto& r) { r.clear_prompt(); }, grpc::StatusCode::INVALID_ARGUMENT,
       "prompt"},
      {"over the context",
       [](auto& r) {
         for (int i = 0; i < 600; ++i) r.mutable_token_ids()->add_ids(5);
       },
       grpc::StatusCode::OUT_OF_RANGE, "context limit"},
      {"long text",
       [](auto& r) {
         std::string t;
         for (int i = 0; i < 200; ++i) t += "Lily went to the park. ";
         r.set_text(t);
       },
       grpc::StatusCode::OUT_OF_RANGE, "context limit"},
      {"unknown method", [](auto& r) { r.mutable_compression()->set_method("magic"); },
       grpc::StatusCode::INVALID_ARGUMENT, "compression.method"},
      {"budget zero", [](auto& r) { r.mutable_compression()->set_method("dapq"); },
       grpc::StatusCode::INVALID_ARGUMENT, "compression.budget_tokens"},
      {"budget negative",
       [](auto& r) {
         r.mutable_compression()->set_method("dapq");
         r.mutable_compression()->set_budget_tokens(-4);
       },
       grpc::StatusCode::INVALID_ARGUMENT, "compression.budget_tokens"},
      {"bad session", [](auto& r) { r.set_session_id("no spaces allowed"); },
       grpc::StatusCode::INVALID_ARGUMENT, "session_id"},
      {"negative max_new_tokens", [](auto& r) { r.set_max_new_tokens(-1); },
       grpc::StatusCode::INVALID_ARGUMENT, "max_new_tokens"},
      {"token id out of vocab",
       [](auto& r) {
         r.mutable_token_ids()->add_ids(1);
         r.mutable_token_ids()->add_ids(100000);
       },
       grpc::StatusCode::INVALID_ARGUMENT, "prompt.token_ids[1]"},
      {"oversized message", [](auto& r) { r.set_text(std::string(5 << 20, 'a')); },
       grpc::StatusCode::INVALID_ARGUMENT, "request"},
  };
  for (const Case& c : cases) {
    dapq::v1::GenerateRequest request = StoryRequest(8);
    c.edit(request);
    const Completion result = Complete(cluster_->address(), request);
    EXPECT_EQ(result.status.error_code(), c.code)
        << c.name << ": " << result.status.error_message();
    EXPECT_THAT(result.status.error_message(), HasSubstr(c.field)) << c.name;
  }
}

// Last: it breaks a group of the shared cluster.
TEST_F(ClusterTest, ZKilledWorkerRankGivesUnavailableAndTheOtherGroupTakesOver) {
  auto stub = dapq::v1::Inference::NewStub(
      grpc::CreateChannel(cluster_->address(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  dapq::v1::GenerateRequest request;
  request.mutable_token_ids()->add_ids(1);
  request.set_max_new_tokens(500);
  request.set_ignore_stop_tokens(true);
  auto reader = stub->Generate(&context, request);
  dapq::v1::GenerateResponse response;
  ASSERT_TRUE(reader->Read(&response));  // streaming: the group is mid-request
  ASSERT_GT(response.token_ids_size(), 0);
  // Which group? Ask the coordinator: the one with a request in flight.
  auto admin = dapq::v1::Admin::NewStub(
      grpc::CreateChannel(cluster_->address(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext status_context;
  dapq::v1::ClusterStatusResponse status;
  ASSERT_TRUE(admin->ClusterStatus(&status_context, {}, &status).ok());
  int busy = -1;
  for (const auto& g : status.groups()) {
    if (g.in_flight() > 0) busy = std::stoi(g.group_id().substr(1));
  }
  ASSERT_GE(busy, 0);
  cluster_->worker(busy, 1).Signal(SIGKILL);
  while (reader->Read(&response)) {
  }
  const grpc::Status s = reader->Finish();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr(absl::StrCat("g", busy)));

  // The group is marked down; requests (and batch items) go to the other group.
  grpc::ClientContext after_context;
  ASSERT_TRUE(admin->ClusterStatus(&after_context, {}, &status).ok());
  for (const auto& g : status.groups()) {
    EXPECT_EQ(g.healthy(), g.group_id() != absl::StrCat("g", busy)) << g.group_id();
  }
  const dapq::v1::GenerateRequest story = StoryRequest(30);
  const Completion c = Complete(cluster_->address(), story);
  ASSERT_TRUE(c.status.ok()) << c.status.error_message();
  EXPECT_EQ(c.response.summary().group_id(), absl::StrCat("g", 1 - busy));
  EXPECT_EQ(Tokens(c), Reference(testing::Stories260KPath(), story));

  auto batch = dapq::v1::Batch::NewStub(
      grpc::CreateChannel(cluster_->address(), grpc::InsecureChannelCredentials()));
  dapq::v1::SubmitBatchRequest submit;
  for (int i = 0; i < 4; ++i) *submit.add_items() = story;
  const std::string job = testing::SubmitBatch(*batch, submit);
  ASSERT_FALSE(job.empty());
  const testing::BatchResults results = testing::FollowBatch(*batch, job);
  EXPECT_TRUE(results.status.ok()) << results.status.error_message();
  ASSERT_EQ(results.items.size(), 4u);
  for (const auto& item : results.items) {
    EXPECT_EQ(item.state(), "succeeded") << item.error();
    const nlohmann::json j = nlohmann::json::parse(item.result_json());
    EXPECT_EQ(j["summary"]["group_id"], absl::StrCat("g", 1 - busy));
  }
}

TEST(ClusterBatchTest, BatchItemsOnAKilledGroupAreRerunOnTheOtherGroup) {
  auto cluster = StartCluster("cluster_batch_kill", testing::Stories260KPath(), 2, 2);
  auto channel = grpc::CreateChannel(cluster->address(), grpc::InsecureChannelCredentials());
  auto batch = dapq::v1::Batch::NewStub(channel);
  auto admin = dapq::v1::Admin::NewStub(channel);
  dapq::v1::SubmitBatchRequest submit;
  std::vector<dapq::v1::GenerateRequest> items;
  for (int i = 0; i < 6; ++i) {
    dapq::v1::GenerateRequest r;
    r.mutable_token_ids()->add_ids(1);
    r.mutable_token_ids()->add_ids(200 + i);
    r.set_max_new_tokens(200);
    r.set_ignore_stop_tokens(true);
    items.push_back(r);
    *submit.add_items() = r;
  }
  const std::string job = testing::SubmitBatch(*batch, submit);
  ASSERT_FALSE(job.empty());
  // Kill a rank of g1 while it runs an item.
  bool busy = false;
  for (int i = 0; i < 2000 && !busy; ++i) {
    grpc::ClientContext context;
    dapq::v1::ClusterStatusResponse status;
    ASSERT_TRUE(admin->ClusterStatus(&context, {}, &status).ok());
    for (const auto& g : status.groups())
      busy = busy || (g.group_id() == "g1" && g.in_flight() > 0);
  }
  ASSERT_TRUE(busy);
  cluster->worker(1, 1).Signal(SIGKILL);
  const testing::BatchResults results = testing::FollowBatch(*batch, job);
  ASSERT_TRUE(results.status.ok()) << results.status.error_message();
  EXPECT_EQ(results.items.size(), 6u);
  int retried = 0;
  for (const auto& item : results.items) {
    ASSERT_EQ(item.state(), "succeeded") << item.error();
    const nlohmann::json j = nlohmann::json::parse(item.result_json());
    EXPECT_EQ(j["token_ids"].get<std::vector<int>>(),
              Reference(testing::Stories260KPath(), items[item.index()]));
    retried += item.attempts() > 1 ? 1 : 0;
  }
  // Items g1 had not started streaming were retried at once on g0 within their attempt; one it
  // was streaming failed that attempt and ran again (attempts > 1). Either way: every item
  // completed exactly once, with the tokens of an undisturbed run.
  (void)retried;
}

// 40 token ids ((i * stride + offset) % 200) for the synthetic model, max_new_tokens greedy
// tokens past stop tokens, compressed with `method` to 10 tokens per head unless it is empty.
dapq::v1::GenerateRequest SyntheticRequest(int stride, int offset, int max_new_tokens,
                                           const std::string& method) {
  dapq::v1::GenerateRequest request;
  for (int i = 0; i < 40; ++i) request.mutable_token_ids()->add_ids((i * stride + offset) % 200);
  request.set_max_new_tokens(max_new_tokens);
  request.set_ignore_stop_tokens(true);
  if (!method.empty()) {
    request.mutable_compression()->set_method(method);
    request.mutable_compression()->set_budget_tokens(10);
  }
  return request;
}

TEST(ClusterGqaTest, SyntheticGqaGroupOverGlooMatchesTheInProcessEngine) {
  const std::string model = "synthetic:tiny-gqa";
  auto cluster = StartCluster("cluster_gqa", model, 1, 2, /*tokenizer=*/false);
  for (const std::string method : {"", "dapq"}) {
    const dapq::v1::GenerateRequest request = SyntheticRequest(37, 11, 24, method);
    const Completion c = Complete(cluster->address(), request);
    ASSERT_TRUE(c.status.ok()) << c.status.error_message();
    EXPECT_EQ(Tokens(c), Reference(model, request, /*with_tokenizer=*/false)) << method;
  }
}

// Workers started with --weights_dtype bf16 --kv_dtype bf16 (TP=2 over Gloo) generate exactly
// what the in-process engine does with the same types, compressed or not: the flags reach the
// engine of every rank.
TEST(ClusterPrecisionTest, Bf16WeightsAndKvGroupMatchesTheInProcessEngine) {
  const std::string model = "synthetic:tiny-gqa";
  auto cluster = StartCluster("cluster_bf16", model, 1, 2, /*tokenizer=*/false, 64,
                              [](launcher::LocalClusterOptions& o) {
                                o.worker_args = {"--weights_dtype", "bf16", "--kv_dtype", "bf16"};
                              });
  int differs_from_fp32 = 0;
  for (const std::string method : {"", "dapq"}) {
    const dapq::v1::GenerateRequest request = SyntheticRequest(25, 7, 48, method);
    const Completion c = Complete(cluster->address(), request);
    ASSERT_TRUE(c.status.ok()) << c.status.error_message();
    const std::vector<int> bf16 =
        Reference(model, request, /*with_tokenizer=*/false, "bf16", kernels::DType::kBF16);
    EXPECT_EQ(Tokens(c), bf16) << method;
    differs_from_fp32 += bf16 != Reference(model, request, /*with_tokenizer=*/false);
  }
  // Both requests tell the types apart (fp32 generates other tokens for them): a group that
  // ignored the flags would fail above.
  EXPECT_EQ(differs_from_fp32, 2);
}

// Tokens of a multi-turn session on the in-process engine (tp=1): each turn continues the same
// sequence, the last sampled token fed before the next turn, as the worker does.
std::vector<std::vector<int>> ReferenceSession(const std::vector<std::string>& turns,
                                               int max_new_tokens) {
  auto weights = worker::LoadModel(testing::Stories260KPath());
  auto m = std::make_shared<const worker::ModelWeights>(std::move(*weights));
  auto engine = *worker::Engine::Create(m, worker::EngineOptions());
  worker::Tokenizer tok = *worker::Tokenizer::Load(testing::Tok512Path(), m->config.vocab_size);
  auto seq = engine->NewSequence();
  std::vector<std::vector<int>> out;
  for (size_t i = 0; i < turns.size(); ++i) {
    worker::GenerateOptions o;
    o.max_new_tokens = max_new_tokens;
    o.compression.method = worker::compress::Method::kDapq;
    o.compression.budget_tokens = 8;
    auto r = engine->Continue(*seq, tok.Encode(turns[i], /*add_bos=*/i == 0, false), o);
    EXPECT_TRUE(r.ok()) << r.status();
    EXPECT_TRUE(worker::EndSessionTurn(*engine, *seq, *r, "reference", nullptr).ok());
    out.push_back(r->tokens);
  }
  return out;
}

// Session turns run in the continuous batch beside plain streams: four sessions send their three
// turns one after another while the other sessions and plain requests stream; every turn
// continues its session exactly (the in-process reference), and steps batched several sequences.
// TP=2: the session's sequence joins and leaves the batch on both ranks (SESSION_BEGIN/END).
TEST(ClusterSessionTest, SessionTurnsShareTheBatchAndContinueIdentically) {
  auto cluster = StartCluster("cluster_session_batch", testing::Stories260KPath(), 1, 2);
  const std::vector<std::string> turns = {kStory, " Then the dog came.", " They went home."};
  const std::vector<std::vector<int>> expected = ReferenceSession(turns, 24);
  constexpr int kSessions = 4;
  std::vector<std::thread> clients;
  std::vector<std::vector<Completion>> got(kSessions, std::vector<Completion>(turns.size()));
  for (int s = 0; s < kSessions; ++s) {
    clients.emplace_back([&, s] {
      // The turns of one session are sent one after another on one thread, but a plain request
      // from another thread keeps each step busy meanwhile.
      for (size_t t = 0; t < turns.size(); ++t) {
        dapq::v1::GenerateRequest r;
        r.set_text(turns[t]);
        r.set_max_new_tokens(24);
        r.set_session_id(absl::StrCat("batched-", s));
        r.mutable_compression()->set_method("dapq");
        r.mutable_compression()->set_budget_tokens(8);
        got[s][t] = Complete(cluster->address(), r);
      }
    });
  }
  std::vector<Completion> plain(kSessions);
  for (int i = 0; i < kSessions; ++i) {
    clients.emplace_back([&, i] { plain[i] = Complete(cluster->address(), StoryRequest(60)); });
  }
  for (std::thread& t : clients) t.join();
  const std::vector<int> plain_expected = Reference(testing::Stories260KPath(), StoryRequest(60));
  for (int s = 0; s < kSessions; ++s) {
    for (size_t t = 0; t < turns.size(); ++t) {
      ASSERT_TRUE(got[s][t].status.ok()) << got[s][t].status.error_message();
      EXPECT_EQ(Tokens(got[s][t]), expected[t]) << "session " << s << " turn " << t;
    }
    ASSERT_TRUE(plain[s].status.ok()) << plain[s].status.error_message();
    EXPECT_EQ(Tokens(plain[s]), plain_expected) << "plain request " << s;
  }
  const testing::CommandResult metrics = testing::RunCommand(
      absl::StrCat("curl -s http://127.0.0.1:", cluster->worker_metrics_port(0, 0), "/metrics"));
  std::smatch count, single;
  ASSERT_TRUE(std::regex_search(
      metrics.out, count, std::regex("dapq_worker_step_sequences_count\\{[^}]*\\} ([0-9.e+]+)")));
  ASSERT_TRUE(std::regex_search(
      metrics.out, single,
      std::regex("dapq_worker_step_sequences_bucket\\{[^}]*le=\"1\"[^}]*\\} ([0-9.e+]+)")));
  EXPECT_GT(std::stod(count[1].str()), std::stod(single[1].str())) << "no step batched two";
}

TEST(ClusterSessionTest, SessionsSpillThroughTheTiersAndContinueIdentically) {
  auto cluster = StartCluster("cluster_session", testing::Stories260KPath(), 1, 2, true, 64,
                              [](launcher::LocalClusterOptions& o) {
                                // A session of ~100 tokens holds ~60 KiB per rank: tiers overflow.
                                o.kv_device_kib = 96;
                                o.kv_host_kib = 128;
                                // Every turn restores its session from the store.
                                o.kv_resident_kib = 0;
                              });
  const std::vector<std::string> turns = {kStory, " Then the dog came.", " They went home."};
  const std::vector<std::vector<int>> expected = ReferenceSession(turns, 24);
  constexpr int kSessions = 5;
  for (size_t t = 0; t < turns.size(); ++t) {
    for (int s = 0; s < kSessions; ++s) {
      dapq::v1::GenerateRequest r;
      r.set_text(turns[t]);
      r.set_max_new_tokens(24);
      r.set_session_id(absl::StrCat("chat-", s));
      r.mutable_compression()->set_method("dapq");
      r.mutable_compression()->set_budget_tokens(8);
      const Completion c = Complete(cluster->address(), r);
      ASSERT_TRUE(c.status.ok()) << c.status.error_message();
      EXPECT_EQ(Tokens(c), expected[t]) << "session " << s << " turn " << t;
    }
    if (t == 1) {
      // Corrupt every block file of session chat-0 on rank 1's disk tier: its next turn is
      // recomputed (replayed) on both ranks and still gives the same tokens.
      int corrupted = 0;
      const auto blocks = testing::FindStoredBlocks(
          cluster->work_dir() + "/kv", [](const std::string& key, const std::string& path) {
            return (key + path).find("chat-0") != std::string::npos &&
                   path.find("-r1") != std::string::npos;
          });
      for (const testing::StoredBlock& b : blocks) {
        testing::CorruptStoredBlock(b, -3, '\x5a');
        ++corrupted;
      }
      EXPECT_GT(corrupted, 0) << "session chat-0 should have spilled to disk on rank 1";
    }
  }
  // The store spilled and restored: the workers' metrics say so.
  const testing::CommandResult metrics = testing::RunCommand(
      absl::StrCat("curl -s http://127.0.0.1:", cluster->worker_metrics_port(0, 1), "/metrics"));
  EXPECT_THAT(metrics.out, HasSubstr("dapq_kv_spill_bytes_total{from=\"host\""));
  EXPECT_THAT(metrics.out, HasSubstr("dapq_kv_restore_bytes_total{from=\"disk\""));
  EXPECT_THAT(metrics.out, ::testing::ContainsRegex(
                               "dapq_kv_failed_loads_total\\{cause=\"checksum\"[^}]*\\} [1-9]"));
}

// Sessions on a cluster whose upper tiers hold a block or two and that has no disk tier: their
// blocks go down to the remote tier at `url` and come back for every later turn. Returns the
// cluster so the caller can look at its remote.
std::unique_ptr<launcher::LocalCluster> RunSessionsThroughARemoteTier(const std::string& name,
                                                                      const std::string& url) {
  auto cluster = StartCluster(name, testing::Stories260KPath(), 1, 2, true, 64,
                              [&url](launcher::LocalClusterOptions& o) {
                                o.kv_device_kib = 4;
                                o.kv_host_kib = 4;
                                o.kv_disk_mib = 0;
                                o.kv_remote = url;
                                o.kv_resident_kib = 0;  // every turn from the store
                              });
  const std::vector<std::string> turns = {kStory, " Then the dog came.", " They went home."};
  const std::vector<std::vector<int>> expected = ReferenceSession(turns, 24);
  constexpr int kSessions = 3;
  for (size_t t = 0; t < turns.size(); ++t) {
    for (int s = 0; s < kSessions; ++s) {
      dapq::v1::GenerateRequest r;
      r.set_text(turns[t]);
      r.set_max_new_tokens(24);
      r.set_session_id(absl::StrCat("remote-", s));
      r.mutable_compression()->set_method("dapq");
      r.mutable_compression()->set_budget_tokens(8);
      const Completion c = Complete(cluster->address(), r);
      EXPECT_TRUE(c.status.ok()) << c.status.error_message();
      EXPECT_EQ(Tokens(c), expected[t]) << "session " << s << " turn " << t;
    }
  }
  // dapq status names the remote tier, and the blocks went there and came back.
  const testing::CommandResult status = testing::RunCommand(
      absl::StrCat(BinDir(), "/dapq status --coordinator ", cluster->address(), " --wait_s 10"));
  EXPECT_THAT(status.out, HasSubstr("KV remote tier " + url)) << status.out;
  for (int rank = 0; rank < 2; ++rank) {
    const testing::CommandResult metrics = testing::RunCommand(absl::StrCat(
        "curl -s http://127.0.0.1:", cluster->worker_metrics_port(0, rank), "/metrics"));
    EXPECT_THAT(metrics.out,
                ::testing::ContainsRegex(
                    "dapq_kv_spill_bytes_total\\{from=\"host\"[^}]*to=\"remote\"[^}]*\\} [1-9]"))
        << "rank " << rank;
    EXPECT_THAT(metrics.out, ::testing::ContainsRegex(
                                 "dapq_kv_restore_bytes_total\\{from=\"remote\"[^}]*\\} [1-9]"))
        << "rank " << rank;
  }
  return cluster;
}

TEST(ClusterRemoteTierTest, SessionsGoDownToAnotherWorkersKvPeerAndContinueIdentically) {
  // A worker lending a memory tier over KvPeer (its own group of one rank, unregistered).
  const std::string dir = testing::MakeTempDir("cluster_kv_peer");
  auto peer = launcher::ChildProcess::Start(
      {BinDir() + "/dapq-worker", "--model", testing::Stories260KPath(), "--group_id", "lender",
       "--kv_peer_listen", "127.0.0.1:0", "--kv_peer_mib", "64", "--metrics_listen", "127.0.0.1:0",
       "--ready_fd", "3"},
      dir + "/lender.log", /*ready_pipe=*/true);
  ASSERT_TRUE(peer.ok()) << peer.status();
  const absl::StatusOr<std::string> ready = peer->ReadReadyLine(std::chrono::seconds(60));
  ASSERT_TRUE(ready.ok()) << ready.status();
  const std::vector<std::string> ports = absl::StrSplit(*ready, ' ');
  ASSERT_EQ(ports.size(), 2u) << *ready;
  const std::string address = absl::StrCat("127.0.0.1:", ports[1]);
  auto cluster = RunSessionsThroughARemoteTier("cluster_peer", "grpc://" + address);
  // The lender holds blocks of the sessions that are idle now.
  auto stub =
      dapq::v1::KvPeer::NewStub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  dapq::v1::StatsResponse stats;
  ASSERT_TRUE(stub->Stats(&context, dapq::v1::StatsRequest(), &stats).ok());
  EXPECT_GT(stats.blocks(), 0u);
  EXPECT_EQ(stats.capacity_bytes(), 64ull << 20);
}

TEST(ClusterPoolTest, AFullKvPoolIsResourceExhaustedAndTheGroupKeepsServing) {
  auto cluster = StartCluster("cluster_pool", testing::Stories260KPath(), 1, 2, true, 64,
                              [](launcher::LocalClusterOptions& o) {
                                // 5 layers x 4 KV heads (2 per rank): 60 blocks of 16 slots
                                // hold 96 tokens per rank.
                                o.worker_args = {"--kv_pool_blocks", "60"};
                              });
  const dapq::v1::GenerateRequest small = StoryRequest(20);
  const Completion before = Complete(cluster->address(), small);
  ASSERT_TRUE(before.status.ok()) << before.status.error_message();
  dapq::v1::GenerateRequest big;
  for (int i = 0; i < 200; ++i) big.mutable_token_ids()->add_ids(1 + (i * 7) % 400);
  big.set_max_new_tokens(8);
  const Completion full = Complete(cluster->address(), big);
  EXPECT_EQ(full.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
      << full.status.error_message();
  const Completion ok = Complete(cluster->address(), small);
  ASSERT_TRUE(ok.status.ok()) << ok.status.error_message();
  EXPECT_EQ(Tokens(ok), Reference(testing::Stories260KPath(), small));
}

TEST(ClusterAdmissionTest, FullQueueIsResourceExhaustedWithARetryHintAndDeadlinesReachTheGroup) {
  // TP=2 over Gloo: slow enough per token that the held stream is still running below.
  auto cluster = StartCluster("cluster_admission", testing::Stories260KPath(), 1, 2,
                              /*tokenizer=*/true, /*max_in_flight=*/1);
  auto stub = dapq::v1::Inference::NewStub(
      grpc::CreateChannel(cluster->address(), grpc::InsecureChannelCredentials()));
  dapq::v1::GenerateRequest longer;
  longer.mutable_token_ids()->add_ids(1);
  longer.set_max_new_tokens(500);
  longer.set_ignore_stop_tokens(true);
  {
    grpc::ClientContext context;
    auto reader = stub->Generate(&context, longer);
    dapq::v1::GenerateResponse response;
    ASSERT_TRUE(reader->Read(&response));  // admitted and running: the queue is full now
    grpc::ClientContext second_context;
    dapq::v1::CompleteResponse second;
    const grpc::Status s = stub->Complete(&second_context, StoryRequest(4), &second);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << s.error_message();
    EXPECT_THAT(s.error_message(), HasSubstr("retry after"));
    const auto& trailers = second_context.GetServerTrailingMetadata();
    EXPECT_EQ(trailers.count("retry-after-ms"), 1u);
    context.TryCancel();  // the client goes away: the group stops generating
    while (reader->Read(&response)) {
    }
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  }
  // A slot is freed once the group's call ends, shortly after the client's; a client that
  // honours the retry hint gets through.
  auto complete_with_retry = [&](const dapq::v1::GenerateRequest& request, int deadline_ms) {
    grpc::Status status;
    for (int attempt = 0; attempt < 50; ++attempt) {
      grpc::ClientContext context;
      context.set_deadline(std::chrono::system_clock::now() +
                           std::chrono::milliseconds(deadline_ms));
      dapq::v1::CompleteResponse response;
      status = stub->Complete(&context, request, &response);
      if (status.error_code() != grpc::StatusCode::RESOURCE_EXHAUSTED) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(200));  // the retry-after hint
    }
    return status;
  };
  // A deadline far shorter than the request: DEADLINE_EXCEEDED, and the group is free again.
  longer.set_max_new_tokens(511);
  EXPECT_EQ(complete_with_retry(longer, 20).error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  const grpc::Status after = complete_with_retry(StoryRequest(10), 30000);
  EXPECT_TRUE(after.ok()) << after.error_message();
}

// A group batches continuously: concurrent streams with mixed prompts, lengths and compression
// methods run in shared engine steps and give the tokens each gives alone; a stream whose client
// goes away leaves the others unchanged. TP=2: rank 0 plans, and every step reaches rank 1 as a
// BATCH command over Gloo.
class ClusterContinuousBatchingTest : public ::testing::TestWithParam<int> {};

TEST_P(ClusterContinuousBatchingTest, ConcurrentStreamsShareStepsAndMatchTheEngineAlone) {
  auto cluster = StartCluster(absl::StrCat("cluster_batching_tp", GetParam()),
                              testing::Stories260KPath(), 1, GetParam());
  const char* prompts[] = {"Once upon a time",     "Lily saw a big red ball",
                           "The dog ran",          "One day, Tom went to the zoo with his mom",
                           "She was happy",        "The sun was hot",
                           "A cat sat on the mat", "The little bird"};
  const char* methods[] = {"", "dapq", "snapkv", "streaming"};
  constexpr int kStreams = 8;
  std::vector<dapq::v1::GenerateRequest> requests(kStreams);
  for (int i = 0; i < kStreams; ++i) {
    requests[i].set_text(prompts[i]);
    requests[i].set_max_new_tokens(150 + 7 * i);
    requests[i].set_ignore_stop_tokens(true);
    if (methods[i % 4][0] != '\0') {
      requests[i].mutable_compression()->set_method(methods[i % 4]);
      requests[i].mutable_compression()->set_budget_tokens(6);
    }
  }
  // Stream 3's client goes away after a few tokens.
  std::vector<std::vector<int>> got(kStreams);
  std::vector<grpc::Status> status(kStreams);
  std::vector<std::thread> clients;
  for (int i = 0; i < kStreams; ++i) {
    clients.emplace_back([&, i] {
      auto stub = dapq::v1::Inference::NewStub(
          grpc::CreateChannel(cluster->address(), grpc::InsecureChannelCredentials()));
      grpc::ClientContext context;
      context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
      auto reader = stub->Generate(&context, requests[i]);
      dapq::v1::GenerateResponse response;
      while (reader->Read(&response)) {
        got[i].insert(got[i].end(), response.token_ids().begin(), response.token_ids().end());
        if (i == 3 && got[i].size() >= 5) context.TryCancel();
      }
      status[i] = reader->Finish();
    });
  }
  for (std::thread& t : clients) t.join();
  for (int i = 0; i < kStreams; ++i) {
    SCOPED_TRACE(::testing::Message() << "stream " << i);
    const std::vector<int> alone = Reference(testing::Stories260KPath(), requests[i]);
    if (i == 3) {
      EXPECT_EQ(status[i].error_code(), grpc::StatusCode::CANCELLED);
      ASSERT_GE(got[i].size(), 5u);
      EXPECT_EQ(got[i], std::vector<int>(alone.begin(), alone.begin() + got[i].size()));
      continue;
    }
    ASSERT_TRUE(status[i].ok()) << status[i].error_message();
    EXPECT_EQ(got[i], alone);
  }
  // Steps held more than one sequence: the batch-size histogram has observations above 1.
  const testing::CommandResult metrics = testing::RunCommand(
      absl::StrCat("curl -s http://127.0.0.1:", cluster->worker_metrics_port(0, 0), "/metrics"));
  auto value = [&](const std::string& pattern) {
    std::smatch m;
    EXPECT_TRUE(std::regex_search(metrics.out, m, std::regex(pattern))) << pattern;
    return m.size() > 1 ? std::stod(m[1].str()) : 0.0;
  };
  const double steps = value("dapq_worker_step_sequences_count\\{[^}]*\\} ([0-9.e+]+)");
  const double single =
      value("dapq_worker_step_sequences_bucket\\{[^}]*le=\"1\"[^}]*\\} ([0-9.e+]+)");
  EXPECT_GT(steps, single) << "no step batched two sequences";
  EXPECT_THAT(metrics.out, HasSubstr("dapq_worker_running_sequences"));
}

INSTANTIATE_TEST_SUITE_P(Tp, ClusterContinuousBatchingTest, ::testing::Values(1, 2));

// Preemption across processes: a TP=2 group over Gloo with a capped KV pool and optimistic
// admission (--admission optimistic) takes more streams than their whole lengths fit, and
// preempts the newest when decoding fills the pool: by swap (its KV goes to each rank's KV store
// and comes back) or by recompute. Every stream still gives the tokens it gives alone, and the
// pool is empty afterwards.
class ClusterPreemptionTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ClusterPreemptionTest, StreamsPreemptedAcrossRanksGiveTheTokensTheyGiveAlone) {
  const std::string kind = GetParam();
  auto cluster = StartCluster(absl::StrCat("cluster_preemption_", kind), testing::Stories260KPath(),
                              1, 2, true, 64, [&](launcher::LocalClusterOptions& o) {
                                // 5 layers x 2 KV heads per rank x 8 blocks of 16 slots: 128
                                // tokens per (layer, KV head); each stream needs about 100.
                                o.worker_args = {"--kv_pool_blocks", "80",           "--admission",
                                                 "optimistic",       "--preemption", kind};
                              });
  const char* prompts[] = {"Once upon a time", "Lily saw a big red ball",
                           "The dog ran",      "One day, Tom went to the zoo with his mom",
                           "She was happy",    "The sun was hot"};
  constexpr int kStreams = 6;
  std::vector<dapq::v1::GenerateRequest> requests(kStreams);
  for (int i = 0; i < kStreams; ++i) {
    requests[i].set_text(prompts[i]);
    requests[i].set_max_new_tokens(80 + 3 * i);
    requests[i].set_ignore_stop_tokens(true);
    if (i % 3 == 2) {  // compressed ones preempt and come back too
      requests[i].mutable_compression()->set_method("dapq");
      requests[i].mutable_compression()->set_budget_tokens(8);
    }
  }
  std::vector<Completion> got(kStreams);
  std::vector<std::thread> clients;
  for (int i = 0; i < kStreams; ++i) {
    clients.emplace_back([&, i] { got[i] = Complete(cluster->address(), requests[i]); });
  }
  for (std::thread& t : clients) t.join();
  for (int i = 0; i < kStreams; ++i) {
    SCOPED_TRACE(::testing::Message() << "stream " << i);
    ASSERT_TRUE(got[i].status.ok()) << got[i].status.error_message();
    EXPECT_EQ(Tokens(got[i]), Reference(testing::Stories260KPath(), requests[i]));
  }
  for (int rank = 0; rank < 2; ++rank) {
    const testing::CommandResult metrics = testing::RunCommand(absl::StrCat(
        "curl -s http://127.0.0.1:", cluster->worker_metrics_port(0, rank), "/metrics"));
    auto value = [&](const std::string& pattern) {
      std::smatch m;
      EXPECT_TRUE(std::regex_search(metrics.out, m, std::regex(pattern))) << pattern;
      return m.size() > 1 ? std::stod(m[1].str()) : -1.0;
    };
    if (rank == 0) {  // the scheduler (rank 0) counts preemptions
      EXPECT_GT(value(absl::StrCat("dapq_worker_preemptions_total\\{[^}]*kind=\"", kind,
                                   "\"[^}]*\\} ([0-9.e+]+)")),
                0)
          << "no stream was preempted by " << kind;
    }
    EXPECT_EQ(value("dapq_kv_pool_used_blocks\\{[^}]*\\} ([0-9.e+]+)"), 0)
        << "rank " << rank << " leaked KV blocks";
  }
}

INSTANTIATE_TEST_SUITE_P(Kind, ClusterPreemptionTest, ::testing::Values("swap", "recompute"));

TEST(ClusterBatchTest, CoordinatorKilledMidJobResumesEveryItemExactlyOnce) {
  const std::string out_dir = testing::MakeTempDir("cluster_batch_out");
  auto cluster = StartCluster("cluster_batch", testing::Stories260KPath(), 2, 1, true, 64,
                              [&](launcher::LocalClusterOptions& o) { o.batch_dir = out_dir; });
  const std::string out = out_dir + "/results.jsonl";
  dapq::v1::SubmitBatchRequest submit;
  submit.set_name("resume");
  submit.set_output_path(out);
  constexpr int kItems = 24;
  std::vector<dapq::v1::GenerateRequest> items;
  for (int i = 0; i < kItems; ++i) {
    dapq::v1::GenerateRequest r;
    r.mutable_token_ids()->add_ids(1);
    r.mutable_token_ids()->add_ids(100 + i);
    r.set_max_new_tokens(150);
    r.set_ignore_stop_tokens(true);
    items.push_back(r);
    *submit.add_items() = r;
  }
  auto batch = [&] {
    return dapq::v1::Batch::NewStub(
        grpc::CreateChannel(cluster->address(), grpc::InsecureChannelCredentials()));
  };
  const std::string job = testing::SubmitBatch(*batch(), submit);
  ASSERT_FALSE(job.empty());
  // Kill the coordinator once some items are done and others are running.
  ASSERT_EQ(testing::FollowBatch(*batch(), job, /*max_items=*/3).items.size(), 3u);
  cluster->coordinator().Signal(SIGKILL);
  ASSERT_TRUE(cluster->coordinator().Wait(std::chrono::seconds(10)).has_value());
  ASSERT_THAT(cluster->RestartCoordinator(), testing::IsOk());
  ASSERT_THAT(cluster->WaitReady(std::chrono::seconds(60)).status(), testing::IsOk());
  const testing::BatchResults results = testing::FollowBatch(*batch(), job);
  ASSERT_TRUE(results.status.ok()) << results.status.error_message();
  ASSERT_EQ(results.items.size(), static_cast<size_t>(kItems));
  for (const auto& item : results.items) ASSERT_EQ(item.state(), "succeeded") << item.error();
  // The results file: one line per item, each the reference tokens.
  {
    grpc::ClientContext c;
    dapq::v1::GetBatchRequest get;
    get.set_job_id(job);
    dapq::v1::BatchJob job;
    ASSERT_TRUE(batch()->GetBatch(&c, get, &job).ok());
    EXPECT_EQ(job.state(), "succeeded");
    EXPECT_EQ(job.succeeded(), kItems);
  }
  std::ifstream in(out);
  std::string line;
  std::set<int> indices;
  while (std::getline(in, line)) {
    const nlohmann::json j = nlohmann::json::parse(line);
    const int index = j["index"];
    EXPECT_TRUE(indices.insert(index).second) << "item " << index << " twice";
    EXPECT_EQ(j["token_ids"].get<std::vector<int>>(),
              Reference(testing::Stories260KPath(), items[index]))
        << "item " << index;
  }
  EXPECT_EQ(indices.size(), static_cast<size_t>(kItems));
}

}  // namespace
}  // namespace dapq
