// File: worker/tokenizer_test.cc
// llama2.c tokenizer on tok512.bin: known ids, byte fallback, round trips, bad files, and the
// heap-based merge against the quadratic reference it replaced (seeded random strings, 200 KB).
#include "worker/tokenizer.h"

#include <chrono>
#include <cstring>
#include <fstream>
#include <random>
#include <unordered_map>

#include "common/mapped_file.h"
#include "gtest/gtest.h"
#include "tests/util/status_matchers.h"
#include "tests/util/test_paths.h"

namespace dapq::worker {
namespace {
using ::dapq::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

Tokenizer Load() {
  auto t = Tokenizer::Load(dapq::testing::Tok512Path(), 512);
  EXPECT_TRUE(t.ok()) << t.status();
  return *std::move(t);
}

TEST(TokenizerTest, EncodesKnownWords) {
  Tokenizer t = Load();
  EXPECT_THAT(t.Encode("Once upon a time", true, false), ElementsAre(1, 403, 407, 261, 378));
  EXPECT_THAT(t.Encode("", true, false), ElementsAre(1));
  EXPECT_THAT(t.Encode("Lily was", false, true), ElementsAre(317, 286, 2));
}

TEST(TokenizerTest, DecodeStripsLeadingSpaceAfterBos) {
  Tokenizer t = Load();
  EXPECT_EQ(t.Decode(1, 403), "Once");
  EXPECT_EQ(t.Decode(403, 407), " upon");
  EXPECT_EQ(t.DecodeAll({403, 407, 261, 378}, 1), "Once upon a time");
}

TEST(TokenizerTest, ByteFallbackRoundTrips) {
  Tokenizer t = Load();
  const std::string text = "Zoë \xF0\x9F\x90\xBB ~";  // non-ASCII needs byte fallback
  const std::vector<int> ids = t.Encode(text, true, false);
  EXPECT_EQ(t.DecodeAll({ids.begin() + 1, ids.end()}, 1), text);
  EXPECT_EQ(t.Decode(0, 'A' + 3), "A");
}

TEST(TokenizerTest, MissingFileIsNotFound) {
  EXPECT_THAT(Tokenizer::Load("/nonexistent/tok.bin", 512), StatusIs(absl::StatusCode::kNotFound));
}

TEST(TokenizerTest, TruncatedFileIsRejected) {
  auto bytes = ReadFileToString(dapq::testing::Tok512Path());
  ASSERT_TRUE(bytes.ok());
  const std::string path = ::testing::TempDir() + "/tok_trunc.bin";
  std::ofstream(path, std::ios::binary) << bytes->substr(0, 3000);
  EXPECT_THAT(Tokenizer::Load(path, 512),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("truncated")));
}

TEST(TokenizerTest, VocabularyMismatchIsRejected) {
  EXPECT_THAT(Tokenizer::Load(dapq::testing::Tok512Path(), 256),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("trailing bytes")));
  EXPECT_THAT(Tokenizer::Load(dapq::testing::Tok512Path(), 0),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

// A vocabulary smaller than the 259 ids byte fallback assumes: bytes without an id become <unk>,
// never an index past the pieces.
TEST(TokenizerTest, ByteFallbackPastASmallVocabularyIsUnk) {
  const std::string path = ::testing::TempDir() + "/tok_small.bin";
  {
    std::ofstream out(path, std::ios::binary);
    const int32_t max_len = 5;
    out.write(reinterpret_cast<const char*>(&max_len), 4);
    for (const std::string piece : {"<unk>", "<s>", "</s>", " ", "a"}) {
      const float score = 0;
      const int32_t len = static_cast<int32_t>(piece.size());
      out.write(reinterpret_cast<const char*>(&score), 4);
      out.write(reinterpret_cast<const char*>(&len), 4);
      out.write(piece.data(), len);
    }
  }
  ASSERT_OK_AND_ASSIGN(Tokenizer t, Tokenizer::Load(path, 5));
  EXPECT_EQ(t.Encode("ab", /*add_bos=*/true, /*add_eos=*/false),
            (std::vector<int>{Tokenizer::kBos, 3, 4, Tokenizer::kUnk}));
  EXPECT_EQ(t.Encode("\xff", false, false), (std::vector<int>{3, Tokenizer::kUnk}));
}

// The encoder before the heap-based merge (llama2.c's algorithm, quadratic), kept as the
// reference: it scans every adjacent pair for the best merged score on each step.
struct QuadraticReference {
  std::vector<std::string> pieces;
  std::vector<float> scores;
  std::unordered_map<std::string, int> index;

  static QuadraticReference Load(const std::string& path, int vocab_size) {
    QuadraticReference r;
    auto bytes = ReadFileToString(path);
    EXPECT_TRUE(bytes.ok());
    size_t off = 4;
    for (int i = 0; i < vocab_size; ++i) {
      float score;
      int32_t len;
      std::memcpy(&score, bytes->data() + off, 4);
      std::memcpy(&len, bytes->data() + off + 4, 4);
      r.pieces.push_back(bytes->substr(off + 8, len));
      r.scores.push_back(score);
      r.index.emplace(r.pieces.back(), i);
      off += 8 + len;
    }
    return r;
  }
  int Lookup(const std::string& s) const {
    auto it = index.find(s);
    return it == index.end() ? -1 : it->second;
  }
  std::vector<int> Encode(std::string_view text, bool add_bos, bool add_eos) const {
    const int vocab_size = static_cast<int>(pieces.size());
    std::vector<int> tokens;
    if (add_bos) tokens.push_back(Tokenizer::kBos);
    if (!text.empty() && Lookup(" ") >= 0) tokens.push_back(Lookup(" "));
    for (size_t i = 0; i < text.size();) {
      size_t len = 1;
      const auto lead = static_cast<unsigned char>(text[i]);
      if ((lead & 0xE0) == 0xC0)
        len = 2;
      else if ((lead & 0xF0) == 0xE0)
        len = 3;
      else if ((lead & 0xF8) == 0xF0)
        len = 4;
      if (i + len > text.size()) len = 1;
      for (size_t j = 1; j < len; ++j) {
        if ((static_cast<unsigned char>(text[i + j]) & 0xC0) != 0x80) {
          len = 1;
          break;
        }
      }
      const int id = Lookup(std::string(text.substr(i, len)));
      if (id >= 0) {
        tokens.push_back(id);
      } else {
        for (size_t j = 0; j < len; ++j) {
          const int byte_id = static_cast<unsigned char>(text[i + j]) + 3;
          tokens.push_back(byte_id < vocab_size ? byte_id : Tokenizer::kUnk);
        }
      }
      i += len;
    }
    const size_t first = add_bos ? 1 : 0;
    while (true) {
      float best_score = -1e10f;
      int best_id = -1;
      size_t best_idx = 0;
      for (size_t i = first; i + 1 < tokens.size(); ++i) {
        const int id = Lookup(pieces[tokens[i]] + pieces[tokens[i + 1]]);
        if (id >= 0 && scores[id] > best_score) {
          best_score = scores[id];
          best_id = id;
          best_idx = i;
        }
      }
      if (best_id < 0) break;
      tokens[best_idx] = best_id;
      tokens.erase(tokens.begin() + static_cast<long>(best_idx) + 1);
    }
    if (add_eos) tokens.push_back(Tokenizer::kEos);
    return tokens;
  }
};

// Seeded random text: ASCII words, accents, CJK, emoji, raw bytes (some invalid UTF-8), and runs
// of tok512's own pieces (which make long merge chains and score ties between splits).
std::string RandomText(std::mt19937& rng, const std::vector<std::string>& pieces) {
  static const std::vector<std::string> kFragments = {"Once",
                                                      " upon",
                                                      " a",
                                                      " time",
                                                      " there",
                                                      " was",
                                                      " little",
                                                      " girl",
                                                      " named",
                                                      " Lily",
                                                      ".",
                                                      ",",
                                                      "!",
                                                      "?",
                                                      " ",
                                                      "  ",
                                                      "\n",
                                                      "\t",
                                                      "0",
                                                      "42",
                                                      "é",
                                                      "ü",
                                                      "ñ",
                                                      "Straße",
                                                      "naïve",
                                                      "日本",
                                                      "中文",
                                                      "한국",
                                                      "😀",
                                                      "👍🏽",
                                                      "👨‍👩‍👧",
                                                      "\xff",
                                                      "\xe4\xb8",
                                                      "\xc0\xaf",
                                                      "the",
                                                      "her",
                                                      "he",
                                                      "ver",
                                                      "out",
                                                      "end",
                                                      "ent",
                                                      "ked",
                                                      "ved",
                                                      "had",
                                                      "st",
                                                      "on"};
  std::string s;
  const int n = 1 + static_cast<int>(rng() % 24);
  for (int i = 0; i < n; ++i) {
    if (rng() % 3 == 0) {
      s += pieces[259 + rng() % (pieces.size() - 259)];
    } else {
      s += kFragments[rng() % kFragments.size()];
    }
  }
  return s;
}

TEST(TokenizerTest, HeapMergeMatchesQuadraticReference) {
  Tokenizer t = Load();
  const QuadraticReference ref = QuadraticReference::Load(dapq::testing::Tok512Path(), 512);
  std::mt19937 rng(12345);
  for (int i = 0; i < 5000; ++i) {
    const std::string s = RandomText(rng, ref.pieces);
    const bool bos = i % 2 == 0;
    const bool eos = i % 3 == 0;
    ASSERT_EQ(t.Encode(s, bos, eos), ref.Encode(s, bos, eos)) << "seed 12345, string " << i;
  }
}

// A small vocabulary with score ties between different pieces and between the splits of one
// piece: ties go to the leftmost pair, as in the quadratic scan.
TEST(TokenizerTest, HeapMergeBreaksTiesLeftmost) {
  const std::string path = ::testing::TempDir() + "/tok_ties.bin";
  const std::vector<std::pair<std::string, float>> vocab = {
      {"<unk>", 0}, {"<s>", 0}, {"</s>", 0}, {" ", -1},   {"a", -1},   {"b", -1},   {"aa", -2},
      {"ab", -2},   {"ba", -2}, {"aaa", -3}, {"aba", -3}, {"bab", -3}, {"abab", -2}};
  {
    std::ofstream out(path, std::ios::binary);
    const int32_t max_len = 8;
    out.write(reinterpret_cast<const char*>(&max_len), 4);
    for (const auto& [piece, score] : vocab) {
      const int32_t len = static_cast<int32_t>(piece.size());
      out.write(reinterpret_cast<const char*>(&score), 4);
      out.write(reinterpret_cast<const char*>(&len), 4);
      out.write(piece.data(), len);
    }
  }
  const int n = static_cast<int>(vocab.size());
  ASSERT_OK_AND_ASSIGN(Tokenizer t, Tokenizer::Load(path, n));
  const QuadraticReference ref = QuadraticReference::Load(path, n);
  std::mt19937 rng(99);
  for (int i = 0; i < 3000; ++i) {
    std::string s;
    for (int k = static_cast<int>(rng() % 12); k >= 0; --k) s += "ab "[rng() % 3];
    ASSERT_EQ(t.Encode(s, true, false), ref.Encode(s, true, false)) << "\"" << s << "\"";
  }
}

TEST(TokenizerTest, LongInputEncodesInLinearithmicTime) {
  Tokenizer t = Load();
  const QuadraticReference ref = QuadraticReference::Load(dapq::testing::Tok512Path(), 512);
  std::mt19937 rng(2024);
  std::string text;
  while (text.size() < 200 * 1024) text += RandomText(rng, ref.pieces);
  const auto start = std::chrono::steady_clock::now();
  const std::vector<int> ids = t.Encode(text, true, false);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("tok512: %zu bytes -> %zu ids in %.3f s\n", text.size(), ids.size(), seconds);
  EXPECT_LT(seconds, 10.0);  // the quadratic scan takes minutes here
  // Same result as the reference on a prefix short enough for it.
  const std::string prefix = text.substr(0, 4000);
  EXPECT_EQ(t.Encode(prefix, true, false), ref.Encode(prefix, true, false));
}

}  // namespace
}  // namespace dapq::worker
