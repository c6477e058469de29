// File: worker/service/group_driver_test.cc
// The group driver over an in-process stories260K engine with continuous batching: a session's
// turns submitted all at once run one after another inside the batch (a later turn waits for the
// one before it) beside plain requests, and give the tokens of the same turns run sequentially
// on the engine; an unknown compression method fails only its request; a session compressed on
// every turn (CompressionConfig::every_turn) is compressed again inside the batch. With a KV
// store, idle sessions stay in the engine's block pool within their budget (their turns never
// read the store), leave it beyond the budget or when a request needs their blocks, and come back
// from the store with the same tokens.
#include "worker/service/group_driver.h"

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "prometheus/registry.h"
#include "tests/util/metric_values.h"
#include "tests/util/stories_model.h"
#include "tests/util/test_paths.h"
#include "worker/service/worker_metrics.h"
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

// A driver with a KV store (memory tiers) and metrics over its own engine, serving on a thread.
class StoredSessionsRig {
 public:
  StoredSessionsRig(std::shared_ptr<const ModelWeights> model, const Tokenizer* tok,
                    const EngineOptions& engine_options, size_t resident_session_bytes)
      : engine_(*Engine::Create(std::move(model), engine_options)),
        store_(OpenStore()),
        metrics_(registry_, "g0", 0) {
    GroupDriverOptions options;
    options.idle_ping = std::chrono::milliseconds(50);
    options.store = store_.get();
    options.metrics = &metrics_;
    options.resident_session_bytes = resident_session_bytes;
    driver_ = std::make_unique<GroupDriver>(engine_.get(), nullptr, tok, options);
    runner_ = std::thread([this] { EXPECT_TRUE(driver_->RunDriver().ok()); });
  }
  ~StoredSessionsRig() {
    driver_->Shutdown();
    runner_.join();
  }

  Outcome Run(const dapq::v1::GenerateRequest& request) {
    return Drain(**driver_->Submit(request));
  }
  // Session turns whose sequence came from `source` (pool, store, replay), and evictions.
  double Turns(const std::string& source) {
    return dapq::testing::MetricValue(registry_.Collect(), "dapq_worker_session_turns_total",
                                      {{"source", source}});
  }
  double Evicted() {
    return dapq::testing::MetricValue(registry_.Collect(), "dapq_worker_sessions_evicted_total");
  }
  const kvstore::BlockPool& pool() const { return engine_->kv_pool(0); }
  kvstore::KvStore& store() { return *store_; }

 private:
  static std::unique_ptr<kvstore::KvStore> OpenStore() {
    kvstore::KvStoreOptions so;
    so.background = false;
    return *kvstore::KvStore::Open(so);
  }

  std::unique_ptr<Engine> engine_;
  std::unique_ptr<kvstore::KvStore> store_;
  prometheus::Registry registry_;
  WorkerMetrics metrics_;
  std::unique_ptr<GroupDriver> driver_;
  std::thread runner_;
};

// The model, its tokenizer and the reference turns (RunReference, uncompressed).
class ResidentSessionsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<Tokenizer> tok =
        Tokenizer::Load(dapq::testing::Tok512Path(), model_->config.vocab_size);
    ASSERT_TRUE(tok.ok()) << tok.status();
    tok_ = std::make_unique<Tokenizer>(*std::move(tok));
    expected_ = RunReference(model_, *tok_, {}).tokens;
    ASSERT_EQ(expected_.size(), 3u);
  }

  std::shared_ptr<const ModelWeights> model_ = dapq::testing::SharedStories260K();
  std::unique_ptr<Tokenizer> tok_;
  std::vector<std::vector<int>> expected_;
};

// With a store, an idle session stays in the engine's block pool (its KV saved through to the
// store): every later turn continues from the pool, never from the store, with the engine's
// tokens.
TEST_F(ResidentSessionsTest, AnIdleSessionStaysInThePoolAndItsTurnsNeverReadTheStore) {
  StoredSessionsRig rig(model_, tok_.get(), EngineOptions(), 64ull << 20);
  for (int t = 0; t < 3; ++t) {
    const Outcome o = rig.Run(Turn(t, "a"));
    ASSERT_TRUE(o.status.ok()) << o.status;
    EXPECT_EQ(o.tokens, expected_[t]) << "turn " << t;
    EXPECT_GT(rig.pool().blocks_in_use(), 0) << "the idle session left the pool after turn " << t;
    EXPECT_TRUE(rig.store().HasSession("a")) << "turn " << t << " was not saved to the store";
  }
  EXPECT_EQ(rig.Turns("pool"), 2);
  EXPECT_EQ(rig.Turns("store"), 0);
  EXPECT_EQ(rig.Turns("replay"), 0);
  EXPECT_EQ(rig.Evicted(), 0);
}

// A session over the pool's budget for idle sessions leaves the pool after every turn, holding
// no blocks there, and every later turn restores it from the store with the same tokens.
TEST_F(ResidentSessionsTest, ASessionOverTheBudgetLeavesThePoolAndComesBackFromTheStore) {
  StoredSessionsRig rig(model_, tok_.get(), EngineOptions(), /*resident_session_bytes=*/1);
  for (int t = 0; t < 3; ++t) {
    const Outcome o = rig.Run(Turn(t, "a"));
    ASSERT_TRUE(o.status.ok()) << o.status;
    EXPECT_EQ(o.tokens, expected_[t]) << "turn " << t;
    EXPECT_EQ(rig.pool().blocks_in_use(), 0) << "the idle session stayed in the pool, turn " << t;
  }
  EXPECT_EQ(rig.Turns("pool"), 0);
  EXPECT_EQ(rig.Turns("store"), 2);
  EXPECT_EQ(rig.Evicted(), 3);
}

// A capped pool: a request that needs the blocks an idle session holds is admitted once the
// session leaves the pool (it would otherwise wait for good), and the session's next turn comes
// back from the store with the engine's tokens.
TEST_F(ResidentSessionsTest, ARequestNeedingTheBlocksOfAnIdleSessionTakesThem) {
  const ModelConfig& c = model_->config;
  const long per_block = static_cast<long>(c.n_layers) * c.n_kv_heads;  // blocks per 16 tokens
  EngineOptions eo;
  eo.kv_max_blocks = 12 * per_block;  // 192 tokens
  StoredSessionsRig rig(model_, tok_.get(), eo, 64ull << 20);
  const Outcome first = rig.Run(Turn(0, "a"));
  ASSERT_TRUE(first.status.ok()) << first.status;
  EXPECT_EQ(first.tokens, expected_[0]);
  const long held = rig.pool().blocks_in_use();
  ASSERT_GE(held, 2 * per_block);  // ~27 tokens: two blocks per layer and KV head
  // Its prompt and max_new_tokens take 11 of the 12 blocks per layer and KV head.
  dapq::v1::GenerateRequest big = Turn(1, "");
  big.set_max_new_tokens(160);
  const Outcome o = rig.Run(big);
  ASSERT_TRUE(o.status.ok()) << o.status;
  EXPECT_EQ(o.tokens.size(), 160u);
  EXPECT_EQ(rig.Evicted(), 1);
  const Outcome second = rig.Run(Turn(1, "a"));
  ASSERT_TRUE(second.status.ok()) << second.status;
  EXPECT_EQ(second.tokens, expected_[1]);
  EXPECT_EQ(rig.Turns("store"), 1);
}

}  // namespace
}  // namespace dapq::worker::service
