// File: cli/compress_command.h
// `dapq compress`: run any scorer and selector on tensors read from .npy files — for parity
// checks against other implementations and for studying a method. q.npy is [H, n, d] (post-RoPE
// unless --queries-pre-rope), k.npy and the optional v.npy are [H_kv, n, d], treated as one
// layer on one rank. Writes the kept positions (int64 [H_kv, B], one sorted row per KV head) and
// optionally the raw scores (float32 [H_kv, n]); a summary goes to stderr.
#ifndef DAPQ_CLI_COMPRESS_COMMAND_H_
#define DAPQ_CLI_COMPRESS_COMMAND_H_

#include <string>

#include "absl/status/status.h"
#include "worker/compress/compression_config.h"

namespace dapq::cli {

struct CompressCommandOptions {
  std::string queries;      // q.npy [H, n, d]
  std::string keys;         // k.npy [H_kv, n, d]
  std::string values;       // v.npy [H_kv, n, d]; empty: zeros (methods reading values refuse)
  std::string out_kept;     // int64 [H_kv, B]
  std::string out_scores;   // float32 [H_kv, n]; empty: not written
  float rope_theta = 0.0f;  // 0: RoPE not given
  std::string rope_layout = "interleaved";  // interleaved | half_split
  bool queries_pre_rope = false;
  worker::compress::CompressionConfig compression;  // validated, not yet resolved
  absl::Status Validate() const;
};

absl::Status RunCompress(const CompressCommandOptions& options);

}  // namespace dapq::cli

#endif  // DAPQ_CLI_COMPRESS_COMMAND_H_
