// File: api/request_rules.h
// The rules of a dapq.v1.GenerateRequest that need no model, written once: the coordinator
// checks them before routing, the worker before queueing, and the CLI before sending, so the
// three give the same verdict (tests/api/request_rules_test.cc holds them to it). The checks
// that need the model (token ids inside the vocabulary, a text prompt that tokenizes, the
// context limit of a session's next turn) stay with the worker; the context limit of a plain
// token-id prompt is checked here when the limit is known.
// Errors are InvalidArgument or OutOfRange naming the request field, prefixed by `where` (e.g.
// "items[3]." or "jsonl_path line 4: ").
// Thread-safe (pure functions and constants).
#ifndef DAPQ_API_REQUEST_RULES_H_
#define DAPQ_API_REQUEST_RULES_H_

#include <cstddef>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "dapq/v1/inference.pb.h"

namespace dapq::api {

// max_new_tokens = 0 in a request means this many.
inline constexpr int kDefaultMaxNewTokens = 64;
// A serialised request may not be larger (gRPC's receive limit is set to match).
inline constexpr size_t kMaxRequestBytes = 4 << 20;
// Session ids: 1 to kMaxSessionIdChars characters of [A-Za-z0-9_-].
inline constexpr size_t kMaxSessionIdChars = 128;

// Stop sequences: at most this many, each 1 to kMaxStopSequenceBytes bytes (OpenAI's limits).
inline constexpr int kMaxStopSequences = 4;
inline constexpr size_t kMaxStopSequenceBytes = 256;
// A chat prompt holds 1 to kMaxChatMessages messages.
inline constexpr int kMaxChatMessages = 1024;

absl::Status ValidateSessionId(absl::string_view id, absl::string_view field = "session_id");

// max_new_tokens with the default applied.
int EffectiveMaxNewTokens(const dapq::v1::GenerateRequest& request);

// Everything a request must satisfy without a model: a prompt (non-empty text, non-empty
// non-negative token ids, or chat messages with known roles), the stop sequences, max_new_tokens >=
// 0, sampling.temperature >= 0, sampling.top_p in [0, 1] (0 = off), the compression options
// (api/compression_rules.h), the session id, the size limit, and, when `max_seq_len` > 0, token ids
// + max_new_tokens within it.
absl::Status ValidateGenerateRequest(const dapq::v1::GenerateRequest& request, int max_seq_len = 0,
                                     absl::string_view where = "");

}  // namespace dapq::api

#endif  // DAPQ_API_REQUEST_RULES_H_
