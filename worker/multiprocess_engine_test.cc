// File: worker/multiprocess_engine_test.cc
// Multi-process tensor parallelism: a TP=2 group of two forked processes joined by Gloo over
// loopback (Engine::CreateRank) against the in-process engine (Engine::Create) with tp=2 and
// tp=1, on stories260K and the synthetic GQA model, with and without DapQ compression, with
// seeded temperature sampling, and with on_token stopping early. Each rank writes what it
// generated to a file; the parent compares every rank with the references, which it computes
// while the children run.
#include <functional>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "gtest/gtest.h"
#include "tests/util/fork_ranks.h"
#include "tests/util/status_matchers.h"
#include "tests/util/test_paths.h"
#include "worker/comm/gloo_communicator.h"
#include "worker/engine.h"
#include "worker/llama2c_loader.h"
#include "worker/synthetic_model.h"

namespace dapq::worker {
namespace {
using ::dapq::testing::ForkRanks;
using ::dapq::testing::RankOutcome;

constexpr int kTp = 2;
constexpr int kPrefillChunk = 7;  // several chunks per prompt

std::shared_ptr<const ModelWeights> LoadModel(const std::string& spec_or_path) {
  absl::StatusOr<ModelWeights> w = spec_or_path.rfind(kSyntheticPrefix, 0) == 0
                                       ? MakeSyntheticModel(spec_or_path)
                                       : LoadLlama2cModel(spec_or_path);
  EXPECT_TRUE(w.ok()) << w.status();
  if (!w.ok()) return nullptr;
  return std::make_shared<const ModelWeights>(*std::move(w));
}

std::vector<int> StoriesPrompt() {
  return {1, 403, 407, 261, 378, 11, 298, 315, 421, 395, 317, 426, 338, 401, 396, 267, 337};
}

std::vector<int> GqaPrompt() {
  std::vector<int> prompt = {1};
  for (int i = 0; i < 60; ++i) prompt.push_back((i * 37 + 11) % 320);
  return prompt;
}

compress::CompressionConfig Dapq(int budget, compress::DapqMode mode) {
  compress::CompressionConfig c;
  c.method = compress::Method::kDapq;
  c.budget_tokens = budget;
  c.mode = mode;
  return c;
}

// What each rank (and each reference engine) does: Continue on a fresh sequence, then
// optionally a second turn on the same sequence.
struct Scenario {
  std::vector<int> prompt;
  GenerateOptions options;
  int stop_after = 0;          // > 0: on_token returns false at its stop_after-th call
  std::vector<int> next_turn;  // fed with a second Continue when not empty
  // The group (not the references) first makes calls that fail their argument checks.
  bool bad_calls_first = false;
};

struct Outcome {
  std::vector<int> tokens, next_tokens;
  int on_token_calls = 0;
  long slots_before = 0, slots_after = 0;
  bool compressed = false;

  std::vector<int64_t> Serialize() const {
    std::vector<int64_t> v = {on_token_calls, slots_before, slots_after, compressed,
                              static_cast<int64_t>(tokens.size())};
    v.insert(v.end(), tokens.begin(), tokens.end());
    v.push_back(static_cast<int64_t>(next_tokens.size()));
    v.insert(v.end(), next_tokens.begin(), next_tokens.end());
    return v;
  }
  static Outcome Parse(const std::vector<int64_t>& v) {
    Outcome o;
    if (v.size() < 6) return o;
    o.on_token_calls = static_cast<int>(v[0]);
    o.slots_before = v[1];
    o.slots_after = v[2];
    o.compressed = v[3] != 0;
    size_t at = 4;
    const size_t n = static_cast<size_t>(v[at++]);
    o.tokens.assign(v.begin() + at, v.begin() + at + n);
    at += n;
    const size_t m = static_cast<size_t>(v[at++]);
    o.next_tokens.assign(v.begin() + at, v.begin() + at + m);
    return o;
  }
};

absl::StatusOr<Outcome> RunScenario(Engine& engine, const Scenario& s) {
  Outcome o;
  auto seq = engine.NewSequence();
  auto on_token = [&](int) {
    ++o.on_token_calls;
    return s.stop_after <= 0 || o.on_token_calls < s.stop_after;
  };
  DAPQ_ASSIGN_OR_RETURN(GenerateResult r, engine.Continue(*seq, s.prompt, s.options, on_token));
  o.tokens = r.tokens;
  o.slots_before = r.compression.slots_before;
  o.slots_after = r.compression.slots_after;
  o.compressed = r.compression.compressed;
  if (!s.next_turn.empty()) {
    DAPQ_ASSIGN_OR_RETURN(GenerateResult next, engine.Continue(*seq, s.next_turn, s.options));
    o.next_tokens = next.tokens;
  }
  return o;
}

// Calls that every rank rejects identically: a token outside the vocabulary (found by the
// forward pass's argument check) and a prompt past the context limit.
absl::Status MakeBadCalls(Engine& engine, const Scenario& s) {
  const std::vector<int> bad_token = {1, engine.config().vocab_size + 5};
  absl::StatusOr<GenerateResult> r = engine.Generate(bad_token, s.options);
  if (!absl::IsInvalidArgument(r.status())) {
    return absl::InternalError(absl::StrCat("bad token id gave ", r.status().ToString()));
  }
  const std::vector<int> too_long(engine.config().max_seq_len + 1, 1);
  r = engine.Generate(too_long, s.options);
  if (!absl::IsOutOfRange(r.status())) {
    return absl::InternalError(absl::StrCat("too long a prompt gave ", r.status().ToString()));
  }
  return absl::OkStatus();
}

Outcome RunInProcess(std::shared_ptr<const ModelWeights> model, int tp, const Scenario& s) {
  EngineOptions o;
  o.tp = tp;
  o.prefill_chunk = kPrefillChunk;
  auto engine = Engine::Create(std::move(model), o);
  EXPECT_TRUE(engine.ok()) << engine.status();
  if (!engine.ok()) return {};
  auto out = RunScenario(**engine, s);
  EXPECT_TRUE(out.ok()) << "in-process tp=" << tp << ": " << out.status();
  return out.ok() ? *std::move(out) : Outcome{};
}

struct GroupRun {
  std::vector<Outcome> ranks;  // per rank
  Outcome tp2, tp1;            // in-process references
};

// Forks the TP=2 group (first, before this test creates any thread), computes the in-process
// references meanwhile, and collects every rank's outcome.
GroupRun RunGroup(const std::string& name, std::shared_ptr<const ModelWeights> model,
                  const Scenario& s) {
  const std::string dir = dapq::testing::MakeTempDir(absl::StrCat("mp_engine_", name));
  GroupRun run;
  const std::vector<RankOutcome> outcomes = ForkRanks(
      dir, kTp,
      [&](int rank) -> absl::Status {
        GlooGroupOptions g;
        g.rank = rank;
        g.size = kTp;
        g.rendezvous_dir = dir + "/rendezvous";
        g.group_id = name;
        g.timeout = absl::Seconds(60);
        DAPQ_ASSIGN_OR_RETURN(std::unique_ptr<Communicator> comm, ConnectGlooGroup(g));
        EngineOptions o;
        o.tp = kTp;
        o.prefill_chunk = kPrefillChunk;
        DAPQ_ASSIGN_OR_RETURN(std::unique_ptr<Engine> engine,
                              Engine::CreateRank(model, o, std::move(comm)));
        if (engine->is_driver() != (rank == 0) || engine->first_rank() != rank ||
            engine->local_ranks() != 1) {
          return absl::InternalError("wrong rank bookkeeping");
        }
        if (s.bad_calls_first) DAPQ_RETURN_IF_ERROR(MakeBadCalls(*engine, s));
        DAPQ_ASSIGN_OR_RETURN(Outcome out, RunScenario(*engine, s));
        dapq::testing::WriteVector(absl::StrCat(dir, "/outcome", rank, ".bin"), out.Serialize());
        return absl::OkStatus();
      },
      [&] {
        run.tp2 = RunInProcess(model, 2, s);
        run.tp1 = RunInProcess(model, 1, s);
      });
  for (int r = 0; r < kTp; ++r) {
    EXPECT_TRUE(outcomes[r].ok()) << outcomes[r].DebugString();
    run.ranks.push_back(Outcome::Parse(
        dapq::testing::ReadVector<int64_t>(absl::StrCat(dir, "/outcome", r, ".bin"))));
  }
  return run;
}

// Every rank generated the same tokens as `reference`, stopped at the same step and reports the
// same compression stats; on_token ran on rank 0 only.
void ExpectGroupMatches(const GroupRun& run, const Outcome& reference) {
  ASSERT_FALSE(reference.tokens.empty());
  for (int r = 0; r < kTp; ++r) {
    SCOPED_TRACE(::testing::Message() << "rank " << r);
    const Outcome& o = run.ranks[r];
    EXPECT_EQ(o.tokens, reference.tokens);
    EXPECT_EQ(o.next_tokens, reference.next_tokens);
    EXPECT_EQ(o.compressed, reference.compressed);
    EXPECT_EQ(o.slots_before, reference.slots_before);
    EXPECT_EQ(o.slots_after, reference.slots_after);
    EXPECT_EQ(o.on_token_calls, r == 0 ? reference.on_token_calls : 0);
  }
}

Scenario Greedy(std::vector<int> prompt, int steps) {
  Scenario s;
  s.prompt = std::move(prompt);
  s.options.max_new_tokens = steps;
  s.options.stop_at_stop_tokens = false;
  return s;
}

TEST(MultiProcessEngineTest, Stories260KGreedyMatchesInProcessTp2AndTp1) {
  auto model = LoadModel(dapq::testing::Stories260KPath());
  ASSERT_NE(model, nullptr);
  Scenario s = Greedy(StoriesPrompt(), 40);
  s.next_turn = {401, 396, 267};  // a session's next turn on the same sequences
  const GroupRun run = RunGroup("stories_greedy", model, s);
  EXPECT_EQ(run.tp2.tokens.size(), 40u);
  ExpectGroupMatches(run, run.tp2);
  ExpectGroupMatches(run, run.tp1);
}

TEST(MultiProcessEngineTest, SyntheticGqaGreedyMatchesInProcessTp2AndTp1) {
  auto model = LoadModel("synthetic:tiny-gqa");
  ASSERT_NE(model, nullptr);
  const GroupRun run = RunGroup("gqa_greedy", model, Greedy(GqaPrompt(), 24));
  ExpectGroupMatches(run, run.tp2);
  ExpectGroupMatches(run, run.tp1);
}

TEST(MultiProcessEngineTest, Stories260KDapqCompressedMatchesInProcess) {
  auto model = LoadModel(dapq::testing::Stories260KPath());
  ASSERT_NE(model, nullptr);
  Scenario s = Greedy(StoriesPrompt(), 30);
  s.options.compression = Dapq(8, compress::DapqMode::kPseudo);
  s.next_turn = {401, 396};
  const GroupRun run = RunGroup("stories_dapq", model, s);
  EXPECT_TRUE(run.tp2.compressed);
  EXPECT_LT(run.tp2.slots_after, run.tp2.slots_before);
  ExpectGroupMatches(run, run.tp2);
  ExpectGroupMatches(run, run.tp1);
}

TEST(MultiProcessEngineTest, SyntheticGqaDapqForwardModeMatchesInProcess) {
  auto model = LoadModel("synthetic:tiny-gqa");
  ASSERT_NE(model, nullptr);
  Scenario s = Greedy(GqaPrompt(), 16);
  s.options.compression = Dapq(20, compress::DapqMode::kForward);
  const GroupRun run = RunGroup("gqa_dapq_forward", model, s);
  EXPECT_TRUE(run.tp2.compressed);
  EXPECT_LT(run.tp2.slots_after, run.tp2.slots_before);
  ExpectGroupMatches(run, run.tp2);
  ExpectGroupMatches(run, run.tp1);
}

// Streaming compression with ragged per-head (adaptive) caches, and a second turn compressed
// again (every_turn), across Gloo: the same tokens as in-process TP 2 and TP 1.
TEST(MultiProcessEngineTest, StreamedAdaptiveCompressionEveryTurnMatchesInProcess) {
  auto model = LoadModel("synthetic:tiny-gqa");
  ASSERT_NE(model, nullptr);
  Scenario s = Greedy(GqaPrompt(), 12);
  compress::CompressionConfig c = Dapq(16, compress::DapqMode::kPseudo);
  c.storage = compress::Storage::kPerHead;
  c.allocator = compress::Allocator::kAdaptive;
  c.query_window = 8;
  c.streaming_chunk = 20;
  c.every_turn = true;
  s.options.compression = c;
  for (int i = 0; i < 24; ++i) s.next_turn.push_back((i * 53 + 5) % 320);
  const GroupRun run = RunGroup("gqa_streamed", model, s);
  EXPECT_TRUE(run.tp2.compressed);
  EXPECT_LT(run.tp2.slots_after, run.tp2.slots_before);
  EXPECT_FALSE(run.tp2.next_tokens.empty());
  ExpectGroupMatches(run, run.tp2);
  ExpectGroupMatches(run, run.tp1);
}

// Rank 0 samples; the logits are bit-identical to the in-process tp=2 engine's (Gloo sums in
// rank order), so a seeded sampler draws the same tokens.
TEST(MultiProcessEngineTest, SeededTemperatureSamplingMatchesInProcessTp2) {
  auto model = LoadModel(dapq::testing::Stories260KPath());
  ASSERT_NE(model, nullptr);
  Scenario s = Greedy(StoriesPrompt(), 60);
  s.options.sampling.temperature = 0.9f;
  s.options.sampling.top_p = 0.95f;
  s.options.sampling.seed = 20240611;
  s.options.stop_at_stop_tokens = true;
  const GroupRun run = RunGroup("stories_sampling", model, s);
  ExpectGroupMatches(run, run.tp2);
  // Sampling did something: not the greedy continuation.
  EXPECT_NE(run.tp2.tokens, RunInProcess(model, 2, Greedy(StoriesPrompt(), 60)).tokens);
}

// on_token (called on rank 0 only) returns false at its 5th token: every rank stops after that
// same token, and the group stays in step for the sequence's next turn.
TEST(MultiProcessEngineTest, OnTokenFalseStopsEveryRankAtTheSameStep) {
  auto model = LoadModel("synthetic:tiny-gqa");
  ASSERT_NE(model, nullptr);
  Scenario s = Greedy(GqaPrompt(), 20);
  s.stop_after = 5;
  s.next_turn = {7, 8, 9};
  const GroupRun run = RunGroup("gqa_stop", model, s);
  ASSERT_EQ(run.tp2.tokens.size(), 5u);
  EXPECT_EQ(run.tp2.on_token_calls, 5);
  ExpectGroupMatches(run, run.tp2);
}

// Requests that fail their argument checks fail on every rank before any collective: the group
// stays in step and serves the next request exactly.
TEST(MultiProcessEngineTest, ArgumentErrorsLeaveTheGroupInStep) {
  auto model = LoadModel(dapq::testing::Stories260KPath());
  ASSERT_NE(model, nullptr);
  Scenario s = Greedy(StoriesPrompt(), 12);
  s.bad_calls_first = true;
  const GroupRun run = RunGroup("stories_bad_calls", model, s);
  ExpectGroupMatches(run, run.tp2);
}

TEST(MultiProcessEngineTest, CreateRankChecksTheGroup) {
  auto model = LoadModel("synthetic:tiny-gqa");
  ASSERT_NE(model, nullptr);
  const std::string dir = dapq::testing::MakeTempDir("mp_engine_create");
  GlooGroupOptions g;
  g.rendezvous_dir = dir;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Communicator> comm, ConnectGlooGroup(g));  // size 1
  EngineOptions o;
  o.tp = 2;
  EXPECT_THAT(
      Engine::CreateRank(model, o, std::move(comm)),
      dapq::testing::StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("tp=2")));
  EXPECT_THAT(Engine::CreateRank(model, o, nullptr),
              dapq::testing::StatusIs(absl::StatusCode::kInvalidArgument));
  // A group of one is an ordinary single-rank engine.
  ASSERT_OK_AND_ASSIGN(comm, ConnectGlooGroup(g));
  o.tp = 1;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Engine> engine,
                       Engine::CreateRank(model, o, std::move(comm)));
  EXPECT_TRUE(engine->is_driver());
  EXPECT_EQ(engine->first_rank(), 0);
  ASSERT_OK_AND_ASSIGN(Outcome one, RunScenario(*engine, Greedy(GqaPrompt(), 8)));
  EXPECT_EQ(one.tokens, RunInProcess(model, 1, Greedy(GqaPrompt(), 8)).tokens);
}

}  // namespace
}  // namespace dapq::worker
