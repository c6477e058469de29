// File: worker/compress/compression_engine_test.cc
// Compression inside the engine, on the real stories260K model and a synthetic GQA model:
//  - invariant 3: a budget >= n is bit-identical to the uncompressed engine, for every method,
//    also when the compressor runs and keeps every token;
//  - invariant 1: after compression the next token goes to position n;
//  - DapQ(positions=actual, content=last) keeps exactly SnapKV's set;
//  - invariant 2: keep-sets identical on every rank and for TP = 1, 2, 4 (shared, per_head,
//    adaptive);
//  - DapQ forward mode, and errors naming the bad field.
#include <map>
#include <memory>

#include "gtest/gtest.h"
#include "tests/util/keep_sets.h"
#include "tests/util/status_matchers.h"
#include "tests/util/stories_model.h"
#include "tests/util/test_paths.h"
#include "worker/engine.h"
#include "worker/synthetic_model.h"
#include "worker/tokenizer.h"

namespace dapq::worker::compress {
namespace {
using ::dapq::testing::IsOk;
using ::dapq::testing::KeepSets;
using ::dapq::testing::StatusIs;

std::shared_ptr<const ModelWeights> Stories() { return dapq::testing::SharedStories260K(); }

std::vector<int> StoryPrompt() {
  auto tok = Tokenizer::Load(dapq::testing::Tok512Path(), 512);
  EXPECT_TRUE(tok.ok());
  return tok->Encode(
      "Once upon a time, there was a little boy named Tim. Tim had a big red ball. He liked to "
      "play with his ball in the park every day. The sun was warm and the birds sang. One day, "
      "his friend Sue came to the park with her dog. The dog was very happy and ran around.",
      true, false);
}

std::unique_ptr<Engine> MakeEngine(std::shared_ptr<const ModelWeights> m, int tp = 1) {
  EngineOptions o;
  o.tp = tp;
  o.prefill_chunk = 40;    // several chunks: collection must work across them
  o.prefix_cache = false;  // the same prompts run many times, each compared bit for bit
  auto e = Engine::Create(std::move(m), o);
  EXPECT_TRUE(e.ok()) << e.status();
  return *std::move(e);
}

CompressionConfig Config(Method m, int budget) {
  CompressionConfig c;
  c.method = m;
  c.budget_tokens = budget;
  return c;
}

constexpr Method kMethods[] = {Method::kDapq,         Method::kSnapKv, Method::kH2o,
                               Method::kStreamingLlm, Method::kTova,   Method::kExpectedAttention,
                               Method::kRandom};

// Prefill (compressed) then decode `steps` greedy tokens; all logits returned.
std::vector<std::vector<float>> Decode(Engine& e, Sequence& seq, const std::vector<int>& prompt,
                                       const CompressionConfig& c, int steps) {
  std::vector<std::vector<float>> out(1);
  auto stats = e.PrefillCompressed(seq, prompt, c, &out[0]);
  EXPECT_TRUE(stats.ok()) << stats.status();
  for (int i = 0; i < steps; ++i) {
    const int token = ArgMax(out.back());
    const int32_t pos = seq.next_position();
    out.emplace_back();
    EXPECT_THAT(e.Forward(seq, std::span(&token, 1), std::span(&pos, 1), &out.back()), IsOk());
  }
  return out;
}

TEST(CompressionEngineTest, BudgetAtLeastPromptIsBitIdentical) {
  auto engine = MakeEngine(Stories());
  const std::vector<int> prompt = StoryPrompt();
  const int n = static_cast<int>(prompt.size());
  auto full_seq = engine->NewSequence();
  const auto full = Decode(*engine, *full_seq, prompt, CompressionConfig{}, 12);
  for (Method m : kMethods) {
    for (bool skip : {true, false}) {
      SCOPED_TRACE(::testing::Message() << MethodName(m) << " skip_within_budget=" << skip);
      CompressionConfig c = Config(m, n);
      c.skip_within_budget = skip;
      auto seq = engine->NewSequence();
      const auto got = Decode(*engine, *seq, prompt, c, 12);
      EXPECT_EQ(got, full);  // bit for bit
      EXPECT_EQ(seq->next_position(), n + 12);
      EXPECT_EQ(seq->cache(0).positions(3, 1).size(), static_cast<size_t>(n + 12));
    }
  }
}

TEST(CompressionEngineTest, NextPositionStaysNAfterCompression) {
  auto engine = MakeEngine(Stories());
  const std::vector<int> prompt = StoryPrompt();
  const int n = static_cast<int>(prompt.size());
  auto seq = engine->NewSequence();
  std::vector<float> logits;
  ASSERT_OK_AND_ASSIGN(CompressionStats stats,
                       engine->PrefillCompressed(*seq, prompt, Config(Method::kDapq, 24), &logits));
  EXPECT_TRUE(stats.compressed);
  EXPECT_EQ(seq->next_position(), n);
  EXPECT_EQ(seq->cached_tokens(), 24);
  EXPECT_EQ(stats.slots_after, 24L * 5 * 4);
  EXPECT_EQ(stats.slots_before, static_cast<long>(n) * 5 * 4);
  // Reference: a full-cache sequence compacted to the same keep-sets by hand, then the next
  // token decoded at position n on both: identical logits. Decoding at the slot count (24)
  // instead gives different logits.
  auto ref = engine->NewSequence();
  ASSERT_THAT(engine->Prefill(*ref, prompt, nullptr), IsOk());
  for (int l = 0; l < 5; ++l) {
    for (int h = 0; h < 4; ++h) {
      std::vector<int32_t> slots(seq->cache(0).positions(l, h).begin(),
                                 seq->cache(0).positions(l, h).end());  // slot == position here
      ASSERT_THAT(ref->cache(0).Keep(l, h, slots), IsOk());
    }
  }
  const int token = ArgMax(logits);
  std::vector<float> a, b, wrong;
  const int32_t pos_n = n, pos_slots = 24;
  ASSERT_THAT(engine->Forward(*seq, std::span(&token, 1), std::span(&pos_n, 1), &a), IsOk());
  ASSERT_THAT(engine->Forward(*ref, std::span(&token, 1), std::span(&pos_n, 1), &b), IsOk());
  EXPECT_EQ(a, b);
  auto other = engine->NewSequence();
  ASSERT_TRUE(engine->PrefillCompressed(*other, prompt, Config(Method::kDapq, 24), nullptr).ok());
  ASSERT_THAT(engine->Forward(*other, std::span(&token, 1), std::span(&pos_slots, 1), &wrong),
              IsOk());
  EXPECT_NE(a, wrong);
}

TEST(CompressionEngineTest, DapqActualLastKeepsSnapKvSet) {
  auto engine = MakeEngine(Stories());
  const std::vector<int> prompt = StoryPrompt();
  for (Storage storage : {Storage::kShared, Storage::kPerHead}) {
    CompressionConfig snap = Config(Method::kSnapKv, 30);
    snap.window = 8;
    snap.query_window = 16;
    snap.pool_kernel = 7;
    snap.storage = storage;
    CompressionConfig dapq = snap;
    dapq.method = Method::kDapq;
    dapq.positions = Positions::kActual;
    dapq.content = Content::kLast;
    auto a = engine->NewSequence();
    auto b = engine->NewSequence();
    ASSERT_TRUE(engine->PrefillCompressed(*a, prompt, snap, nullptr).ok());
    ASSERT_TRUE(engine->PrefillCompressed(*b, prompt, dapq, nullptr).ok());
    EXPECT_EQ(KeepSets(*engine, *a), KeepSets(*engine, *b));
    dapq.positions = Positions::kFuture;  // and the future positions do change the set
    auto c = engine->NewSequence();
    ASSERT_TRUE(engine->PrefillCompressed(*c, prompt, dapq, nullptr).ok());
    EXPECT_NE(KeepSets(*engine, *a), KeepSets(*engine, *c));
  }
}

struct TpCase {
  Method method;
  Storage storage;
  Allocator allocator;
};

TEST(CompressionEngineTest, KeepSetsIdenticalAcrossRanksAndTpDegrees) {
  const std::vector<int> prompt = StoryPrompt();
  const TpCase cases[] = {
      {Method::kDapq, Storage::kShared, Allocator::kUniform},
      {Method::kDapq, Storage::kPerHead, Allocator::kUniform},
      {Method::kDapq, Storage::kPerHead, Allocator::kAdaptive},
      {Method::kDapq, Storage::kShared, Allocator::kPyramid},
      {Method::kSnapKv, Storage::kShared, Allocator::kUniform},
      {Method::kSnapKv, Storage::kPerHead, Allocator::kAdaptive},
      {Method::kH2o, Storage::kShared, Allocator::kUniform},
      {Method::kTova, Storage::kShared, Allocator::kUniform},
      {Method::kExpectedAttention, Storage::kPerHead, Allocator::kUniform},
      {Method::kRandom, Storage::kShared, Allocator::kUniform},
  };
  for (const TpCase& tc : cases) {
    CompressionConfig c = Config(tc.method, 28);
    c.storage = tc.storage;
    c.allocator = tc.allocator;
    std::map<std::pair<int, int>, std::vector<int32_t>> base;
    for (int tp : {1, 2, 4}) {
      SCOPED_TRACE(::testing::Message() << c.DebugString() << " tp=" << tp);
      auto engine = MakeEngine(Stories(), tp);
      auto seq = engine->NewSequence();
      ASSERT_TRUE(engine->PrefillCompressed(*seq, prompt, c, nullptr).ok());
      const auto sets = KeepSets(*engine, *seq);
      if (tc.storage == Storage::kShared) {
        for (const auto& [key, set] : sets) EXPECT_EQ(set, sets.at({key.first, 0}));
      }
      if (tp == 1) {
        base = sets;
      } else {
        EXPECT_EQ(sets, base);
      }
    }
  }
}

TEST(CompressionEngineTest, SyntheticGqaKeepSetsIdenticalAcrossTp) {
  auto w = MakeSyntheticModel("synthetic:tiny-gqa");
  ASSERT_TRUE(w.ok());
  auto model = std::make_shared<const ModelWeights>(*std::move(w));
  std::vector<int> prompt = {1};
  for (int i = 0; i < 150; ++i) prompt.push_back((i * 53 + 7) % 320);
  for (Storage storage : {Storage::kShared, Storage::kPerHead}) {
    CompressionConfig c = Config(Method::kDapq, 40);
    c.storage = storage;
    std::map<std::pair<int, int>, std::vector<int32_t>> base;
    std::vector<int> base_tokens;
    for (int tp : {1, 2, 4}) {
      SCOPED_TRACE(::testing::Message() << "tp=" << tp << " storage=" << static_cast<int>(storage));
      auto engine = MakeEngine(model, tp);
      auto seq = engine->NewSequence();
      ASSERT_TRUE(engine->PrefillCompressed(*seq, prompt, c, nullptr).ok());
      GenerateOptions g;
      g.max_new_tokens = 10;
      g.compression = c;
      ASSERT_OK_AND_ASSIGN(GenerateResult r, engine->Generate(prompt, g));
      if (tp == 1) {
        base = KeepSets(*engine, *seq);
        base_tokens = r.tokens;
      } else {
        EXPECT_EQ(KeepSets(*engine, *seq), base);
        EXPECT_EQ(r.tokens, base_tokens);
      }
    }
  }
}

TEST(CompressionEngineTest, DapqForwardModeScoresPlaceholdersAndDropsThem) {
  auto engine = MakeEngine(Stories(), 2);
  const std::vector<int> prompt = StoryPrompt();
  const int n = static_cast<int>(prompt.size());
  CompressionConfig c = Config(Method::kDapq, 24);
  c.mode = DapqMode::kForward;
  c.window = 8;
  auto seq = engine->NewSequence();
  ASSERT_OK_AND_ASSIGN(CompressionStats stats, engine->PrefillCompressed(*seq, prompt, c, nullptr));
  EXPECT_TRUE(stats.compressed);
  EXPECT_EQ(seq->next_position(), n);
  for (int l = 0; l < 5; ++l) {
    auto p = seq->cache(1).positions(l, 0);
    ASSERT_EQ(p.size(), 24u);
    EXPECT_LT(p.back(), n);      // placeholder tokens are gone
    EXPECT_EQ(p.back(), n - 1);  // the local window is kept
  }
}

TEST(CompressionEngineTest, ErrorsAreClear) {
  auto engine = MakeEngine(Stories());
  const std::vector<int> prompt = StoryPrompt();
  auto seq = engine->NewSequence();
  auto fresh = engine->NewSequence();
  EXPECT_THAT(engine->PrefillCompressed(*fresh, prompt, Config(Method::kDapq, -3), nullptr),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("budget=-3")));
  std::vector<int> long_prompt(505, 261);
  CompressionConfig forward = Config(Method::kDapq, 24);
  forward.mode = DapqMode::kForward;
  EXPECT_THAT(engine->PrefillCompressed(*fresh, long_prompt, forward, nullptr),
              StatusIs(absl::StatusCode::kOutOfRange, ::testing::HasSubstr("forward mode")));
}

}  // namespace
}  // namespace dapq::worker::compress
