// File: tests/util/run_command.h
// Runs a command line through the shell (popen) and returns its exit code and output, for tests
// that drive the real binaries (`dapq ...`) as a user would.
#ifndef DAPQ_TESTS_UTIL_RUN_COMMAND_H_
#define DAPQ_TESTS_UTIL_RUN_COMMAND_H_

#include <string>

namespace dapq::testing {

struct CommandResult {
  int exit_code = -1;  // -1 when the command did not exit normally
  std::string out;     // stdout, and stderr too when merged
};

// Runs `command`; with merge_stderr the output holds stderr as well, else stderr is discarded.
CommandResult RunCommand(const std::string& command, bool merge_stderr = true);

}  // namespace dapq::testing

#endif  // DAPQ_TESTS_UTIL_RUN_COMMAND_H_
