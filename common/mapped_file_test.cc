// File: common/mapped_file_test.cc
// Tests for MappedFile and ReadFileToString, including missing files and directories.
#include "common/mapped_file.h"

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "gtest/gtest.h"
#include "tests/util/status_matchers.h"

namespace dapq {
namespace {
using ::dapq::testing::StatusIs;
using ::testing::HasSubstr;

TEST(MappedFileTest, MapsContents) {
  const std::string path = ::testing::TempDir() + "/mapped_file_test.bin";
  { std::ofstream(path, std::ios::binary) << "hello"; }
  ASSERT_OK_AND_ASSIGN(MappedFile f, MappedFile::Open(path));
  ASSERT_EQ(f.size(), 5u);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(f.data()), f.size()), "hello");
  MappedFile moved = std::move(f);
  EXPECT_EQ(moved.size(), 5u);
  std::remove(path.c_str());
}

TEST(MappedFileTest, MissingFileIsNotFoundNamingThePath) {
  EXPECT_THAT(MappedFile::Open("/nonexistent/dapq.bin"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("/nonexistent/dapq.bin")));
  EXPECT_THAT(ReadFileToString("/nonexistent/x.json"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("x.json")));
}

TEST(MappedFileTest, DirectoryIsInvalidArgument) {
  EXPECT_THAT(MappedFile::Open(::testing::TempDir()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not a regular file")));
}

}  // namespace
}  // namespace dapq
