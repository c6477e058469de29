// File: worker/batched_step_test.cc
// Engine::Step (one forward pass over a ragged batch) against running each sequence alone on
// stories260K: greedy tokens identical, logits within the fp32 tolerance (tests/util/
// tolerance.h), for decode-only batches and for seeded random schedules in which sequences
// arrive at different steps and mix prefill chunks of random sizes with decode tokens; TP 1 and
// 2 (rank threads). Also the step's argument checks and its all-or-nothing failure on a full
// KV pool.
#include <algorithm>
#include <memory>
#include <random>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/util/status_matchers.h"
#include "tests/util/stories_model.h"
#include "tests/util/test_paths.h"
#include "tests/util/tolerance.h"
#include "worker/engine.h"
#include "worker/tokenizer.h"

namespace dapq::worker {
namespace {

using ::dapq::testing::AllClose;
using ::dapq::testing::DecoderReductionLength;
using ::dapq::testing::Fp32Tolerance;
using ::dapq::testing::MaxAbs;
using ::dapq::testing::StatusIs;

constexpr int kNewTokens = 24;

std::shared_ptr<const ModelWeights> Stories() { return dapq::testing::SharedStories260K(); }

std::vector<std::vector<int>> Prompts(const ModelConfig& config) {
  auto tok = Tokenizer::Load(dapq::testing::Tok512Path(), config.vocab_size);
  EXPECT_TRUE(tok.ok()) << tok.status();
  std::vector<std::vector<int>> prompts;
  for (const char* text :
       {"Once upon a time", "Lily saw a big red ball in the park and she wanted to play with it",
        "The dog", "One day, a little boy named Tom went to the zoo with his mom. He saw",
        "She was happy", "The sun was hot and the children went to the lake to swim"}) {
    prompts.push_back(tok->Encode(text, /*add_bos=*/true, /*add_eos=*/false));
  }
  return prompts;
}

int Argmax(const float* logits, int n) {
  return static_cast<int>(std::max_element(logits, logits + n) - logits);
}

// Greedy generation of one prompt alone (the engine's own loop): the tokens and the logits of
// every step (the prompt's last token, then each fed token).
struct Alone {
  std::vector<int> tokens;
  std::vector<std::vector<float>> logits;
};

Alone RunAlone(Engine& engine, const std::vector<int>& prompt) {
  Alone a;
  auto seq = engine.NewSequence();
  std::vector<float> logits;
  EXPECT_THAT(engine.Prefill(*seq, prompt, &logits), dapq::testing::IsOk());
  for (int i = 0; i < kNewTokens; ++i) {
    a.logits.push_back(logits);
    const int next = Argmax(logits.data(), engine.config().vocab_size);
    a.tokens.push_back(next);
    const int32_t pos = seq->next_position();
    EXPECT_THAT(engine.Forward(*seq, std::span<const int>(&next, 1), std::span(&pos, 1), &logits),
                dapq::testing::IsOk());
  }
  return a;
}

// One sequence of a batched run: its prompt fed in chunks, then greedy tokens.
struct Running {
  std::unique_ptr<Sequence> seq;
  const std::vector<int>* prompt = nullptr;
  size_t fed = 0;           // prompt tokens fed so far
  std::vector<int> tokens;  // generated
  std::vector<std::vector<float>> logits;
  int next = -1;  // the token to feed next (after the prompt)
  bool done() const { return static_cast<int>(tokens.size()) == kNewTokens; }
};

// Runs every prompt through Engine::Step on a schedule drawn from `seed`: sequence i arrives at
// a random step, its prompt goes in chunks of 1..max_chunk tokens, and every running sequence
// takes part in every step until it has kNewTokens tokens.
std::vector<Running> RunBatched(Engine& engine, const std::vector<std::vector<int>>& prompts,
                                uint64_t seed, int max_chunk) {
  std::mt19937_64 rng(seed);
  std::vector<Running> runs(prompts.size());
  std::vector<int> arrival(prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) {
    runs[i].seq = engine.NewSequence();
    runs[i].prompt = &prompts[i];
    arrival[i] = static_cast<int>(rng() % 6);
  }
  const int vocab = engine.config().vocab_size;
  for (int step = 0; step < 1000; ++step) {
    std::vector<StepEntry> batch;
    std::vector<Running*> members;
    std::vector<std::vector<int>> chunks;
    chunks.reserve(runs.size());
    for (size_t i = 0; i < runs.size(); ++i) {
      Running& r = runs[i];
      if (arrival[i] > step || r.done()) continue;
      if (r.fed < r.prompt->size()) {
        const size_t want = 1 + rng() % static_cast<uint64_t>(max_chunk);
        const size_t n = std::min(want, r.prompt->size() - r.fed);
        chunks.emplace_back(r.prompt->begin() + r.fed, r.prompt->begin() + r.fed + n);
        r.fed += n;
      } else {
        chunks.push_back({r.next});
      }
      batch.push_back({r.seq.get(), chunks.back()});
      members.push_back(&r);
    }
    if (batch.empty()) {
      if (std::all_of(runs.begin(), runs.end(), [](const Running& r) { return r.done(); })) break;
      continue;
    }
    std::vector<float> logits;
    const absl::Status s = engine.Step(batch, &logits);
    EXPECT_TRUE(s.ok()) << s;
    if (!s.ok()) break;
    for (size_t b = 0; b < members.size(); ++b) {
      Running& r = *members[b];
      if (r.fed < r.prompt->size()) continue;  // mid-prompt: its logits are not sampled
      const float* row = &logits[b * vocab];
      r.logits.emplace_back(row, row + vocab);
      r.next = Argmax(row, vocab);
      r.tokens.push_back(r.next);
    }
  }
  return runs;
}

void ExpectSameAsAlone(const std::vector<Running>& runs, const std::vector<Alone>& alone,
                       const ModelConfig& config, const std::vector<std::vector<int>>& prompts) {
  for (size_t i = 0; i < runs.size(); ++i) {
    SCOPED_TRACE(::testing::Message() << "sequence " << i);
    EXPECT_EQ(runs[i].tokens, alone[i].tokens);
    ASSERT_EQ(runs[i].logits.size(), alone[i].logits.size());
    for (size_t t = 0; t < runs[i].logits.size(); ++t) {
      const int context = static_cast<int>(prompts[i].size() + t);
      const double tol =
          Fp32Tolerance(MaxAbs(alone[i].logits[t]), DecoderReductionLength(config, context));
      EXPECT_TRUE(AllClose(runs[i].logits[t], alone[i].logits[t], tol)) << "step " << t;
    }
  }
}

// Each sequence alone, then batched on the schedules of `seeds` with chunks of up to
// `max_chunk` tokens; the same tokens, logits within the tolerance.
void ExpectBatchedMatchesAlone(int tp, std::initializer_list<uint64_t> seeds, int max_chunk) {
  EngineOptions options;
  options.tp = tp;
  ASSERT_OK_AND_ASSIGN(auto engine, Engine::Create(Stories(), options));
  const std::vector<std::vector<int>> prompts = Prompts(engine->config());
  std::vector<Alone> alone;
  for (const auto& p : prompts) alone.push_back(RunAlone(*engine, p));
  for (uint64_t seed : seeds) {
    SCOPED_TRACE(::testing::Message() << "seed " << seed);
    const std::vector<Running> runs = RunBatched(*engine, prompts, seed, max_chunk);
    ExpectSameAsAlone(runs, alone, engine->config(), prompts);
  }
}

class BatchedStepTest : public ::testing::TestWithParam<int> {};

TEST_P(BatchedStepTest, SeededSchedulesMatchEachSequenceAlone) {
  ExpectBatchedMatchesAlone(GetParam(), {1, 2, 3}, /*max_chunk=*/7);
}

// Chunks as long as the longest prompt: every prompt in one piece, then decodes together.
TEST_P(BatchedStepTest, WholePromptsThenDecodeTogether) {
  ExpectBatchedMatchesAlone(GetParam(), {7}, /*max_chunk=*/64);
}

INSTANTIATE_TEST_SUITE_P(Tp, BatchedStepTest, ::testing::Values(1, 2));

TEST(BatchedStepErrorsTest, BadEntriesFailTheStepBeforeAnythingRuns) {
  ASSERT_OK_AND_ASSIGN(auto engine, Engine::Create(Stories(), EngineOptions()));
  auto a = engine->NewSequence();
  auto b = engine->NewSequence();
  const std::vector<int> good = {1, 403};
  const std::vector<int> bad = {1, 100000};
  EXPECT_THAT(engine->Step({}, nullptr), StatusIs(absl::StatusCode::kInvalidArgument));
  const std::vector<StepEntry> with_bad = {{a.get(), good}, {b.get(), bad}};
  EXPECT_THAT(engine->Step(with_bad, nullptr),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("sequence 1")));
  const std::vector<StepEntry> twice = {{a.get(), good}, {a.get(), good}};
  EXPECT_THAT(engine->Step(twice, nullptr),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("same cache")));
  const std::vector<int> too_long(engine->config().max_seq_len + 1, 1);
  const std::vector<StepEntry> past_context = {{a.get(), good}, {b.get(), too_long}};
  EXPECT_THAT(engine->Step(past_context, nullptr),
              StatusIs(absl::StatusCode::kOutOfRange, ::testing::HasSubstr("entry 1")));
  // Nothing was fed by the failed steps.
  EXPECT_EQ(a->next_position(), 0);
  EXPECT_EQ(b->next_position(), 0);
  EXPECT_TRUE(a->tokens().empty());
}

TEST(BatchedStepErrorsTest, AFullPoolFailsTheWholeStepAndFeedsNothing) {
  EngineOptions options;
  options.kv_tokens_per_block = 16;
  // 5 layers x 4 KV heads: 20 blocks hold 16 slots per (layer, head) for one sequence.
  options.kv_max_blocks = 20;
  ASSERT_OK_AND_ASSIGN(auto engine, Engine::Create(Stories(), options));
  auto a = engine->NewSequence();
  auto b = engine->NewSequence();
  const std::vector<int> prompt(10, 403);
  const std::vector<StepEntry> batch = {{a.get(), prompt}, {b.get(), prompt}};
  EXPECT_THAT(engine->Step(batch, nullptr), StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_EQ(a->next_position(), 0);
  EXPECT_EQ(b->next_position(), 0);
  // One sequence alone fits, and continues from the blocks it reserved.
  const std::vector<StepEntry> one = {{a.get(), prompt}};
  EXPECT_THAT(engine->Step(one, nullptr), dapq::testing::IsOk());
  EXPECT_EQ(a->next_position(), 10);
}

}  // namespace
}  // namespace dapq::worker
