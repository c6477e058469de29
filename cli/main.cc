// File: cli/main.cc
// The `dapq` command-line tool. Each subcommand lives in its own cli/<name>_command.cc and is
// registered here (cli/command.h). Errors print as "error: <status>" with exit code 1; usage
// errors from the flag parser exit 2 (CLI11's codes, with its message).
#include <cstdio>

#include "CLI/CLI.hpp"
#include "cli/command.h"

int main(int argc, char** argv) {
  CLI::App app{"DapQ Serve: LLM inference with decoding-aligned KV-cache compression"};
  app.require_subcommand(1);
  dapq::cli::CommandRunner runner;
  dapq::cli::AddGenerateCommand(app, runner);
  dapq::cli::AddConvertCommand(app, runner);
  dapq::cli::AddCompressCommand(app, runner);
  dapq::cli::AddEvalCommand(app, runner);
  dapq::cli::AddServeCommand(app, runner);
  dapq::cli::AddStatusCommand(app, runner);
  dapq::cli::AddBatchCommand(app, runner);

  CLI11_PARSE(app, argc, argv);
  const absl::Status status = runner.Run();
  if (!status.ok()) {
    std::fprintf(stderr, "error: %s\n", status.ToString().c_str());
    return 1;
  }
  return 0;
}
