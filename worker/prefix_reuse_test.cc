// File: worker/prefix_reuse_test.cc
// Prefix reuse (EngineOptions::prefix_cache) on stories260K: several questions over one shared
// document (the batch-job pattern, a ~90% common prefix) give the same greedy tokens as an
// engine without reuse, for the full cache and for compression methods side by side (DapQ,
// SnapKV reuse the prefix; H2O, which scores every prompt query, prefills it all); later prompts
// prefill only their suffix (counted by the engine); compression copies the shared blocks it
// rewrites, so a later full-cache request still matches; the pool holds nothing once the
// sequences are gone but the cached prefix, which ClearPrefixCache returns. TP 1 and 2.
#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/util/stories_model.h"
#include "tests/util/test_paths.h"
#include "worker/engine.h"
#include "worker/tokenizer.h"

namespace dapq::worker {
namespace {

constexpr int kNewTokens = 16;
constexpr int kTokensPerBlock = 16;

struct Request {
  std::vector<int> prompt;
  compress::CompressionConfig compression;
  bool reusable = true;  // the method's scorer keeps what reuse provides
};

std::vector<Request> Requests(const ModelConfig& config) {
  auto tok = Tokenizer::Load(dapq::testing::Tok512Path(), config.vocab_size);
  EXPECT_TRUE(tok.ok()) << tok.status();
  const std::string document = dapq::testing::kStoryDocument;
  const std::vector<std::string> questions = {" What did Lily find?", " Who is Max?",
                                              " Where did they walk?", " What did mom say?",
                                              " Why was Lily happy?"};
  compress::CompressionConfig full, dapq, snapkv, h2o;
  dapq.method = compress::Method::kDapq;
  dapq.budget_tokens = 48;
  snapkv.method = compress::Method::kSnapKv;
  snapkv.budget_tokens = 64;
  h2o.method = compress::Method::kH2o;
  h2o.budget_tokens = 48;
  const compress::CompressionConfig methods[] = {full, dapq, snapkv, full, h2o};
  std::vector<Request> requests;
  for (size_t i = 0; i < questions.size(); ++i) {
    Request r;
    r.prompt = tok->Encode(document + questions[i], /*add_bos=*/true, /*add_eos=*/false);
    r.compression = methods[i];
    r.reusable = methods[i].method != compress::Method::kH2o;
    requests.push_back(std::move(r));
  }
  return requests;
}

size_t CommonPrefix(const std::vector<int>& a, const std::vector<int>& b) {
  size_t n = 0;
  while (n < a.size() && n < b.size() && a[n] == b[n]) ++n;
  return n;
}

std::unique_ptr<Engine> MakeEngine(int tp, bool prefix_cache) {
  EngineOptions o;
  o.tp = tp;
  o.kv_tokens_per_block = kTokensPerBlock;
  o.prefix_cache = prefix_cache;
  auto e = Engine::Create(dapq::testing::SharedStories260K(), o);
  EXPECT_TRUE(e.ok()) << e.status();
  return *std::move(e);
}

class PrefixReuseTest : public ::testing::TestWithParam<int> {};

TEST_P(PrefixReuseTest, SharedDocumentPrefillsOnlyTheSuffixWithTheSameTokens) {
  const int tp = GetParam();
  auto reference = MakeEngine(tp, false);
  auto engine = MakeEngine(tp, true);
  const std::vector<Request> requests = Requests(engine->config());
  const size_t shared = CommonPrefix(requests[0].prompt, requests[1].prompt);
  ASSERT_GE(shared * 10, requests[0].prompt.size() * 8) << "the document is most of the prompt";

  GenerateOptions options;
  options.max_new_tokens = kNewTokens;
  options.stop_at_stop_tokens = false;
  int64_t saved = 0;
  for (size_t i = 0; i < requests.size(); ++i) {
    SCOPED_TRACE(::testing::Message() << "request " << i << " tp " << tp);
    options.compression = requests[i].compression;
    auto expected = reference->Generate(requests[i].prompt, options);
    ASSERT_TRUE(expected.ok()) << expected.status();
    const int64_t forwarded = engine->forwarded_tokens();
    auto got = engine->Generate(requests[i].prompt, options);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(got->tokens, expected->tokens);
    EXPECT_EQ(got->compression.slots_after, expected->compression.slots_after);

    const int reused = got->reused_prompt_tokens;
    size_t longest = 0;  // the longest prefix shared with an earlier prompt
    for (size_t j = 0; j < i; ++j) {
      longest = std::max(longest, CommonPrefix(requests[i].prompt, requests[j].prompt));
    }
    if (i == 0 || !requests[i].reusable) {
      EXPECT_EQ(reused, 0);
    } else {
      // Whole blocks of the shared document, leaving the scorer's query window to prefill.
      EXPECT_GT(reused, 0);
      EXPECT_EQ(reused % kTokensPerBlock, 0);
      EXPECT_LE(static_cast<size_t>(reused), longest);
      if (requests[i].compression.method == compress::Method::kFull) {
        EXPECT_EQ(static_cast<size_t>(reused), longest / kTokensPerBlock * kTokensPerBlock);
        // Prefilled: the prompt past the reused blocks; then every generated token but the last.
        EXPECT_EQ(engine->forwarded_tokens() - forwarded,
                  static_cast<int64_t>(requests[i].prompt.size()) - reused + kNewTokens - 1);
      }
    }
    saved += reused;
    for (int r = 0; r < engine->local_ranks(); ++r) {
      EXPECT_EQ(engine->kv_pool(r).blocks_in_use(), 0) << "rank " << r;
    }
  }
  EXPECT_EQ(engine->prefix_reused_tokens(), saved);
  EXPECT_GE(saved, static_cast<int64_t>(shared) * 2);
  for (int r = 0; r < engine->local_ranks(); ++r) {
    EXPECT_GT(engine->kv_pool(r).blocks_cached(), 0);
    EXPECT_EQ(engine->kv_pool(r).cached_idle(), engine->kv_pool(r).blocks_cached());
  }
  engine->ClearPrefixCache();
  for (int r = 0; r < engine->local_ranks(); ++r) {
    EXPECT_EQ(engine->kv_pool(r).blocks_cached(), 0);
    EXPECT_EQ(engine->kv_pool(r).blocks_in_use(), 0);
  }
}

TEST_P(PrefixReuseTest, ACappedPoolEvictsCachedPrefixesInsteadOfFailing) {
  const int tp = GetParam();
  EngineOptions o;
  o.tp = tp;
  o.kv_tokens_per_block = kTokensPerBlock;
  const ModelConfig& c = dapq::testing::SharedStories260K()->config;
  const long tables = static_cast<long>(c.n_layers) * c.n_kv_heads / tp;
  o.kv_max_blocks = tables * 16;  // 256 slots per (layer, KV head): one prompt and a bit
  auto engine = Engine::Create(dapq::testing::SharedStories260K(), o);
  ASSERT_TRUE(engine.ok()) << engine.status();
  const std::vector<Request> requests = Requests(c);
  GenerateOptions options;
  options.max_new_tokens = 8;
  for (const Request& r : requests) {
    // Distinct documents: a one-token change at the front makes every block new.
    std::vector<int> prompt = r.prompt;
    prompt[1] = (prompt[1] + 1) % c.vocab_size;
    for (int round = 0; round < 2; ++round) {
      auto got = (*engine)->Generate(round == 0 ? prompt : r.prompt, options);
      ASSERT_TRUE(got.ok()) << got.status();
    }
  }
  EXPECT_LE((*engine)->kv_pool(0).blocks_cached(), o.kv_max_blocks);
  EXPECT_EQ((*engine)->kv_pool(0).blocks_in_use(), 0);
}

INSTANTIATE_TEST_SUITE_P(Tp, PrefixReuseTest, ::testing::Values(1, 2));

}  // namespace
}  // namespace dapq::worker
