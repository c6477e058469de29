// File: cli/compression_flags.h
// The compression flags shared by `dapq generate`, `dapq compress` and `dapq eval`: registered
// on a CLI11 subcommand, then turned into a validated compress::CompressionConfig.
#ifndef DAPQ_CLI_COMPRESSION_FLAGS_H_
#define DAPQ_CLI_COMPRESSION_FLAGS_H_

#include <string>

#include "CLI/CLI.hpp"
#include "absl/status/statusor.h"
#include "worker/compress/compression_config.h"

namespace dapq::cli {

struct CompressionFlags {
  std::string method = "full";
  std::string content = "last_token";
  std::string positions = "future";
  std::string pool = "max";
  std::string allocator = "uniform";
  std::string storage = "shared";
  std::string mode = "pseudo";
  worker::compress::CompressionConfig numeric;  // numeric fields are bound directly

  // `with_method`: also register --method (commands where the method is not positional).
  void Register(CLI::App* app, bool with_method = true);
  // Parses the names and validates (InvalidArgument naming the flag).
  absl::StatusOr<worker::compress::CompressionConfig> ToConfig() const;
};

}  // namespace dapq::cli

#endif  // DAPQ_CLI_COMPRESSION_FLAGS_H_
