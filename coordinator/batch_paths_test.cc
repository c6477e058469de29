// File: coordinator/batch_paths_test.cc
// BatchPaths: files under the batch directory pass (resolved); '..', a symbolic link out of it,
// /dev/zero, a directory and a missing file are refused with the field named; without a batch
// directory every path is refused.
#include "coordinator/batch_paths.h"

#include <unistd.h>

#include <fstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/util/status_matchers.h"
#include "tests/util/test_paths.h"

namespace dapq::coordinator {
namespace {

using ::dapq::testing::StatusIs;
using ::testing::HasSubstr;

TEST(BatchPathsTest, OnlyFilesUnderTheBatchDirectoryPass) {
  const std::string dir = testing::MakeTempDir("batch_paths");
  const std::string outside = testing::MakeTempDir("batch_paths_outside");
  std::ofstream(dir + "/in.jsonl") << "{\"text\": \"x\"}\n";
  std::ofstream(outside + "/secret.jsonl") << "{\"text\": \"y\"}\n";
  ASSERT_EQ(symlink((outside + "/secret.jsonl").c_str(), (dir + "/link.jsonl").c_str()), 0);
  ASSERT_EQ(mkdir((dir + "/sub").c_str(), 0755), 0);
  auto paths = BatchPaths::Create(dir);
  ASSERT_TRUE(paths.ok()) << paths.status();

  EXPECT_TRUE(paths->Input(dir + "/in.jsonl", "jsonl_path").ok());
  EXPECT_TRUE(paths->Input(dir + "/sub/../in.jsonl", "jsonl_path").ok());
  EXPECT_THAT(paths->Input(dir + "/../" + outside.substr(outside.rfind('/') + 1) + "/secret.jsonl",
                           "jsonl_path"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("outside the batch")));
  EXPECT_THAT(paths->Input(dir + "/link.jsonl", "jsonl_path"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("jsonl_path")));
  EXPECT_THAT(paths->Input("/dev/zero", "jsonl_path"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("outside")));
  EXPECT_THAT(paths->Input(dir + "/sub", "jsonl_path"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not a regular file")));
  EXPECT_THAT(paths->Input(dir + "/missing.jsonl", "jsonl_path"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("jsonl_path")));

  EXPECT_TRUE(paths->Output(dir + "/sub/results.jsonl", "output_path").ok());
  EXPECT_THAT(paths->Output(outside + "/results.jsonl", "output_path"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("output_path")));
  EXPECT_THAT(paths->Output(dir + "/nodir/results.jsonl", "output_path"),
              StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(paths->Output(dir + "/..", "output_path"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("names no file")));
  EXPECT_THAT(paths->Output(dir, "output_path"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("outside")));
}

TEST(BatchPathsTest, WithoutABatchDirectoryEveryPathIsRefused) {
  auto none = BatchPaths::Create("");
  ASSERT_TRUE(none.ok());
  EXPECT_THAT(none->Input("/etc/passwd", "jsonl_path"),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("inline")));
  EXPECT_THAT(none->Output("/tmp/x.jsonl", "output_path"),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(BatchPaths::Create("/no/such/dir").status(),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("--batch_dir")));
}

}  // namespace
}  // namespace dapq::coordinator
