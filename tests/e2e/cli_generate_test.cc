// File: tests/e2e/cli_generate_test.cc
// The `dapq generate` binary as a user runs it (a real process): reference text on stdout,
// timing on stderr, clear errors and exit codes for bad input.
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <string>

#include "gtest/gtest.h"
#include "tests/util/run_command.h"
#include "tests/util/test_paths.h"

namespace dapq {
namespace {

using RunResult = testing::CommandResult;

RunResult RunDapq(const std::string& args, bool merge_stderr = true) {
  return testing::RunCommand(std::string(DAPQ_BINARY) + " " + args, merge_stderr);
}

const std::string kModelArgs =
    "--model " + testing::Stories260KPath() + " --tokenizer " + testing::Tok512Path();

TEST(CliGenerateTest, ZooMatchesReferenceAndReportsSpeed) {
  // "Zoo" encodes to BOS + 3 tokens: llama2.c -n 60 runs positions 0..59 and samples 57.
  const RunResult text =
      RunDapq("generate " + kModelArgs + " --prompt Zoo --steps 57 --tp 2", false);
  ASSERT_EQ(text.exit_code, 0) << text.out;
  EXPECT_EQ(text.out,
            "Zoo was a little girl named Lily. She loved to play outside in the park. One day, "
            "she saw a big, red ball. She wanted to play with it, but she didn't want to play "
            "with\n");
  const RunResult all = RunDapq("generate " + kModelArgs + " --prompt Zoo --steps 10");
  EXPECT_NE(all.out.find("tokens/s"), std::string::npos) << all.out;
  EXPECT_NE(all.out.find("time to first token"), std::string::npos) << all.out;
}

TEST(CliGenerateTest, BadInputsExitNonZeroWithClearErrors) {
  RunResult r = RunDapq("generate --model /nonexistent.bin --tokenizer x --prompt hi");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.out.find("error: NOT_FOUND"), std::string::npos) << r.out;
  r = RunDapq("generate " + kModelArgs + " --tp 3");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.out.find("tp=3 must divide"), std::string::npos) << r.out;
  r = RunDapq("generate " + kModelArgs + " --steps 1000");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.out.find("OUT_OF_RANGE"), std::string::npos) << r.out;
  r = RunDapq("generate " + kModelArgs + " --temperature -1");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.out.find("temperature"), std::string::npos) << r.out;
  r = RunDapq("generate --model synthetic:tiny-gqa --prompt hi");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.out.find("--tokenizer is required"), std::string::npos) << r.out;
  r = RunDapq("generate --steps 3");  // missing --model: a usage error from the flag parser
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.out.find("--model"), std::string::npos) << r.out;
}

TEST(CliGenerateTest, SyntheticModelWithRandomPrompt) {
  const RunResult r = RunDapq(
      "generate --model synthetic:tiny-gqa --prompt_tokens 33 --steps 5 --print_ids --tp 4", false);
  ASSERT_EQ(r.exit_code, 0) << r.out;
  int count = 0;
  for (char c : r.out) count += c == ' ';
  EXPECT_EQ(count, 5) << r.out;
}

TEST(CliGenerateTest, ConvertThenGenerateFromHfDirectory) {
  const std::string dir = testing::MakeTempDir("cli_convert_stories");
  RunResult r = RunDapq("convert --model " + testing::Stories260KPath() + " --out " + dir);
  ASSERT_EQ(r.exit_code, 0) << r.out;
  r = RunDapq("generate --model " + dir + " --tokenizer " + testing::Tok512Path() +
                  " --prompt Zoo --steps 57",
              false);
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_EQ(r.out,
            "Zoo was a little girl named Lily. She loved to play outside in the park. One day, "
            "she saw a big, red ball. She wanted to play with it, but she didn't want to play "
            "with\n");
}

}  // namespace
}  // namespace dapq
