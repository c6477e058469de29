// File: tests/e2e/cli_generate_test.cc
// The `dapq generate` binary as a user runs it (a real process): reference text on stdout,
// timing on stderr, clear errors and exit codes for bad input.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>

#include "gtest/gtest.h"
#include "tests/util/run_command.h"
#include "tests/util/stored_blocks.h"
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

namespace dapq {
namespace {

// The line of token ids `--print_ids` writes (stdout and stderr are merged).
std::string IdsLine(const std::string& out) {
  size_t start = 0;
  while (start < out.size()) {
    const size_t end = out.find('\n', start);
    const std::string line = out.substr(start, end - start);
    if (!line.empty() && line.find_first_not_of("0123456789 ") == std::string::npos) return line;
    if (end == std::string::npos) break;
    start = end + 1;
  }
  return "";
}

// Sessions across processes: turn 1 saves the compressed KV to the store's disk tier, turn 2 (a
// new process) restores it and continues; a corrupted block is recomputed (same tokens) or, with
// --fail_on_bad_block, fails with DATA_LOSS.
TEST(CliSessionTest, SessionContinuesInANewProcessAndSurvivesABadBlock) {
  const std::string args = "generate " + kModelArgs + " --method dapq --budget 16 --print_ids ";
  auto turns = [&](const std::string& dir, const std::function<void()>& between) {
    const std::string session = " --session tim --store_dir " + dir;
    RunResult one = RunDapq(args +
                            "--steps 20 --prompt \"Once upon a time, there was a little boy "
                            "named Tim. Tim had a red ball and a dog.\"" +
                            session);
    EXPECT_EQ(one.exit_code, 0) << one.out;
    EXPECT_NE(one.out.find("session tim: saved at position"), std::string::npos) << one.out;
    between();
    return RunDapq(args + "--steps 20 --prompt \"Then Tim said\"" + session);
  };
  const std::string a = testing::MakeTempDir("cli_session_a");
  const RunResult two = turns(a, [] {});
  ASSERT_EQ(two.exit_code, 0) << two.out;
  EXPECT_NE(two.out.find("session tim: resumed at position 48"), std::string::npos) << two.out;
  const std::string ids = IdsLine(two.out);
  EXPECT_FALSE(ids.empty()) << two.out;

  const std::string b = testing::MakeTempDir("cli_session_b");
  const RunResult recomputed = turns(b, [&] {
    const auto found = testing::FindStoredBlocks(
        b, [](const std::string& key, const std::string&) { return key == "tim.r0.l2.h1.b0.t0"; });
    ASSERT_EQ(found.size(), 1u);
    testing::CorruptStoredBlock(found[0], 60, '\x42');
  });
  ASSERT_EQ(recomputed.exit_code, 0) << recomputed.out;
  EXPECT_NE(recomputed.out.find("recomputed"), std::string::npos) << recomputed.out;
  EXPECT_EQ(IdsLine(recomputed.out), ids);

  const std::string c = testing::MakeTempDir("cli_session_c");
  const std::string session = " --session tim --store_dir " + c;
  ASSERT_EQ(RunDapq(args + "--steps 5 --prompt Hi" + session).exit_code, 0);
  const auto found = testing::FindStoredBlocks(
      c, [](const std::string& key, const std::string&) { return key == "tim.r0.l0.h0.b0.t0"; });
  ASSERT_EQ(found.size(), 1u);
  testing::DropStoredBlock(found[0]);
  const RunResult failed = RunDapq(args + "--steps 5 --prompt Then --fail_on_bad_block" + session);
  EXPECT_EQ(failed.exit_code, 1);
  EXPECT_NE(failed.out.find("DATA_LOSS"), std::string::npos) << failed.out;
  EXPECT_NE(RunDapq(args + "--prompt x --session a/b").out.find("session_id"), std::string::npos);
}

}  // namespace
}  // namespace dapq
