// File: worker/service/request_options.h
// dapq.v1 request messages -> engine options: compression (by the names `dapq generate` uses),
// sampling, max_new_tokens and the prompt's token ids. Every rejection is InvalidArgument or
// OutOfRange naming the request field (e.g. "compression.budget_tokens").
#ifndef DAPQ_WORKER_SERVICE_REQUEST_OPTIONS_H_
#define DAPQ_WORKER_SERVICE_REQUEST_OPTIONS_H_

#include <vector>

#include "absl/status/statusor.h"
#include "dapq/v1/inference.pb.h"
#include "tokenizer/text_tokenizer.h"
#include "worker/chat_template.h"
#include "worker/engine.h"

namespace dapq::worker::service {

// Validated by api::ValidateCompressionOptions, then converted.
absl::StatusOr<compress::CompressionConfig> ToCompressionConfig(
    const dapq::v1::CompressionOptions& options);

// The inverse, for a configuration that came from a request (fields a request cannot set keep
// their defaults): what the driver sends its followers for a session turn compressed with the
// session's first-turn configuration.
dapq::v1::CompressionOptions ToCompressionOptions(const compress::CompressionConfig& config);

// Sampling, compression and max_new_tokens of `request`, validated by the shared request rules
// (api/request_rules.h: the same verdicts as the coordinator's and the CLI's), session id
// included.
absl::StatusOr<GenerateOptions> ToGenerateOptions(const dapq::v1::GenerateRequest& request);

// What a worker group turns prompts with: its tokenizer and chat template (either may be null;
// then only token ids, or no chat prompts, are accepted).
struct PromptCodec {
  const tokenizer::TextTokenizer* tokenizer = nullptr;
  const ChatTemplate* chat_template = nullptr;
};

// The prompt as token ids: `text` encoded with the tokenizer (its special tokens, e.g. BOS,
// first unless `continuing` a session), `chat` rendered through the chat template and encoded
// (the template writes its own special tokens; a session's later turns cannot be chat prompts),
// or `token_ids` checked against the vocabulary.
absl::StatusOr<std::vector<int>> PromptTokens(const dapq::v1::GenerateRequest& request,
                                              const PromptCodec& codec, int vocab_size,
                                              bool continuing);

// OutOfRange naming the field when the prompt plus max_new_tokens, from `next_position`, pass
// the context limit.
absl::Status CheckContext(size_t prompt_tokens, int max_new_tokens, int next_position,
                          int max_seq_len);

}  // namespace dapq::worker::service

#endif  // DAPQ_WORKER_SERVICE_REQUEST_OPTIONS_H_
