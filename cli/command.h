// File: cli/command.h
// How `dapq` subcommands plug into cli/main.cc: each command file defines
//   void AddXxxCommand(CLI::App& app, CommandRunner& runner);
// which registers a CLI11 subcommand bound to its options and, when that subcommand was given,
// the runner calls the action (after parsing). An action returns absl::Status; main prints
// "error: <status>" and exits 1 on failure.
#ifndef DAPQ_CLI_COMMAND_H_
#define DAPQ_CLI_COMMAND_H_

#include <functional>
#include <utility>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"

namespace dapq::cli {

class CommandRunner {
 public:
  void Add(CLI::App* subcommand, std::function<absl::Status()> action) {
    commands_.emplace_back(subcommand, std::move(action));
  }
  // Runs the action of the subcommand that was parsed.
  absl::Status Run() const {
    for (const auto& [sub, action] : commands_) {
      if (sub->parsed()) return action();
    }
    return absl::InvalidArgumentError("no subcommand given");
  }

 private:
  std::vector<std::pair<CLI::App*, std::function<absl::Status()>>> commands_;
};

void AddGenerateCommand(CLI::App& app, CommandRunner& runner);
void AddConvertCommand(CLI::App& app, CommandRunner& runner);
void AddCompressCommand(CLI::App& app, CommandRunner& runner);
void AddEvalCommand(CLI::App& app, CommandRunner& runner);
void AddServeCommand(CLI::App& app, CommandRunner& runner);
void AddStatusCommand(CLI::App& app, CommandRunner& runner);
void AddBatchCommand(CLI::App& app, CommandRunner& runner);

}  // namespace dapq::cli

#endif  // DAPQ_CLI_COMMAND_H_
