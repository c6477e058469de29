// File: cli/remote_generate.h
// `dapq generate --coordinator host:port`: the same options as the local command, sent to a
// cluster's Inference.Generate; streams the text to stdout and a summary (time to first token,
// KV kept vs full, the group that served it) to stderr.
#ifndef DAPQ_CLI_REMOTE_GENERATE_H_
#define DAPQ_CLI_REMOTE_GENERATE_H_

#include <string>

#include "absl/status/status.h"
#include "cli/compression_flags.h"
#include "cli/generate_command.h"
#include "dapq/v1/inference.pb.h"

namespace dapq::cli {

// The request `dapq generate` sends for these options.
absl::StatusOr<dapq::v1::GenerateRequest> ToGenerateRequest(const GenerateCommandOptions& options,
                                                            const CompressionFlags& compression);

absl::Status RunRemoteGenerate(const std::string& coordinator, const GenerateCommandOptions& o,
                               const CompressionFlags& compression);

}  // namespace dapq::cli

#endif  // DAPQ_CLI_REMOTE_GENERATE_H_
