// File: eval/needle_prompts_test.cc
// The needle prompt generator: deterministic per seed, the needle within the documented
// distance, prompt + cue + needle concatenating to the tokenization of the whole text.
#include "eval/needle_prompts.h"

#include <set>

#include "gtest/gtest.h"
#include "tests/util/status_matchers.h"
#include "tests/util/test_paths.h"

namespace dapq::eval {
namespace {

worker::Tokenizer LoadTok512() {
  auto t = worker::Tokenizer::Load(testing::Tok512Path(), 512);
  EXPECT_TRUE(t.ok()) << t.status();
  return *std::move(t);
}

TEST(NeedlePromptsTest, SameSeedSamePromptOtherSeedsDiffer) {
  const worker::Tokenizer tok = LoadTok512();
  auto a = MakeNeedlePrompt(tok, 7), b = MakeNeedlePrompt(tok, 7), c = MakeNeedlePrompt(tok, 8);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok()) << a.status() << b.status() << c.status();
  EXPECT_EQ(a->text, b->text);
  EXPECT_EQ(a->prompt, b->prompt);
  EXPECT_EQ(a->cue, b->cue);
  EXPECT_EQ(a->needle, b->needle);
  EXPECT_EQ(a->needle_position, b->needle_position);
  EXPECT_NE(a->text, c->text);
}

TEST(NeedlePromptsTest, NeedleWithinDocumentedDistanceAndTokensConcatenate) {
  const worker::Tokenizer tok = LoadTok512();
  const NeedlePromptOptions options;
  std::set<std::string> names;
  std::set<int> templates;
  for (uint64_t seed = 0; seed < 32; ++seed) {
    SCOPED_TRACE(seed);
    auto p = MakeNeedlePrompt(tok, seed, options);
    ASSERT_TRUE(p.ok()) << p.status();
    EXPECT_GE(p->distance(), options.min_distance);
    EXPECT_LE(p->distance(), options.max_distance);
    EXPECT_EQ(p->prompt.front(), worker::Tokenizer::kBos);
    EXPECT_EQ(p->prompt, tok.Encode(p->text, true, false));
    EXPECT_EQ(p->needle, tok.Encode(p->name, false, false));
    ASSERT_GE(p->needle.size(), 2u);  // more than a first piece to retrieve
    EXPECT_TRUE(
        std::equal(p->needle.begin(), p->needle.end(), p->prompt.begin() + p->needle_position));
    ASSERT_FALSE(p->cue.empty());
    std::vector<int> all = p->prompt;
    all.insert(all.end(), p->cue.begin(), p->cue.end());
    all.insert(all.end(), p->needle.begin(), p->needle.end());
    EXPECT_LE(static_cast<int>(all.size()), options.max_total_tokens);
    // The name is mentioned only by the needle sentence.
    EXPECT_EQ(p->text.find(p->name), p->text.rfind(p->name) - p->name.size() - 2);
    names.insert(p->name);
    templates.insert(p->template_id);
  }
  EXPECT_GE(names.size(), 5u);
  EXPECT_EQ(templates.size(), 2u);
}

TEST(NeedlePromptsTest, RejectsBadOptions) {
  const worker::Tokenizer tok = LoadTok512();
  NeedlePromptOptions o;
  o.min_distance = 200;
  o.max_distance = 100;
  EXPECT_THAT(
      MakeNeedlePrompt(tok, 0, o).status(),
      testing::StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("distance")));
  o = {};
  o.max_total_tokens = 100;
  EXPECT_THAT(MakeNeedlePrompt(tok, 0, o).status(),
              testing::StatusIs(absl::StatusCode::kInvalidArgument,
                                ::testing::HasSubstr("max_total_tokens")));
}

}  // namespace
}  // namespace dapq::eval
