// File: worker/service/group_driver_test.cc
// The group driver over an in-process stories260K engine with continuous batching: a session's
// turns submitted all at once run one after another inside the batch (a later turn waits for the
// one before it) beside plain requests, and give the tokens of the same turns run sequentially
// on the engine; an unknown compression method fails only its request; a session compressed on
// every turn (CompressionConfig::every_turn) is compressed again inside the batch.
#include "worker/service/group_driver.h"

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "tests/util/stories_model.h"
#include "tests/util/test_paths.h"
#include "worker/session_store.h"
#include "worker/tokenizer.h"

namespace dapq::worker::service {
namespace {

constexpr int kNewTokens = 12;
const char* const kTurns[] = {"Once upon a time, there was a little dog named Max.",
                              " He liked to run.", " One day he found a ball."};

// Collects a request's tokens and final status.
struct Outcome {
  std::vector<int> tokens;
  absl::Status status;
};

Outcome Drain(RequestChannel& channel) {
  Outcome out;
  StreamEvent event;
  while (channel.Pop(&event, std::chrono::seconds(60))) {
    if (event.done) {
      out.status = event.status;
      return out;
    }
    out.tokens.push_back(event.token);
  }
  out.status = absl::DeadlineExceededError("no final event");
  return out;
}

dapq::v1::GenerateRequest Turn(int t, const std::string& session) {
  dapq::v1::GenerateRequest r;
  r.set_text(kTurns[t]);
  r.set_max_new_tokens(kNewTokens);
  r.set_ignore_stop_tokens(true);
  r.set_session_id(session);
  return r;
}

// The reference: the turns one after another on one sequence of a fresh engine, as a session
// continues, each compressed with `compression`; their tokens, and whether each was compressed.
struct ReferenceTurns {
  std::vector<std::vector<int>> tokens;
  std::vector<bool> compressed;
};
ReferenceTurns RunReference(std::shared_ptr<const ModelWeights> model, const Tokenizer& tok,
                            const compress::CompressionConfig& compression) {
  ReferenceTurns out;
  auto engine = *Engine::Create(std::move(model), EngineOptions());
  auto seq = engine->NewSequence();
  for (int t = 0; t < 3; ++t) {
    GenerateOptions o;
    o.max_new_tokens = kNewTokens;
    o.stop_at_stop_tokens = false;
    o.compression = compression;
    auto r = engine->Continue(*seq, tok.Encode(kTurns[t], t == 0, false), o);
    EXPECT_TRUE(r.ok()) << r.status();
    if (!r.ok()) return out;
    EXPECT_TRUE(EndSessionTurn(*engine, *seq, *r, "reference", nullptr).ok());
    out.tokens.push_back(r->tokens);
    out.compressed.push_back(r->compression.compressed);
  }
  return out;
}

TEST(GroupDriverTest, SessionTurnsSubmittedTogetherRunInOrderInsideTheBatch) {
  auto model = dapq::testing::SharedStories260K();
  auto tok = Tokenizer::Load(dapq::testing::Tok512Path(), model->config.vocab_size);
  ASSERT_TRUE(tok.ok()) << tok.status();
  const std::vector<std::vector<int>> expected = RunReference(model, *tok, {}).tokens;
  ASSERT_EQ(expected.size(), 3u);
  auto engine = *Engine::Create(model, EngineOptions());
  GroupDriverOptions options;
  options.idle_ping = std::chrono::milliseconds(50);
  GroupDriver driver(engine.get(), nullptr, &*tok, options);
  std::thread runner([&] { EXPECT_TRUE(driver.RunDriver().ok()); });

  // Two sessions' turns and two plain requests, all queued before the first step.
  std::vector<std::shared_ptr<RequestChannel>> a, b;
  std::vector<std::shared_ptr<RequestChannel>> plain;
  for (int t = 0; t < 3; ++t) {
    a.push_back(*driver.Submit(Turn(t, "a")));
    b.push_back(*driver.Submit(Turn(t, "b")));
    dapq::v1::GenerateRequest p = Turn(0, "");
    p.set_max_new_tokens(30);
    plain.push_back(*driver.Submit(p));
  }
  dapq::v1::GenerateRequest bad = Turn(0, "");
  bad.mutable_compression()->set_method("no-such-method");
  // Rejected when submitted, or by its final event: only that request fails either way.
  absl::StatusOr<std::shared_ptr<RequestChannel>> failing = driver.Submit(bad);
  for (int t = 0; t < 3; ++t) {
    const Outcome oa = Drain(*a[t]), ob = Drain(*b[t]);
    ASSERT_TRUE(oa.status.ok()) << oa.status;
    ASSERT_TRUE(ob.status.ok()) << ob.status;
    EXPECT_EQ(oa.tokens, expected[t]) << "session a turn " << t;
    EXPECT_EQ(ob.tokens, expected[t]) << "session b turn " << t;
  }
  for (auto& p : plain) {
    const Outcome o = Drain(*p);
    ASSERT_TRUE(o.status.ok()) << o.status;
    EXPECT_EQ(o.tokens.size(), 30u);
  }
  EXPECT_EQ(failing.ok() ? Drain(**failing).status.code() : failing.status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(driver.Status().sessions(), 2);
  driver.Shutdown();
  runner.join();
}

// A session whose first turn asks for compression on every turn: each later turn (which names
// no compression itself) is compressed again with the first turn's settings, inside the batch,
// and gives the tokens of the same turns continued on the engine.
TEST(GroupDriverTest, SessionCompressedEveryTurnGivesTheEnginesTokens) {
  auto model = dapq::testing::SharedStories260K();
  auto tok = Tokenizer::Load(dapq::testing::Tok512Path(), model->config.vocab_size);
  ASSERT_TRUE(tok.ok()) << tok.status();
  compress::CompressionConfig c;
  c.method = compress::Method::kDapq;
  c.budget_tokens = 16;
  c.query_window = 8;
  c.every_turn = true;
  // The references: compressed on every turn, or on the first only.
  const ReferenceTurns every = RunReference(model, *tok, c);
  ASSERT_EQ(every.tokens.size(), 3u);
  const std::vector<std::vector<int>>& expected = every.tokens;
  EXPECT_EQ(every.compressed, std::vector<bool>({true, true, true}));
  compress::CompressionConfig once = c;
  once.every_turn = false;
  EXPECT_NE(RunReference(model, *tok, once).tokens, expected);  // compressing again changes them
  auto engine = *Engine::Create(model, EngineOptions());
  GroupDriverOptions options;
  options.idle_ping = std::chrono::milliseconds(50);
  GroupDriver driver(engine.get(), nullptr, &*tok, options);
  std::thread runner([&] { EXPECT_TRUE(driver.RunDriver().ok()); });
  for (int t = 0; t < 3; ++t) {
    dapq::v1::GenerateRequest r = Turn(t, "chat");
    if (t == 0) {
      r.mutable_compression()->set_method("dapq");
      r.mutable_compression()->set_budget_tokens(16);
      r.mutable_compression()->set_query_window(8);
      r.mutable_compression()->set_every_turn(true);
    }
    const Outcome o = Drain(**driver.Submit(r));
    ASSERT_TRUE(o.status.ok()) << o.status;
    EXPECT_EQ(o.tokens, expected[t]) << "turn " << t;
  }
  driver.Shutdown();
  runner.join();
}

}  // namespace
}  // namespace dapq::worker::service
