// File: tokenizer/llama2c_tokenizer_json_test.cc
// The tokenizer.json generated from tok512.bin (Llama2cToTokenizerJson) against
// worker::Tokenizer, llama2.c's own algorithm: ids with and without BOS and decoded text, on the
// stories prompts, thousands of seeded random strings (ASCII, accents, CJK, emoji, invalid UTF-8)
// and strings built from tok512's pieces whose splits tie (where rank-by-pair BPE and llama2.c's
// best-merged-score could disagree).
#include "tokenizer/llama2c_tokenizer_json.h"

#include <cstring>
#include <fstream>
#include <random>

#include "absl/strings/str_join.h"
#include "common/mapped_file.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/util/status_matchers.h"
#include "tests/util/test_paths.h"
#include "tokenizer/hf_tokenizer.h"
#include "worker/tokenizer.h"

namespace dapq::tokenizer {
namespace {

using ::dapq::testing::StatusIs;
using ::testing::HasSubstr;

// tok512.bin's pieces and scores, read directly (worker::Tokenizer does not expose scores).
void ReadTok512(std::vector<std::string>* pieces, std::vector<float>* scores) {
  auto bytes = ReadFileToString(dapq::testing::Tok512Path());
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  size_t off = 4;
  for (int i = 0; i < 512; ++i) {
    float score;
    int32_t len;
    std::memcpy(&score, bytes->data() + off, 4);
    std::memcpy(&len, bytes->data() + off + 4, 4);
    pieces->push_back(bytes->substr(off + 8, len));
    scores->push_back(score);
    off += 8 + len;
  }
}

class Llama2cTokenizerJsonTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ReadTok512(&pieces_, &scores_);
    auto w = worker::Tokenizer::Load(dapq::testing::Tok512Path(), 512);
    ASSERT_TRUE(w.ok()) << w.status();
    worker_ = std::make_unique<worker::Tokenizer>(*std::move(w));
    auto files = Llama2cToTokenizerJson(pieces_, scores_);
    ASSERT_TRUE(files.ok()) << files.status();
    files_ = *std::move(files);
    auto hf = HfTokenizer::FromJson(files_.tokenizer_json, "tok512 tokenizer.json");
    ASSERT_TRUE(hf.ok()) << hf.status();
    hf_ = *std::move(hf);
  }

  // Encodes with both and compares ids (with and without BOS) and the decoded text.
  void ExpectSame(const std::string& s) {
    const std::vector<int> want = worker_->Encode(s, /*add_bos=*/true, /*add_eos=*/false);
    const std::vector<int> got = hf_->Encode(s, /*add_special_tokens=*/true);
    ASSERT_EQ(got, want) << nlohmann::json(s).dump() << "\n  llama2.c: " << absl::StrJoin(want, ",")
                         << "\n  hf:       " << absl::StrJoin(got, ",");
    ASSERT_EQ(hf_->Encode(s, false), worker_->Encode(s, false, false)) << nlohmann::json(s).dump();
    const std::vector<int> body(want.begin() + 1, want.end());
    ASSERT_EQ(hf_->DecodeAll(got), worker_->DecodeAll(body, worker::Tokenizer::kBos))
        << nlohmann::json(s).dump();
    for (size_t i = 1; i < got.size(); ++i) {
      ASSERT_EQ(hf_->Decode(got[i - 1], got[i]), worker_->Decode(want[i - 1], want[i]));
    }
  }

  std::vector<std::string> pieces_;
  std::vector<float> scores_;
  std::unique_ptr<worker::Tokenizer> worker_;
  Llama2cTokenizerFiles files_;
  std::unique_ptr<HfTokenizer> hf_;
};

TEST_F(Llama2cTokenizerJsonTest, StoriesPromptsEncodeLikeLlama2c) {
  for (const std::string s :
       {"Once upon a time", "Zoo", "Lily was", "",
        "Once upon a time, there was a little girl named Lily. She loved to play outside in the "
        "park. One day, she saw a big, red ball. She wanted to play with it, but it was too high.",
        "Tim and his mom went to the store.\n\"Can I have a toy?\" he asked.  She said: no!",
        " leading space", "trailing space ", "\t\ttabs\nand\r\nnewlines\n\n"}) {
    ExpectSame(s);
  }
  EXPECT_EQ(hf_->Encode("Once upon a time", true), (std::vector<int>{1, 403, 407, 261, 378}));
}

// Seeded random strings from pools of ASCII words, accented words, CJK, emoji (ZWJ sequences,
// skin tones), digits, whitespace and invalid UTF-8 bytes.
TEST_F(Llama2cTokenizerJsonTest, RandomStringsEncodeLikeLlama2c) {
  static const std::vector<std::string> kPool = {"the",
                                                 "a",
                                                 "little",
                                                 "girl",
                                                 "named",
                                                 "Lily",
                                                 "Tim",
                                                 "happy",
                                                 "dog",
                                                 "ball",
                                                 "park",
                                                 "She",
                                                 "He",
                                                 "was",
                                                 "said",
                                                 "played",
                                                 "wanted",
                                                 ".",
                                                 ",",
                                                 "!",
                                                 "?",
                                                 "\"",
                                                 "'",
                                                 "-",
                                                 "(",
                                                 ")",
                                                 "0",
                                                 "7",
                                                 "42",
                                                 "2024",
                                                 " ",
                                                 " ",
                                                 " ",
                                                 "  ",
                                                 "\n",
                                                 "\t",
                                                 "\r\n",
                                                 "café",
                                                 "naïve",
                                                 "Straße",
                                                 "über",
                                                 "ñandú",
                                                 "Ærø",
                                                 "Dvořák",
                                                 "Ελληνικά",
                                                 "привет",
                                                 "עברית",
                                                 "मराठी",
                                                 "日本語",
                                                 "中文",
                                                 "机器学习",
                                                 "こんにちは",
                                                 "한국어",
                                                 "😀",
                                                 "👍🏽",
                                                 "👨‍👩‍👧‍👦",
                                                 "🏳️‍🌈",
                                                 "🇫🇷",
                                                 "™",
                                                 "€",
                                                 "…",
                                                 "\xff",
                                                 "\xe4\xb8",
                                                 "\xc0\xaf",
                                                 "\xed\xa0\x80",
                                                 "e\xcc\x81"};
  std::mt19937 rng(20240515);
  for (int i = 0; i < 4000; ++i) {
    std::string s;
    for (int k = static_cast<int>(rng() % 20); k >= 0; --k) s += kPool[rng() % kPool.size()];
    ExpectSame(s);
  }
}

// Strings made of tok512's own pieces and of the halves of the pieces that split into two pieces
// in more than one way (" the" = " t"+"he" = " th"+"e", "her" = "h"+"er" = "he"+"r", ...): the
// cases where ranking merges by pair and llama2.c's best merged score could choose differently.
TEST_F(Llama2cTokenizerJsonTest, PieceSoupsAndTiedSplitsEncodeLikeLlama2c) {
  std::vector<std::string> halves;
  std::map<std::string, int> index;
  for (int i = 0; i < 512; ++i) index.emplace(pieces_[i], i);
  int multi = 0;
  for (int i = 259; i < 512; ++i) {
    const std::string& p = pieces_[i];
    std::vector<std::string> parts;
    for (size_t k = 1; k < p.size(); ++k) {
      if (index.count(p.substr(0, k)) && index.count(p.substr(k))) {
        parts.push_back(p.substr(0, k));
        parts.push_back(p.substr(k));
      }
    }
    if (parts.size() > 2) {
      ++multi;
      halves.insert(halves.end(), parts.begin(), parts.end());
    }
  }
  EXPECT_GE(multi, 10);  // tok512 has 13 such pieces
  std::mt19937 rng(7);
  for (int i = 0; i < 20000; ++i) {
    std::string s;
    for (int k = 1 + static_cast<int>(rng() % 10); k > 0; --k) {
      s += rng() % 2 ? halves[rng() % halves.size()] : pieces_[259 + rng() % 253];
    }
    ExpectSame(s);
  }
}

TEST_F(Llama2cTokenizerJsonTest, GeneratedFilesLoadFromADirectory) {
  const std::string dir = dapq::testing::MakeTempDir("tok512_json");
  std::ofstream(dir + "/tokenizer.json") << files_.tokenizer_json;
  std::ofstream(dir + "/tokenizer_config.json") << files_.tokenizer_config_json;
  auto t = HfTokenizer::Load(dir);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ((*t)->vocab_size(), 512);
  EXPECT_EQ((*t)->SpecialTokenId("<s>"), 1);
  EXPECT_EQ((*t)->SpecialTokenId("</s>"), 2);
  EXPECT_EQ((*t)->SpecialTokenId("<unk>"), 0);
  const nlohmann::json config = nlohmann::json::parse(files_.tokenizer_config_json);
  EXPECT_EQ(config["bos_token"], "<s>");
  EXPECT_EQ(config["eos_token"], "</s>");
  EXPECT_EQ(config["add_bos_token"], true);
  const nlohmann::json tok = nlohmann::json::parse(files_.tokenizer_json);
  EXPECT_EQ(tok["model"]["byte_fallback"], true);
  EXPECT_EQ(tok["model"]["vocab"]["\xE2\x96\x81"
                                  "Once"],
            403);  // " Once" with ' ' as '▁'
}

// The documented differences: added tokens in text, and '▁' in text.
TEST_F(Llama2cTokenizerJsonTest, DocumentedDifferences) {
  EXPECT_EQ(hf_->Encode("<s>", false), std::vector<int>{1});
  EXPECT_NE(worker_->Encode("<s>", false, false), std::vector<int>{1});
  EXPECT_EQ(hf_->Encode("a\xE2\x96\x81"
                        "b",
                        false),
            hf_->Encode("a b", false));
}

TEST(Llama2cTokenizerJsonErrorsTest, RejectsBadVocabularies) {
  std::vector<std::string> pieces = {"<unk>", "<s>", "</s>"};
  std::vector<float> scores(3, 0.0f);
  EXPECT_THAT(Llama2cToTokenizerJson(pieces, {0.0f}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("scores")));
  EXPECT_THAT(Llama2cToTokenizerJson(pieces, scores),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("byte pieces")));
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    pieces.push_back(name);
    scores.push_back(0.0f);
  }
  pieces[3 + 65] = "A";
  EXPECT_THAT(Llama2cToTokenizerJson(pieces, scores),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("<0x41>")));
  pieces[3 + 65] = "<0x41>";
  pieces.push_back("\xff");
  scores.push_back(-1.0f);
  EXPECT_THAT(Llama2cToTokenizerJson(pieces, scores),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("UTF-8")));
  pieces.back() = " a";
  EXPECT_TRUE(Llama2cToTokenizerJson(pieces, scores).ok());
}

}  // namespace
}  // namespace dapq::tokenizer
