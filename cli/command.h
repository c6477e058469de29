// File: cli/command.h
// How `dapq` subcommands plug into cli/main.cc: each command file defines
//   void AddXxxCommand(CLI::App& app, CommandRunner& runner);
// which registers a CLI11 subcommand bound to its options and, when that subcommand was given,
// the runner calls the action (after parsing). An action returns absl::Status; main prints
// "error: <status>" and exits 1 on failure.
#ifndef DAPQ_CLI_COMMAND_H_
#define DAPQ_CLI_COMMAND_H_

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "common/auth_token.h"
#include "common/tls.h"

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

// Adds the client credential flags to `cmd` (a command that calls the coordinator):
// --auth_token_file (default $DAPQ_AUTH_TOKEN; common/auth_token.h) and --tls_ca, --tls_cert,
// --tls_key (common/tls.h). Returns `action` preceded by loading them.
inline std::function<absl::Status()> WithAuthToken(CLI::App* cmd,
                                                   std::function<absl::Status()> action) {
  auto file = std::make_shared<std::string>();
  auto tls = std::make_shared<TlsFiles>();
  cmd->add_option("--auth_token_file", *file,
                  "a file holding the bearer token for the coordinator (default: "
                  "$DAPQ_AUTH_TOKEN)");
  cmd->add_option("--tls_ca", tls->ca, "PEM CA to verify a TLS coordinator with");
  cmd->add_option("--tls_cert", tls->cert, "PEM client certificate (optional, with --tls_key)");
  cmd->add_option("--tls_key", tls->key, "PEM private key of --tls_cert");
  cmd->add_option("--tls_server_name", tls->server_name,
                  "the name in the coordinator's certificate, when not its address's host");
  return [file, tls, action = std::move(action)]() -> absl::Status {
    absl::StatusOr<std::string> token = LoadClientToken(*file);
    if (!token.ok()) return token.status();
    SetClientToken(*std::move(token));
    if (absl::Status s = SetClientTls(*tls); !s.ok()) return s;
    return action();
  };
}

void AddGenerateCommand(CLI::App& app, CommandRunner& runner);
void AddConvertCommand(CLI::App& app, CommandRunner& runner);
void AddCompressCommand(CLI::App& app, CommandRunner& runner);
void AddEvalCommand(CLI::App& app, CommandRunner& runner);
void AddServeCommand(CLI::App& app, CommandRunner& runner);
void AddStatusCommand(CLI::App& app, CommandRunner& runner);
void AddBatchCommand(CLI::App& app, CommandRunner& runner);

}  // namespace dapq::cli

#endif  // DAPQ_CLI_COMMAND_H_
