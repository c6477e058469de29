// File: coordinator/openai_protocol.cc
// Request parsing (field by field, with OpenAI's names), error mapping and response JSON.
#include "coordinator/openai_protocol.h"

#include <cmath>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "api/request_rules.h"
#include "nlohmann/json.hpp"

namespace dapq::coordinator {
namespace {

using nlohmann::json;

std::string Dump(const json& j) {
  return j.dump(-1, ' ', /*ensure_ascii=*/false, json::error_handler_t::replace);
}

OpenAiError Invalid(std::string param, std::string message) {
  OpenAiError e;
  e.param = std::move(param);
  e.message = std::move(message);
  return e;
}

std::string TypeName(const json& v) { return v.type_name(); }

// Reads an optional number field into `out`; error naming it when present with another type.
std::optional<OpenAiError> Number(const json& body, const char* key, double* out, bool* present) {
  *present = false;
  if (!body.contains(key) || body[key].is_null()) return std::nullopt;
  if (!body[key].is_number()) {
    return Invalid(key, absl::StrCat(key, ": expected a number, got ", TypeName(body[key])));
  }
  *out = body[key].get<double>();
  *present = true;
  return std::nullopt;
}

std::optional<OpenAiError> Integer(const json& body, const char* key, int64_t* out, bool* present) {
  *present = false;
  if (!body.contains(key) || body[key].is_null()) return std::nullopt;
  if (!body[key].is_number_integer()) {
    return Invalid(key, absl::StrCat(key, ": expected an integer, got ", TypeName(body[key])));
  }
  *out = body[key].get<int64_t>();
  *present = true;
  return std::nullopt;
}

std::optional<OpenAiError> ParsePrompt(const json& body, dapq::v1::GenerateRequest* r) {
  if (!body.contains("prompt")) return Invalid("prompt", "prompt: required");
  const json& p = body["prompt"];
  auto token_ids = [&](const json& list) -> std::optional<OpenAiError> {
    if (list.empty()) return Invalid("prompt", "prompt: the token id list is empty");
    for (size_t i = 0; i < list.size(); ++i) {
      if (!list[i].is_number_integer() || list[i].get<int64_t>() < 0 ||
          list[i].get<int64_t>() > INT32_MAX) {
        return Invalid("prompt", absl::StrCat("prompt[", i,
                                              "]: expected a token id (an integer "
                                              ">= 0)"));
      }
      r->mutable_token_ids()->add_ids(static_cast<int32_t>(list[i].get<int64_t>()));
    }
    return std::nullopt;
  };
  if (p.is_string()) {
    if (p.get<std::string>().empty()) return Invalid("prompt", "prompt: empty");
    r->set_text(p.get<std::string>());
    return std::nullopt;
  }
  if (!p.is_array()) {
    return Invalid("prompt", absl::StrCat("prompt: expected a string or a list of token ids, got ",
                                          TypeName(p)));
  }
  if (!p.empty() && (p[0].is_string() || p[0].is_array())) {
    if (p.size() != 1) {
      return Invalid("prompt", absl::StrCat("prompt: ", p.size(),
                                            " prompts given; this server takes one per request"));
    }
    if (p[0].is_string()) {
      if (p[0].get<std::string>().empty()) return Invalid("prompt", "prompt[0]: empty");
      r->set_text(p[0].get<std::string>());
      return std::nullopt;
    }
    return token_ids(p[0]);
  }
  return token_ids(p);
}

std::optional<OpenAiError> ParseMessages(const json& body, dapq::v1::GenerateRequest* r) {
  if (!body.contains("messages")) return Invalid("messages", "messages: required");
  const json& m = body["messages"];
  if (!m.is_array() || m.empty()) {
    return Invalid("messages", "messages: expected a non-empty list of messages");
  }
  dapq::v1::ChatPrompt* chat = r->mutable_chat();
  for (size_t i = 0; i < m.size(); ++i) {
    const std::string where = absl::StrCat("messages[", i, "]");
    if (!m[i].is_object() || !m[i].contains("role") || !m[i]["role"].is_string()) {
      return Invalid(where, absl::StrCat(where, ": expected an object with a string role"));
    }
    std::string role = m[i]["role"].get<std::string>();
    if (role == "developer") role = "system";  // OpenAI's newer name for the system role
    if (role != "system" && role != "user" && role != "assistant") {
      return Invalid(where + ".role", absl::StrCat(where, ".role: '", role.substr(0, 32),
                                                   "' is not supported (system, developer, user, "
                                                   "assistant)"));
    }
    std::string content;
    const json c = m[i].value("content", json());
    if (c.is_string()) {
      content = c.get<std::string>();
    } else if (c.is_array()) {  // content parts: only text
      for (size_t k = 0; k < c.size(); ++k) {
        if (!c[k].is_object() || !c[k].contains("type") || c[k]["type"] != "text" ||
            !c[k].contains("text") || !c[k]["text"].is_string()) {
          return Invalid(absl::StrCat(where, ".content[", k, "]"),
                         absl::StrCat(where, ".content[", k,
                                      "]: only {\"type\": \"text\", \"text\": ...} parts are "
                                      "supported"));
        }
        content += c[k]["text"].get<std::string>();
      }
    } else if (!c.is_null()) {
      return Invalid(where + ".content",
                     absl::StrCat(where, ".content: expected a string, got ", TypeName(c)));
    }
    dapq::v1::ChatMessage* msg = chat->add_messages();
    msg->set_role(role);
    msg->set_content(std::move(content));
  }
  return std::nullopt;
}

std::optional<OpenAiError> ParseCompression(const json& body, dapq::v1::CompressionOptions* c) {
  if (!body.contains("kv_compression") || body["kv_compression"].is_null()) return std::nullopt;
  const json& k = body["kv_compression"];
  if (!k.is_object()) return Invalid("kv_compression", "kv_compression: expected an object");
  for (const auto& item : k.items()) {  // not a structured binding: lambdas capture these
    const std::string& key = item.key();
    const json& v = item.value();
    const std::string param = "kv_compression." + key;
    auto need_int = [&]() -> std::optional<OpenAiError> {
      if (!v.is_number_integer() || v.get<int64_t>() < INT32_MIN || v.get<int64_t>() > INT32_MAX) {
        return Invalid(param, absl::StrCat(param, ": expected an integer"));
      }
      return std::nullopt;
    };
    auto need_string = [&]() -> std::optional<OpenAiError> {
      if (!v.is_string()) return Invalid(param, absl::StrCat(param, ": expected a string"));
      return std::nullopt;
    };
    std::optional<OpenAiError> e;
    if (key == "method") {
      if (!(e = need_string())) c->set_method(v.get<std::string>());
    } else if (key == "budget" || key == "budget_tokens") {
      if (!(e = need_int())) c->set_budget_tokens(static_cast<int32_t>(v.get<int64_t>()));
    } else if (key == "budget_ratio") {
      if (!v.is_number()) return Invalid(param, param + ": expected a number");
      c->set_budget_ratio(v.get<double>());
    } else if (key == "window") {
      if (!(e = need_int())) c->set_window(static_cast<int32_t>(v.get<int64_t>()));
    } else if (key == "sinks") {
      if (!(e = need_int())) c->set_sinks(static_cast<int32_t>(v.get<int64_t>()));
    } else if (key == "pool_kernel") {
      if (!(e = need_int())) c->set_pool_kernel(static_cast<int32_t>(v.get<int64_t>()));
    } else if (key == "query_window") {
      if (!(e = need_int())) c->set_query_window(static_cast<int32_t>(v.get<int64_t>()));
    } else if (key == "allocator") {
      if (!(e = need_string())) c->set_allocator(v.get<std::string>());
    } else if (key == "storage") {
      if (!(e = need_string())) c->set_storage(v.get<std::string>());
    } else if (key == "pool") {
      if (!(e = need_string())) c->set_pool(v.get<std::string>());
    } else if (key == "streaming_chunk") {
      if (!(e = need_int())) c->set_streaming_chunk(static_cast<int32_t>(v.get<int64_t>()));
    } else if (key == "every_turn") {
      if (!v.is_boolean()) return Invalid(param, param + ": expected true or false");
      c->set_every_turn(v.get<bool>());
    } else {
      return Invalid(param, absl::StrCat(param,
                                         ": unknown field (method, budget, budget_ratio, "
                                         "window, sinks, pool_kernel, query_window, "
                                         "allocator, storage, pool, streaming_chunk, "
                                         "every_turn)"));
    }
    if (e) return e;
  }
  return std::nullopt;
}

// Fields OpenAI defines that this server does not implement: refused rather than ignored, so
// a client never gets silently different semantics.
std::optional<OpenAiError> RefuseUnsupported(const json& body) {
  auto refuse = [](const char* key, const char* why) {
    return Invalid(key, absl::StrCat(key, ": ", why));
  };
  if (body.contains("n") && !(body["n"].is_number_integer() && body["n"].get<int64_t>() == 1) &&
      !body["n"].is_null()) {
    return refuse("n", "only n = 1 is supported");
  }
  if (body.contains("best_of") && !body["best_of"].is_null() &&
      !(body["best_of"].is_number_integer() && body["best_of"].get<int64_t>() == 1)) {
    return refuse("best_of", "only best_of = 1 is supported");
  }
  if (body.contains("echo") && !body["echo"].is_null() && body["echo"] != false) {
    return refuse("echo", "not supported");
  }
  if (body.contains("logprobs") && !body["logprobs"].is_null() && body["logprobs"] != false) {
    return refuse("logprobs", "not supported");
  }
  if (body.contains("suffix") && !body["suffix"].is_null())
    return refuse("suffix", "not supported");
  if (body.contains("tools") && !body["tools"].is_null()) return refuse("tools", "not supported");
  if (body.contains("logit_bias") && !body["logit_bias"].is_null() && !body["logit_bias"].empty()) {
    return refuse("logit_bias", "not supported");
  }
  for (const char* penalty : {"presence_penalty", "frequency_penalty"}) {
    if (body.contains(penalty) && body[penalty].is_number() && body[penalty].get<double>() != 0) {
      return refuse(penalty, "not supported (only 0)");
    }
  }
  return std::nullopt;
}

}  // namespace

std::string OpenAiError::ToJson() const {
  json e = {{"message", message}, {"type", type}};
  e["param"] = param.empty() ? json() : json(param);
  e["code"] = code.empty() ? json() : json(code);
  return Dump(json{{"error", e}});
}

std::optional<OpenAiError> ParseOpenAiRequest(std::string_view body_text, OpenAiEndpoint endpoint,
                                              OpenAiRequest* out) {
  json body = json::parse(body_text, nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded()) {
    return Invalid("", "the request body is not valid JSON");
  }
  if (!body.is_object()) return Invalid("", "the request body must be a JSON object");
  out->endpoint = endpoint;
  dapq::v1::GenerateRequest& r = out->request;
  if (body.contains("model") && !body["model"].is_null()) {
    if (!body["model"].is_string()) return Invalid("model", "model: expected a string");
    out->model = body["model"].get<std::string>();
  }
  if (auto e = RefuseUnsupported(body)) return e;
  if (auto e = endpoint == OpenAiEndpoint::kCompletions ? ParsePrompt(body, &r)
                                                        : ParseMessages(body, &r)) {
    return e;
  }
  int64_t max_tokens = endpoint == OpenAiEndpoint::kCompletions ? kCompletionsDefaultMaxTokens
                                                                : api::kDefaultMaxNewTokens;
  bool present = false;
  for (const char* key : {"max_tokens", "max_completion_tokens"}) {
    int64_t v = 0;
    if (auto e = Integer(body, key, &v, &present)) return e;
    if (!present) continue;
    if (v < 1 || v > INT32_MAX) {
      return Invalid(key, absl::StrCat(key, ": ", v, " must be at least 1"));
    }
    max_tokens = v;
  }
  r.set_max_new_tokens(static_cast<int32_t>(max_tokens));
  double temperature = 1.0, top_p = 1.0;
  if (auto e = Number(body, "temperature", &temperature, &present)) return e;
  if (!std::isfinite(temperature) || temperature < 0 || temperature > 2) {
    return Invalid("temperature", absl::StrCat("temperature: ", temperature, " must be in [0, 2]"));
  }
  if (auto e = Number(body, "top_p", &top_p, &present)) return e;
  if (!std::isfinite(top_p) || top_p <= 0 || top_p > 1) {
    return Invalid("top_p", absl::StrCat("top_p: ", top_p, " must be in (0, 1]"));
  }
  r.mutable_sampling()->set_temperature(static_cast<float>(temperature));
  r.mutable_sampling()->set_top_p(static_cast<float>(top_p));
  int64_t seed = 0;
  if (auto e = Integer(body, "seed", &seed, &present)) return e;
  r.mutable_sampling()->set_seed(static_cast<uint64_t>(seed));
  if (body.contains("stop") && !body["stop"].is_null()) {
    const json& s = body["stop"];
    if (s.is_string()) {
      r.add_stop(s.get<std::string>());
    } else if (s.is_array()) {
      for (const json& one : s) {
        if (!one.is_string()) return Invalid("stop", "stop: expected strings");
        r.add_stop(one.get<std::string>());
      }
    } else {
      return Invalid("stop", "stop: expected a string or a list of strings");
    }
  }
  if (body.contains("stream") && !body["stream"].is_null()) {
    if (!body["stream"].is_boolean()) return Invalid("stream", "stream: expected a boolean");
    out->stream = body["stream"].get<bool>();
  }
  if (body.contains("stream_options") && !body["stream_options"].is_null()) {
    const json& so = body["stream_options"];
    if (!so.is_object()) return Invalid("stream_options", "stream_options: expected an object");
    if (so.contains("include_usage") && !so["include_usage"].is_null()) {
      if (!so["include_usage"].is_boolean()) {
        return Invalid("stream_options.include_usage",
                       "stream_options.include_usage: expected a boolean");
      }
      out->include_usage = so["include_usage"].get<bool>();
    }
  }
  if (auto e = ParseCompression(body, r.mutable_compression())) return e;
  // The shared request rules (the same verdicts as the gRPC API), with OpenAI's names.
  if (absl::Status s = api::ValidateGenerateRequest(r); !s.ok()) {
    std::string message(s.message());
    std::string param;
    if (message.rfind("stop", 0) == 0) param = "stop";
    if (message.rfind("compression", 0) == 0) param = "kv_compression";
    if (message.rfind("prompt.chat", 0) == 0) param = "messages";
    if (message.rfind("prompt", 0) == 0 && param.empty()) param = "prompt";
    return Invalid(param, message);
  }
  return std::nullopt;
}

OpenAiError ErrorFromStatus(const grpc::Status& status) {
  OpenAiError e;
  e.message = status.error_message();
  switch (status.error_code()) {
    case grpc::StatusCode::INVALID_ARGUMENT:
      e.http_status = 400;
      break;
    case grpc::StatusCode::OUT_OF_RANGE:
      e.http_status = 400;
      e.code = "context_length_exceeded";
      break;
    case grpc::StatusCode::NOT_FOUND:
      e.http_status = 404;
      break;
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      e.http_status = 429;
      e.type = "rate_limit_error";
      break;
    case grpc::StatusCode::UNAUTHENTICATED:
      e.http_status = 401;
      e.type = "authentication_error";
      break;
    case grpc::StatusCode::PERMISSION_DENIED:
      e.http_status = 403;
      e.type = "permission_error";
      break;
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      e.http_status = 504;
      e.type = "timeout_error";
      break;
    case grpc::StatusCode::UNAVAILABLE:
      e.http_status = 503;
      e.type = "server_error";
      break;
    case grpc::StatusCode::CANCELLED:
      e.http_status = 499;
      e.type = "cancelled";
      break;
    default:
      e.http_status = 500;
      e.type = "server_error";
      break;
  }
  return e;
}

size_t CompleteUtf8Prefix(std::string_view text) {
  // Look back at most 3 bytes for the lead byte of the last character.
  const size_t n = text.size();
  for (size_t back = 1; back <= 3 && back <= n; ++back) {
    const auto c = static_cast<unsigned char>(text[n - back]);
    if ((c & 0xC0) == 0x80) continue;  // a continuation byte: keep looking
    const size_t need = (c & 0xE0) == 0xC0   ? 2
                        : (c & 0xF0) == 0xE0 ? 3
                        : (c & 0xF8) == 0xF0 ? 4
                                             : 1;
    return need > back ? n - back : n;
  }
  return n;
}

OpenAiResponseBuilder::OpenAiResponseBuilder(const OpenAiRequest& request, std::string model,
                                             int64_t created)
    : endpoint_(request.endpoint),
      model_(std::move(model)),
      created_(created),
      filter_(
          std::vector<std::string>(request.request.stop().begin(), request.request.stop().end())) {
  static thread_local std::mt19937_64 rng(std::random_device{}());
  id_ = absl::StrFormat("%s-%016x", endpoint_ == OpenAiEndpoint::kCompletions ? "cmpl" : "chatcmpl",
                        rng());
}

std::string OpenAiResponseBuilder::Delta(const dapq::v1::GenerateResponse& part) {
  utf8_carry_ += part.text();
  const size_t whole = CompleteUtf8Prefix(utf8_carry_);
  std::string shown = filter_.Push(std::string_view(utf8_carry_).substr(0, whole));
  utf8_carry_.erase(0, whole);
  return shown;
}

std::string OpenAiResponseBuilder::Tail() {
  std::string rest = filter_.Push(utf8_carry_);  // an unfinished character, replaced in JSON
  utf8_carry_.clear();
  return rest + filter_.Flush();
}

std::string OpenAiResponseBuilder::FinishReason(const dapq::v1::GenerationSummary& summary) const {
  if (stopped() || summary.finish_reason() == "stop") return "stop";
  return "length";
}

// One streamed chunk: `content` as the completion's text or the chat delta's content (a chat
// delta may carry the role instead), and the finish reason (null until the last chunk).
std::string OpenAiResponseBuilder::StreamChunk(const json& chat_delta, std::string_view text,
                                               const json& finish_reason) const {
  json j = {{"id", id_}, {"created", created_}, {"model", model_}};
  if (endpoint_ == OpenAiEndpoint::kCompletions) {
    j["object"] = "text_completion";
    j["choices"] = json::array(
        {{{"index", 0}, {"text", text}, {"logprobs", nullptr}, {"finish_reason", finish_reason}}});
  } else {
    j["object"] = "chat.completion.chunk";
    j["choices"] =
        json::array({{{"index", 0}, {"delta", chat_delta}, {"finish_reason", finish_reason}}});
  }
  return Dump(j);
}

std::string OpenAiResponseBuilder::ChunkJson(std::string_view delta) const {
  return StreamChunk({{"content", delta}}, delta, nullptr);
}

std::string OpenAiResponseBuilder::RoleChunkJson() const {
  return StreamChunk({{"role", "assistant"}, {"content", ""}}, "", nullptr);
}

std::string OpenAiResponseBuilder::FinishChunkJson(
    const dapq::v1::GenerationSummary& summary) const {
  return StreamChunk(json::object(), "", FinishReason(summary));
}

namespace {
json Usage(const dapq::v1::GenerationSummary& s) {
  const int completion_tokens = s.generated_tokens();
  json u = {{"prompt_tokens", s.prompt_tokens()},
            {"completion_tokens", completion_tokens},
            {"total_tokens", s.prompt_tokens() + completion_tokens},
            {"prompt_tokens_details", {{"cached_tokens", s.cached_prompt_tokens()}}}};
  const double per_token =
      s.prompt_tokens() > 0 ? static_cast<double>(s.kv_full_slots()) / s.prompt_tokens() : 0;
  u["kv_compression"] = {
      {"config", s.compression()},
      {"full_slots", s.kv_full_slots()},
      {"kept_slots", s.kv_kept_slots()},
      // Slots are tokens x layers x KV heads; per-head budgets keep different tokens per head,
      // so this is the mean number of prompt tokens a head keeps.
      {"kept_tokens",
       per_token > 0 ? static_cast<int64_t>(std::llround(s.kv_kept_slots() / per_token)) : 0},
      {"kept_ratio", s.kv_full_slots() > 0 ? static_cast<double>(s.kv_kept_slots()) /
                                                 static_cast<double>(s.kv_full_slots())
                                           : 1.0}};
  return u;
}
}  // namespace

std::string OpenAiResponseBuilder::UsageChunkJson(
    const dapq::v1::GenerationSummary& summary) const {
  json j = {{"id", id_},
            {"created", created_},
            {"model", model_},
            {"object", endpoint_ == OpenAiEndpoint::kCompletions ? "text_completion"
                                                                 : "chat.completion.chunk"},
            {"choices", json::array()},
            {"usage", Usage(summary)}};
  return Dump(j);
}

std::string OpenAiResponseBuilder::ResponseJson(std::string_view text,
                                                const dapq::v1::GenerationSummary& summary) const {
  json j = {{"id", id_}, {"created", created_}, {"model", model_}};
  if (endpoint_ == OpenAiEndpoint::kCompletions) {
    j["object"] = "text_completion";
    j["choices"] = json::array({{{"index", 0},
                                 {"text", text},
                                 {"logprobs", nullptr},
                                 {"finish_reason", FinishReason(summary)}}});
  } else {
    j["object"] = "chat.completion";
    j["choices"] = json::array({{{"index", 0},
                                 {"message", {{"role", "assistant"}, {"content", text}}},
                                 {"logprobs", nullptr},
                                 {"finish_reason", FinishReason(summary)}}});
  }
  j["usage"] = Usage(summary);
  return Dump(j);
}

}  // namespace dapq::coordinator
