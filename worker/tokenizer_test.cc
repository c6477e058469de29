// File: worker/tokenizer_test.cc
// llama2.c tokenizer on tok512.bin: known ids, byte fallback, round trips, bad files.
#include "worker/tokenizer.h"

#include <fstream>

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

}  // namespace
}  // namespace dapq::worker
