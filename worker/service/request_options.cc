// File: worker/service/request_options.cc
// Conversion and validation of dapq.v1 request fields for the engine.
#include "worker/service/request_options.h"

#include "absl/strings/str_cat.h"
#include "api/compression_rules.h"
#include "api/request_rules.h"
#include "common/status_macros.h"

namespace dapq::worker::service {
namespace {

// Prefixes a config error with the request field it came from.
absl::Status InField(absl::Status s, absl::string_view field) {
  if (s.ok()) return s;
  return absl::Status(s.code(), absl::StrCat(field, ": ", s.message()));
}

template <typename T>
absl::Status ParseNamed(const std::string& name, absl::string_view field,
                        absl::StatusOr<T> (*parse)(absl::string_view), T* out) {
  if (name.empty()) return absl::OkStatus();
  absl::StatusOr<T> v = parse(name);
  if (!v.ok()) return InField(v.status(), field);
  *out = *v;
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<compress::CompressionConfig> ToCompressionConfig(
    const dapq::v1::CompressionOptions& o) {
  DAPQ_RETURN_IF_ERROR(api::ValidateCompressionOptions(o));
  compress::CompressionConfig c;
  DAPQ_RETURN_IF_ERROR(
      ParseNamed(o.method(), "compression.method", compress::ParseMethod, &c.method));
  if (c.method == compress::Method::kFull) return c;
  c.budget_tokens = o.budget_tokens();
  c.budget_ratio = o.budget_ratio();
  if (o.has_window()) c.window = o.window();
  if (o.has_sinks()) c.sinks = o.sinks();
  if (o.has_pool_kernel()) c.pool_kernel = o.pool_kernel();
  if (o.has_query_window()) c.query_window = o.query_window();
  c.streaming_chunk = o.streaming_chunk();
  c.every_turn = o.every_turn();
  c.seed = o.seed();
  DAPQ_RETURN_IF_ERROR(
      ParseNamed(o.content(), "compression.content", compress::ParseContent, &c.content));
  DAPQ_RETURN_IF_ERROR(
      ParseNamed(o.positions(), "compression.positions", compress::ParsePositions, &c.positions));
  DAPQ_RETURN_IF_ERROR(ParseNamed(o.pool(), "compression.pool", compress::ParsePool, &c.pool));
  DAPQ_RETURN_IF_ERROR(
      ParseNamed(o.allocator(), "compression.allocator", compress::ParseAllocator, &c.allocator));
  DAPQ_RETURN_IF_ERROR(
      ParseNamed(o.storage(), "compression.storage", compress::ParseStorage, &c.storage));
  DAPQ_RETURN_IF_ERROR(ParseNamed(o.mode(), "compression.mode", compress::ParseDapqMode, &c.mode));
  DAPQ_RETURN_IF_ERROR(InField(c.Validate(), "compression"));
  return c;
}

dapq::v1::CompressionOptions ToCompressionOptions(const compress::CompressionConfig& c) {
  dapq::v1::CompressionOptions o;
  o.set_method(std::string(compress::MethodName(c.method)));
  if (c.method == compress::Method::kFull) return o;
  o.set_budget_tokens(c.budget_tokens);
  o.set_budget_ratio(c.budget_ratio);
  if (c.window >= 0) o.set_window(c.window);
  if (c.sinks >= 0) o.set_sinks(c.sinks);
  if (c.pool_kernel >= 0) o.set_pool_kernel(c.pool_kernel);
  if (c.query_window >= 0) o.set_query_window(c.query_window);
  o.set_streaming_chunk(c.streaming_chunk);
  o.set_every_turn(c.every_turn);
  o.set_seed(c.seed);
  o.set_content(std::string(api::kContentNames[static_cast<int>(c.content)]));
  o.set_positions(std::string(api::kPositionsNames[static_cast<int>(c.positions)]));
  o.set_pool(std::string(api::kPoolNames[static_cast<int>(c.pool)]));
  o.set_allocator(std::string(api::kAllocatorNames[static_cast<int>(c.allocator)]));
  o.set_storage(std::string(api::kStorageNames[static_cast<int>(c.storage)]));
  o.set_mode(std::string(api::kDapqModeNames[static_cast<int>(c.mode)]));
  return o;
}

absl::StatusOr<GenerateOptions> ToGenerateOptions(const dapq::v1::GenerateRequest& request) {
  DAPQ_RETURN_IF_ERROR(api::ValidateGenerateRequest(request));
  GenerateOptions g;
  g.max_new_tokens = api::EffectiveMaxNewTokens(request);
  const dapq::v1::SamplingOptions& s = request.sampling();
  g.sampling.temperature = s.temperature();
  g.sampling.top_p = s.top_p() == 0 ? 1.0f : s.top_p();
  g.sampling.seed = s.seed();
  DAPQ_RETURN_IF_ERROR(InField(g.sampling.Validate(), "sampling"));
  DAPQ_ASSIGN_OR_RETURN(g.compression, ToCompressionConfig(request.compression()));
  g.stop_at_stop_tokens = !request.ignore_stop_tokens();
  return g;
}

absl::StatusOr<std::vector<int>> PromptTokens(const dapq::v1::GenerateRequest& request,
                                              const PromptCodec& codec, int vocab_size,
                                              bool continuing) {
  std::vector<int> tokens;
  switch (request.prompt_case()) {
    case dapq::v1::GenerateRequest::kText:
      if (request.text().empty()) return absl::InvalidArgumentError("prompt.text is empty");
      if (codec.tokenizer == nullptr) {
        return absl::InvalidArgumentError(
            "prompt.text: this worker group has no tokenizer; send prompt.token_ids");
      }
      tokens = codec.tokenizer->Encode(request.text(), /*add_special_tokens=*/!continuing);
      if (tokens.empty()) return absl::InvalidArgumentError("prompt.text encodes to no tokens");
      return tokens;
    case dapq::v1::GenerateRequest::kChat: {
      if (codec.tokenizer == nullptr) {
        return absl::InvalidArgumentError(
            "prompt.chat: this worker group has no tokenizer; send prompt.token_ids");
      }
      if (codec.chat_template == nullptr) {
        return absl::InvalidArgumentError(
            "prompt.chat: this worker group's model has no chat template (start the worker "
            "with --chat_template)");
      }
      if (continuing) {
        return absl::InvalidArgumentError(
            "prompt.chat: a session's later turns take prompt.text or prompt.token_ids");
      }
      DAPQ_ASSIGN_OR_RETURN(const std::string text, codec.chat_template->Render(request.chat()));
      tokens = codec.tokenizer->Encode(text, /*add_special_tokens=*/false);
      if (tokens.empty()) return absl::InvalidArgumentError("prompt.chat encodes to no tokens");
      return tokens;
    }
    case dapq::v1::GenerateRequest::kTokenIds:
      if (request.token_ids().ids().empty()) {
        return absl::InvalidArgumentError("prompt.token_ids is empty");
      }
      for (int i = 0; i < request.token_ids().ids_size(); ++i) {
        const int id = request.token_ids().ids(i);
        if (id < 0 || id >= vocab_size) {
          return absl::InvalidArgumentError(
              absl::StrCat("prompt.token_ids[", i, "]=", id, " is outside [0, ", vocab_size, ")"));
        }
        tokens.push_back(id);
      }
      return tokens;
    case dapq::v1::GenerateRequest::PROMPT_NOT_SET:
      break;
  }
  return absl::InvalidArgumentError("prompt: set prompt.text, prompt.token_ids or prompt.chat");
}

absl::Status CheckContext(size_t prompt_tokens, int max_new_tokens, int next_position,
                          int max_seq_len) {
  const long total = static_cast<long>(next_position) + static_cast<long>(prompt_tokens) +
                     static_cast<long>(max_new_tokens);
  if (total <= max_seq_len) return absl::OkStatus();
  return absl::OutOfRangeError(absl::StrCat(
      "prompt: ", prompt_tokens, " prompt tokens + max_new_tokens=", max_new_tokens,
      next_position > 0 ? absl::StrCat(" after the session's ", next_position, " positions") : "",
      " exceed the model's context limit of ", max_seq_len, " tokens"));
}

}  // namespace dapq::worker::service
