// File: tests/e2e/eval_cli_test.cc
// `dapq eval --quick` as a user runs it: progress on stderr, results.md with every table, the
// data files and the gnuplot script, and the PNGs when gnuplot is installed; bad flags fail
// with clear errors.
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "gtest/gtest.h"
#include "tests/util/run_command.h"
#include "tests/util/test_paths.h"

namespace dapq {
namespace {

using RunResult = testing::CommandResult;

RunResult RunDapq(const std::string& args) {
  return testing::RunCommand(std::string(DAPQ_BINARY) + " " + args);
}

std::string ReadFile(const std::filesystem::path& path) {
  std::ifstream f(path);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

const std::string kModelArgs =
    "--model " + testing::Stories260KPath() + " --tokenizer " + testing::Tok512Path();

TEST(EvalCliTest, QuickRunWritesTablesDataAndPlots) {
  const std::filesystem::path out = testing::MakeTempDir("eval_quick");
  const RunResult r = RunDapq("eval --quick " + kModelArgs + " --out " + out.string());
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("ETA"), std::string::npos) << r.out;  // progress lines
  const std::string md = ReadFile(out / "results.md");
  for (const char* section :
       {"## Summary", "## Needle log-probability", "## Needle exact match", "## Output fidelity",
        "## Attention fidelity", "## Where vs what", "| full |", "| dapq |", "| snapkv |",
        "| expected_attention |", "| 12% | 32 |", "eval --quick"}) {
    EXPECT_NE(md.find(section), std::string::npos) << section << "\n" << md;
  }
  for (const char* file :
       {"results.tsv", "grid_ratio.dat", "grid_tokens.dat", "ablation.dat", "plots.gp"}) {
    EXPECT_TRUE(std::filesystem::exists(out / file)) << file;
  }
  if (std::system("command -v gnuplot >/dev/null 2>&1") == 0) {
    for (const char* png :
         {"needle_logprob.png", "needle_match.png", "kl.png", "attention.png", "ablation.png"}) {
      EXPECT_GT(std::filesystem::file_size(out / png), 1000u) << png;
    }
  } else {
    EXPECT_NE(md.find("gnuplot plots.gp"), std::string::npos) << md;
  }
}

TEST(EvalCliTest, OneMethodOneBudgetWithoutPlotsOrAblation) {
  const std::filesystem::path out = testing::MakeTempDir("eval_one");
  const RunResult r = RunDapq("eval --quick --methods full,dapq --no_ablation --no_plots " +
                              kModelArgs + " --gamma 0.9 --budget 16 --out " + out.string());
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const std::string md = ReadFile(out / "results.md");
  EXPECT_NE(md.find("| dapq |"), std::string::npos) << md;
  EXPECT_NE(md.find("| method | 16 |"), std::string::npos) << md;
  EXPECT_EQ(md.find("12%"), std::string::npos) << md;
  EXPECT_EQ(md.find("| snapkv |"), std::string::npos) << md;
  EXPECT_EQ(md.find("## Where vs what"), std::string::npos) << md;
  EXPECT_NE(md.find("gnuplot plots.gp"), std::string::npos) << md;
  EXPECT_FALSE(std::filesystem::exists(out / "kl.png"));
}

TEST(EvalCliTest, BadFlagsFailWithClearErrors) {
  const std::string out = " --out " + testing::MakeTempDir("eval_bad");
  RunResult r = RunDapq("eval --quick --seeds 0" + out + " " + kModelArgs);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.out.find("--seeds=0"), std::string::npos) << r.out;
  r = RunDapq("eval --quick --methods full,bogus" + out + " " + kModelArgs);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.out.find("unknown method 'bogus'"), std::string::npos) << r.out;
  r = RunDapq("eval --quick --model /nonexistent.bin" + out);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.out.find("NOT_FOUND"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace dapq
