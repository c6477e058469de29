// File: worker/llama2c_loader_test.cc
// llama2.c loader: the real stories260K header, and every bad-input case (missing, truncated,
// bad header fields, wrong size).
#include "worker/llama2c_loader.h"

#include <cstdint>
#include <fstream>
#include <vector>

#include "common/mapped_file.h"
#include "gtest/gtest.h"
#include "tests/util/status_matchers.h"
#include "tests/util/test_paths.h"

namespace dapq::worker {
namespace {
using ::dapq::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;

std::string WriteFile(const std::string& name, const std::string& bytes) {
  const std::string path = ::testing::TempDir() + "/" + name;
  std::ofstream(path, std::ios::binary).write(bytes.data(), static_cast<long>(bytes.size()));
  return path;
}

std::string Stories() {
  auto f = ReadFileToString(dapq::testing::Stories260KPath());
  EXPECT_TRUE(f.ok()) << f.status();
  return f.ok() ? *f : "";
}

std::string WithHeaderField(std::string bytes, int index, int32_t value) {
  std::memcpy(bytes.data() + 4 * index, &value, 4);
  return bytes;
}

TEST(Llama2cLoaderTest, LoadsStories260K) {
  ASSERT_OK_AND_ASSIGN(ModelWeights w, LoadLlama2cModel(dapq::testing::Stories260KPath()));
  const ModelConfig& c = w.config;
  EXPECT_EQ(c.name, "stories260K");
  EXPECT_EQ(c.dim, 64);
  EXPECT_EQ(c.hidden_dim, 172);
  EXPECT_EQ(c.n_layers, 5);
  EXPECT_EQ(c.n_heads, 8);
  EXPECT_EQ(c.n_kv_heads, 4);
  EXPECT_EQ(c.head_dim, 8);
  EXPECT_EQ(c.vocab_size, 512);
  EXPECT_EQ(c.max_seq_len, 512);
  EXPECT_TRUE(c.tied_embeddings);
  EXPECT_EQ(w.classifier, w.token_embedding);
  EXPECT_EQ(c.rope.layout, kernels::RopeLayout::kInterleaved);
  EXPECT_EQ(c.kv_bytes_per_token(), 1280);
}

TEST(Llama2cLoaderTest, MissingFileIsNotFound) {
  EXPECT_THAT(LoadLlama2cModel("/nonexistent/model.bin"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("/nonexistent/model.bin")));
}

TEST(Llama2cLoaderTest, ShorterThanHeaderIsRejected) {
  EXPECT_THAT(LoadLlama2cModel(WriteFile("short.bin", std::string(10, '\0'))),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("truncated")));
}

TEST(Llama2cLoaderTest, TruncatedWeightsAreRejectedWithSizes) {
  const std::string bytes = Stories();
  EXPECT_THAT(LoadLlama2cModel(WriteFile("trunc.bin", bytes.substr(0, bytes.size() / 2))),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       ::testing::AllOf(HasSubstr("truncated"), HasSubstr("1056540"))));
}

TEST(Llama2cLoaderTest, TrailingBytesAreRejected) {
  EXPECT_THAT(LoadLlama2cModel(WriteFile("long.bin", Stories() + "xxxx")),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("wrong size")));
}

TEST(Llama2cLoaderTest, BadHeaderFieldsAreNamed) {
  const std::string bytes = Stories();
  EXPECT_THAT(LoadLlama2cModel(WriteFile("h0.bin", WithHeaderField(bytes, 0, 0))),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("dim=0")));
  EXPECT_THAT(LoadLlama2cModel(WriteFile("h2.bin", WithHeaderField(bytes, 2, -3))),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("n_layers=-3")));
  EXPECT_THAT(LoadLlama2cModel(WriteFile("h3.bin", WithHeaderField(bytes, 3, 7))),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("n_heads=7")));
  EXPECT_THAT(LoadLlama2cModel(WriteFile("h4.bin", WithHeaderField(bytes, 4, 3))),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("n_kv_heads=3")));
  EXPECT_THAT(LoadLlama2cModel(WriteFile("h6.bin", WithHeaderField(bytes, 6, 1 << 30))),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("seq_len")));
}

TEST(Llama2cLoaderTest, WrongSizeHeaderIsRejected) {
  // A header claiming a bigger hidden size than the weights hold.
  EXPECT_THAT(LoadLlama2cModel(WriteFile("h1.bin", WithHeaderField(Stories(), 1, 256))),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("implies")));
}

// A 28-byte header whose weights take exactly 2^64 bytes (dim = hidden = 2^20, 599186 layers, one
// head, a tied vocabulary of 898779, no RoPE tables): in size_t the implied size wrapped to the
// 28 bytes of the header and the model loaded with weight pointers gigabytes past the file.
TEST(Llama2cLoaderTest, ImpliedSizeThatWrapsPast2To64IsTruncated) {
  std::string header;
  for (const int32_t v : {1 << 20, 1 << 20, 599186, 1, 1, 898779, 1}) {
    header.append(reinterpret_cast<const char*>(&v), 4);
  }
  EXPECT_THAT(LoadLlama2cModel(WriteFile("wrap.bin", header)),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("truncated"), HasSubstr("more than 2^64"))));
}

}  // namespace
}  // namespace dapq::worker
