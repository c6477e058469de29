// File: coordinator/openai_protocol.h
// The OpenAI HTTP API's JSON on the coordinator: request bodies of /v1/completions and
// /v1/chat/completions turned into a dapq.v1.GenerateRequest (errors name the offending
// `param`, as OpenAI's do), and the responses, stream chunks and error objects built back. The
// HTTP transport is coordinator/http_server.h; this file holds no I/O.
// Extensions beside OpenAI's fields: `kv_compression` ({"method": "dapq", "budget": 1024, ...},
// the same knobs as dapq.v1.CompressionOptions) and, in `usage`, `kv_compression` (slots kept)
// and `prompt_tokens_details.cached_tokens` (prompt tokens taken from the prefix cache).
// Thread-compatible.
#ifndef DAPQ_COORDINATOR_OPENAI_PROTOCOL_H_
#define DAPQ_COORDINATOR_OPENAI_PROTOCOL_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "api/stop_sequences.h"
#include "dapq/v1/inference.pb.h"
#include "grpcpp/support/status.h"
#include "nlohmann/json.hpp"

namespace dapq::coordinator {

enum class OpenAiEndpoint { kCompletions, kChatCompletions };

// OpenAI's defaults for max_tokens: 16 for completions; chat runs to the model's stop token, so
// it gets the service's default length.
inline constexpr int kCompletionsDefaultMaxTokens = 16;

struct OpenAiRequest {
  OpenAiEndpoint endpoint = OpenAiEndpoint::kCompletions;
  std::string model;  // as sent ("" when absent)
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  dapq::v1::GenerateRequest request;
};

// OpenAI's error object: {"error": {"message", "type", "param", "code"}} with an HTTP status.
struct OpenAiError {
  int http_status = 400;
  std::string message;
  std::string type = "invalid_request_error";
  std::string param;  // "" = null
  std::string code;   // "" = null
  std::string ToJson() const;
};

// Parses a request body. nullopt and `*out` filled, or the error to answer with.
std::optional<OpenAiError> ParseOpenAiRequest(std::string_view body, OpenAiEndpoint endpoint,
                                              OpenAiRequest* out);

// The OpenAI error for a failed generation (INVALID_ARGUMENT → 400, OUT_OF_RANGE → 400
// context_length_exceeded, RESOURCE_EXHAUSTED → 429, UNAVAILABLE → 503, DEADLINE_EXCEEDED →
// 504, ...). The message names the request field where the worker's did.
OpenAiError ErrorFromStatus(const grpc::Status& status);

// One response being built from the group's streamed messages: the text shown (stop sequences
// cut off, a UTF-8 character split over tokens held until complete), the chunks and the final
// objects.
class OpenAiResponseBuilder {
 public:
  OpenAiResponseBuilder(const OpenAiRequest& request, std::string model, int64_t created);

  // The text `part` adds to what the client sees (may be empty).
  std::string Delta(const dapq::v1::GenerateResponse& part);
  // What is left to show at the end of the stream.
  std::string Tail();
  // True once a stop sequence was generated (the rest of the generation is not shown).
  bool stopped() const { return filter_.stopped(); }

  // Server-sent event payloads ("data: ...\n\n" is the caller's): a chunk carrying `delta`;
  // the chat stream's first chunk (the assistant role); the last chunk (finish_reason); the
  // usage chunk (stream_options.include_usage).
  std::string ChunkJson(std::string_view delta) const;
  std::string RoleChunkJson() const;
  std::string FinishChunkJson(const dapq::v1::GenerationSummary& summary) const;
  std::string UsageChunkJson(const dapq::v1::GenerationSummary& summary) const;
  // The whole (non-streamed) response.
  std::string ResponseJson(std::string_view text, const dapq::v1::GenerationSummary& summary) const;

  const std::string& id() const { return id_; }

 private:
  std::string FinishReason(const dapq::v1::GenerationSummary& summary) const;
  std::string StreamChunk(const nlohmann::json& chat_delta, std::string_view text,
                          const nlohmann::json& finish_reason) const;

  const OpenAiEndpoint endpoint_;
  const std::string model_;
  const int64_t created_;
  std::string id_;
  api::StopSequenceFilter filter_;
  std::string utf8_carry_;  // an incomplete UTF-8 character at the end of the text so far
};

// The longest prefix of `text` that does not end inside a UTF-8 character (invalid bytes count
// as complete: they are the JSON writer's to replace).
size_t CompleteUtf8Prefix(std::string_view text);

}  // namespace dapq::coordinator

#endif  // DAPQ_COORDINATOR_OPENAI_PROTOCOL_H_
