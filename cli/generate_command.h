// File: cli/generate_command.h
// `dapq generate`: load a model, tokenize a prompt, generate with the in-process TP engine and
// stream the text to stdout; timing (prefill and decode tokens/s) goes to stderr.
#ifndef DAPQ_CLI_GENERATE_COMMAND_H_
#define DAPQ_CLI_GENERATE_COMMAND_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "worker/compress/compression_config.h"

namespace dapq::cli {

struct GenerateCommandOptions {
  std::string model;                   // llama2.c .bin, HF directory, or synthetic:<shape>
  std::string weights_dtype = "fp32";  // fp32 | bf16 (linear layers)
  std::string kv_dtype = "fp32";       // fp32 | bf16 | fp16 (the KV cache)
  std::string tokenizer;               // llama2.c tokenizer .bin; required unless prompt_tokens > 0
  std::string prompt;                  // text (empty: start from BOS alone)
  int prompt_tokens = 0;               // > 0: use this many seeded random token ids instead of text
  int steps = 256;                     // new tokens to generate
  float temperature = 0.0f;            // 0 = greedy
  float top_p = 0.9f;
  uint64_t seed = 42;
  int tp = 1;
  int threads = 0;  // CPU threads for the kernels (0 = every core), shared by the tp ranks
  int prefill_chunk = 1024;
  bool print_ids = false;                           // print token ids instead of text
  worker::compress::CompressionConfig compression;  // applied at the end of prefill
  // Sessions: with a session id the sequence's KV is restored from (and saved back to) the
  // tiered KV store persisted under store_dir, so the next `generate` of the session continues
  // where this one stopped — in another process.
  std::string session;
  std::string store_dir = ".dapq_store";
  bool fail_on_bad_block = false;  // failed-load policy: fail instead of recomputing
  // Remote mode (--coordinator): the request goes to a cluster; the session lives there.
  std::string coordinator;
  std::string session_remote;  // the session id sent with a remote request
  int timeout_s = 0;           // remote: deadline of the request (0 = none)
  absl::Status Validate() const;
};

absl::Status RunGenerate(const GenerateCommandOptions& options);

}  // namespace dapq::cli

#endif  // DAPQ_CLI_GENERATE_COMMAND_H_
