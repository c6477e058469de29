// File: worker/compress/streaming_compression_test.cc
// Streaming compression (CompressionConfig::streaming_chunk) and compression across a session's
// turns (every_turn), in the engine, on stories260K and the synthetic long-context shape:
//  - a chunk at least as long as the prompt is the one-shot compression, bit for bit;
//  - streamed keep-sets are identical on every rank and for TP = 1, 2, 4, ragged per-head
//    caches (adaptive budgets) and H2O's carried scores included;
//  - a pool capped at budget + chunk tokens per (layer, KV head) serves a prompt 100x longer
//    than the cap, and positions continue from n;
//  - a session compressed on each of 20 turns stays within its budget and continues exactly
//    like the same turns replayed;
//  - errors name the field.
#include <map>
#include <memory>
#include <string>
#include <vector>

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

// About 150 tokens: several 40-token chunks.
std::vector<int> LongStoryPrompt() {
  auto tok = Tokenizer::Load(dapq::testing::Tok512Path(), 512);
  EXPECT_TRUE(tok.ok());
  return tok->Encode(
      "Once upon a time, there was a little boy named Tim. Tim had a big red ball. He liked to "
      "play with his ball in the park every day. The sun was warm and the birds sang. One day, "
      "his friend Sue came to the park with her dog. The dog was very happy and ran around. "
      "Sue threw a stick and the dog ran after it. Tim kicked his ball high into the sky. The "
      "ball fell into a tree and got stuck. Tim was sad. Sue said, \"Let's ask mom for help.\" "
      "Mom came with a long stick and got the ball down. Tim and Sue were happy again.",
      true, false);
}

std::unique_ptr<Engine> MakeEngine(std::shared_ptr<const ModelWeights> m, int tp = 1,
                                   long max_blocks = 0) {
  EngineOptions o;
  o.tp = tp;
  o.prefill_chunk = 16;    // forward passes shorter than a streaming chunk
  o.prefix_cache = false;  // the same prompts run many times, each compared bit for bit
  o.kv_max_blocks = max_blocks;
  auto e = Engine::Create(std::move(m), o);
  EXPECT_TRUE(e.ok()) << e.status();
  return *std::move(e);
}

CompressionConfig Config(Method m, int budget, int chunk) {
  CompressionConfig c;
  c.method = m;
  c.budget_tokens = budget;
  c.streaming_chunk = chunk;
  return c;
}

struct Case {
  Method method;
  Storage storage;
  Allocator allocator;
  DapqMode mode = DapqMode::kPseudo;
};

const Case kCases[] = {
    {Method::kDapq, Storage::kShared, Allocator::kUniform},
    {Method::kDapq, Storage::kPerHead, Allocator::kAdaptive},
    {Method::kDapq, Storage::kShared, Allocator::kPyramid},
    {Method::kDapq, Storage::kShared, Allocator::kUniform, DapqMode::kForward},
    {Method::kSnapKv, Storage::kShared, Allocator::kUniform},
    {Method::kSnapKv, Storage::kPerHead, Allocator::kAdaptive},
    {Method::kH2o, Storage::kShared, Allocator::kUniform},
    {Method::kH2o, Storage::kPerHead, Allocator::kAdaptive},
    {Method::kStreamingLlm, Storage::kShared, Allocator::kUniform},
    {Method::kTova, Storage::kShared, Allocator::kUniform},
    {Method::kExpectedAttention, Storage::kPerHead, Allocator::kUniform},
    {Method::kRandom, Storage::kPerHead, Allocator::kUniform},
};

CompressionConfig ConfigOf(const Case& k, int budget, int chunk) {
  CompressionConfig c = Config(k.method, budget, chunk);
  c.storage = k.storage;
  c.allocator = k.allocator;
  c.mode = k.mode;
  return c;
}

TEST(StreamingCompressionTest, ChunkAtLeastThePromptIsOneShotBitForBit) {
  auto engine = MakeEngine(Stories());
  const std::vector<int> prompt = LongStoryPrompt();
  const int n = static_cast<int>(prompt.size());
  for (const Case& k : kCases) {
    CompressionConfig one_shot = ConfigOf(k, 28, 0);
    SCOPED_TRACE(one_shot.DebugString());
    auto a = engine->NewSequence();
    std::vector<float> logits_a;
    ASSERT_OK_AND_ASSIGN(CompressionStats sa,
                         engine->PrefillCompressed(*a, prompt, one_shot, &logits_a));
    for (int chunk : {n, n + 1, 100000}) {
      CompressionConfig streamed = ConfigOf(k, 28, chunk);
      auto b = engine->NewSequence();
      std::vector<float> logits_b;
      ASSERT_OK_AND_ASSIGN(CompressionStats sb,
                           engine->PrefillCompressed(*b, prompt, streamed, &logits_b));
      EXPECT_EQ(KeepSets(*engine, *b), KeepSets(*engine, *a));
      EXPECT_EQ(logits_b, logits_a);
      EXPECT_EQ(sb.slots_before, sa.slots_before);
      EXPECT_EQ(sb.slots_after, sa.slots_after);
      EXPECT_EQ(sb.compressions, 1);
    }
  }
}

TEST(StreamingCompressionTest, StreamedKeepSetsIdenticalAcrossRanksAndTpDegrees) {
  const std::vector<int> prompt = LongStoryPrompt();
  const int n = static_cast<int>(prompt.size());
  ASSERT_GT(n, 120);
  for (const Case& k : kCases) {
    const CompressionConfig c = ConfigOf(k, 28, 40);
    std::map<std::pair<int, int>, std::vector<int32_t>> base;
    std::vector<int> base_tokens;
    for (int tp : {1, 2, 4}) {
      SCOPED_TRACE(::testing::Message() << c.DebugString() << " tp=" << tp);
      auto engine = MakeEngine(Stories(), tp);
      auto seq = engine->NewSequence();
      ASSERT_OK_AND_ASSIGN(CompressionStats stats,
                           engine->PrefillCompressed(*seq, prompt, c, nullptr));
      // One per 40-token chunk; a short last chunk may have merged into the one before it.
      EXPECT_GE(stats.compressions, n / 40);
      EXPECT_LE(stats.compressions, (n + 39) / 40);
      EXPECT_EQ(stats.slots_before, static_cast<long>(n) * 5 * 4);  // every token entered once
      EXPECT_EQ(seq->next_position(), n);
      const auto sets = KeepSets(*engine, *seq);
      long kept = 0;
      for (const auto& [key, set] : sets) {
        kept += static_cast<long>(set.size());
        if (c.storage == Storage::kShared) EXPECT_EQ(set, sets.at({key.first, 0}));
        if (c.allocator == Allocator::kUniform) EXPECT_EQ(set.size(), 28u);
        EXPECT_TRUE(std::is_sorted(set.begin(), set.end()));
      }
      if (c.allocator != Allocator::kPyramid) EXPECT_EQ(kept, 28L * 5 * 4);  // the budget
      GenerateOptions g;
      g.max_new_tokens = 6;
      g.compression = c;
      ASSERT_OK_AND_ASSIGN(GenerateResult r, engine->Generate(prompt, g));
      if (tp == 1) {
        base = sets;
        base_tokens = r.tokens;
      } else {
        EXPECT_EQ(sets, base);
        EXPECT_EQ(r.tokens, base_tokens);
      }
    }
  }
}

TEST(StreamingCompressionTest, StreamingDiffersFromOneShotButKeepsTheLastChunksWindow) {
  // Streaming is not a no-op: earlier chunks were scored without the later ones' queries.
  auto engine = MakeEngine(Stories());
  const std::vector<int> prompt = LongStoryPrompt();
  const int n = static_cast<int>(prompt.size());
  CompressionConfig c = Config(Method::kSnapKv, 40, 40);
  c.window = 8;
  c.query_window = 16;
  auto streamed = engine->NewSequence();
  ASSERT_TRUE(engine->PrefillCompressed(*streamed, prompt, c, nullptr).ok());
  c.streaming_chunk = 0;
  auto one_shot = engine->NewSequence();
  ASSERT_TRUE(engine->PrefillCompressed(*one_shot, prompt, c, nullptr).ok());
  EXPECT_NE(KeepSets(*engine, *streamed), KeepSets(*engine, *one_shot));
  for (const auto& [key, set] : KeepSets(*engine, *streamed)) {
    ASSERT_EQ(set.size(), 40u);
    for (int i = 0; i < 8; ++i) EXPECT_EQ(set[32 + i], n - 8 + i);  // the window, as is
  }
}

TEST(StreamingCompressionTest, PoolOfBudgetPlusChunkServesAPrompt100TimesLonger) {
  auto w = MakeSyntheticModel("synthetic:tiny-long");
  ASSERT_TRUE(w.ok()) << w.status();
  auto model = std::make_shared<const ModelWeights>(*std::move(w));
  constexpr int kBudget = 32, kChunk = 32, kBlock = 16;
  const ModelConfig& m = model->config;
  // Exactly budget + chunk tokens of blocks for every (layer, KV head).
  const long cap = static_cast<long>(kBudget + kChunk) / kBlock * m.n_layers * m.n_kv_heads;
  const int n = 100 * (kBudget + kChunk);
  std::vector<int> prompt = {1};
  for (int i = 1; i < n; ++i) prompt.push_back((i * 7919 + 13) % m.vocab_size);
  // (Adaptive budgets bound each layer's total, not each head: one head may hold more than the
  // budget, so a pool sized per head is the uniform allocators' bound.)
  for (const Case& k : {Case{Method::kDapq, Storage::kShared, Allocator::kUniform},
                        Case{Method::kDapq, Storage::kPerHead, Allocator::kUniform},
                        Case{Method::kH2o, Storage::kShared, Allocator::kUniform}}) {
    CompressionConfig c = ConfigOf(k, kBudget, kChunk);
    c.query_window = 16;
    SCOPED_TRACE(c.DebugString());
    auto engine = MakeEngine(model, 1, cap);
    auto seq = engine->NewSequence();
    std::vector<float> logits;
    ASSERT_OK_AND_ASSIGN(CompressionStats stats,
                         engine->PrefillCompressed(*seq, prompt, c, &logits));
    EXPECT_EQ(stats.compressions, n / kChunk - 1);  // the first chunk fits the budget
    EXPECT_EQ(seq->next_position(), n);
    EXPECT_LE(seq->cached_tokens(), kBudget);
    EXPECT_LE(engine->kv_pool(0).peak_blocks_referenced(), cap);
    // Decoding continues at positions n, n + 1, ... within the same pool.
    int token = ArgMax(logits);
    for (int i = 0; i < 8; ++i) {
      const int32_t pos = seq->next_position();
      ASSERT_THAT(engine->Forward(*seq, std::span(&token, 1), std::span(&pos, 1), &logits), IsOk());
      token = ArgMax(logits);
    }
    EXPECT_EQ(seq->next_position(), n + 8);
    for (int l = 0; l < m.n_layers; ++l) {
      EXPECT_EQ(seq->cache(0).positions(l, 0).back(), n + 7);
    }
    // The same prompt compressed once, at the end, needs the whole prompt's cache first.
    c.streaming_chunk = 0;
    auto one_shot = engine->NewSequence();
    EXPECT_THAT(engine->PrefillCompressed(*one_shot, prompt, c, nullptr).status(),
                StatusIs(absl::StatusCode::kResourceExhausted));
  }
}

TEST(StreamingCompressionTest, SessionCompressedEveryTurnStaysInBudgetAndReplays) {
  auto engine = MakeEngine(Stories());
  const std::vector<int> story = LongStoryPrompt();
  for (const Case& k : {Case{Method::kDapq, Storage::kShared, Allocator::kUniform},
                        Case{Method::kSnapKv, Storage::kPerHead, Allocator::kAdaptive},
                        Case{Method::kH2o, Storage::kShared, Allocator::kUniform}}) {
    CompressionConfig c = ConfigOf(k, 32, 0);
    c.every_turn = true;
    c.window = 4;
    c.query_window = 8;
    SCOPED_TRACE(c.DebugString());
    GenerateOptions g;
    g.max_new_tokens = 5;
    g.compression = c;
    g.stop_at_stop_tokens = false;
    auto seq = engine->NewSequence();
    std::vector<std::vector<int>> answers;
    const ModelConfig& m = engine->config();
    for (int turn = 0; turn < 20; ++turn) {
      const std::vector<int> ask(story.begin() + (turn * 7) % 100,
                                 story.begin() + (turn * 7) % 100 + 12 + turn % 5);
      const int positions = seq->next_position() + static_cast<int>(ask.size());
      ASSERT_OK_AND_ASSIGN(GenerateResult r, engine->Continue(*seq, ask, g));
      answers.push_back(r.tokens);
      EXPECT_EQ(r.compression.compressed, positions > 32) << "turn " << turn;
      // Retained (the budget, summed over each layer's heads: adaptive budgets move slots
      // between heads) + this turn's generated tokens fed after compression.
      EXPECT_LE(seq->cache(0).total_slots(),
                static_cast<long>(32 + g.max_new_tokens - 1) * m.n_layers * m.n_kv_heads)
          << "turn " << turn;
    }
    EXPECT_GT(seq->next_position(), 300);
    // The same turns replayed from the recorded history give the same caches...
    auto replayed = engine->NewSequence();
    ASSERT_THAT(engine->Replay(*replayed, seq->tokens(), seq->segments(), c), IsOk());
    EXPECT_EQ(KeepSets(*engine, *replayed), KeepSets(*engine, *seq));
    EXPECT_EQ(replayed->next_position(), seq->next_position());
    // ...and continue exactly alike.
    const std::vector<int> last(story.begin() + 40, story.begin() + 52);
    ASSERT_OK_AND_ASSIGN(GenerateResult a, engine->Continue(*seq, last, g));
    ASSERT_OK_AND_ASSIGN(GenerateResult b, engine->Continue(*replayed, last, g));
    EXPECT_EQ(a.tokens, b.tokens);
  }
}

TEST(StreamingCompressionTest, ALastChunkShorterThanTheQueryWindowBorrowsOrMerges) {
  using V = std::vector<size_t>;
  EXPECT_EQ(StreamingChunkEnds(100, 200, 32), V({100}));
  EXPECT_EQ(StreamingChunkEnds(128, 64, 32), V({64, 128}));
  EXPECT_EQ(StreamingChunkEnds(140, 64, 32), V({64, 108, 140}));  // 12 -> 32, borrowed
  EXPECT_EQ(StreamingChunkEnds(140, 64, 8), V({64, 128, 140}));
  EXPECT_EQ(StreamingChunkEnds(70, 40, 32), V({38, 70}));
  EXPECT_EQ(StreamingChunkEnds(110, 40, 32), V({40, 78, 110}));
  EXPECT_EQ(StreamingChunkEnds(50, 40, 32), V({50}));  // 40 cannot spare 22: merged
  // A prompt whose last chunk is short scores that chunk with its full window of queries.
  auto engine = MakeEngine(Stories());
  std::vector<int> prompt = LongStoryPrompt();
  prompt.resize(140);
  CompressionConfig c = Config(Method::kSnapKv, 24, 64);
  c.window = 8;
  c.query_window = 32;
  auto seq = engine->NewSequence();
  ASSERT_OK_AND_ASSIGN(CompressionStats stats, engine->PrefillCompressed(*seq, prompt, c, nullptr));
  EXPECT_EQ(stats.compressions, 3);
  EXPECT_EQ(seq->cached_tokens(), 24);
}

TEST(StreamingCompressionTest, ErrorsNameTheField) {
  auto engine = MakeEngine(Stories());
  const std::vector<int> prompt = LongStoryPrompt();
  auto seq = engine->NewSequence();
  // A chunk shorter than the prompt queries SnapKV scores with (its 32-token window).
  EXPECT_THAT(
      engine->PrefillCompressed(*seq, prompt, Config(Method::kSnapKv, 48, 16), nullptr),
      StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("streaming_chunk=16")));
  EXPECT_EQ(seq->next_position(), 0);  // refused before anything ran
  EXPECT_THAT(
      engine->PrefillCompressed(*seq, prompt, Config(Method::kDapq, 48, -1), nullptr),
      StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("streaming_chunk=-1")));
}

}  // namespace
}  // namespace dapq::worker::compress
