// File: coordinator/openai_protocol_test.cc
// The OpenAI JSON layer: request parsing with OpenAI's parameter names in errors, status
// mapping, stop sequences and split UTF-8 characters in streamed text, response shapes.
#include "coordinator/openai_protocol.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "nlohmann/json.hpp"

namespace dapq::coordinator {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;

OpenAiRequest MustParse(const std::string& body, OpenAiEndpoint endpoint) {
  OpenAiRequest r;
  std::optional<OpenAiError> e = ParseOpenAiRequest(body, endpoint, &r);
  EXPECT_FALSE(e.has_value()) << (e ? e->ToJson() : "");
  return r;
}

OpenAiError MustFail(const std::string& body, OpenAiEndpoint endpoint) {
  OpenAiRequest r;
  std::optional<OpenAiError> e = ParseOpenAiRequest(body, endpoint, &r);
  EXPECT_TRUE(e.has_value()) << body;
  return e.value_or(OpenAiError{});
}

TEST(OpenAiProtocolTest, CompletionRequestFields) {
  OpenAiRequest r = MustParse(
      R"({"model": "m", "prompt": "Once upon", "max_tokens": 7, "temperature": 0,
          "top_p": 0.5, "seed": 42, "stop": ["\n", "END"], "stream": true,
          "stream_options": {"include_usage": true}, "user": "ignored",
          "kv_compression": {"method": "dapq", "budget": 64, "window": 8}})",
      OpenAiEndpoint::kCompletions);
  EXPECT_EQ(r.model, "m");
  EXPECT_TRUE(r.stream);
  EXPECT_TRUE(r.include_usage);
  EXPECT_EQ(r.request.text(), "Once upon");
  EXPECT_EQ(r.request.max_new_tokens(), 7);
  EXPECT_EQ(r.request.sampling().temperature(), 0.0f);
  EXPECT_EQ(r.request.sampling().top_p(), 0.5f);
  EXPECT_EQ(r.request.sampling().seed(), 42u);
  ASSERT_EQ(r.request.stop_size(), 2);
  EXPECT_EQ(r.request.stop(1), "END");
  EXPECT_EQ(r.request.compression().method(), "dapq");
  EXPECT_EQ(r.request.compression().budget_tokens(), 64);
  EXPECT_EQ(r.request.compression().window(), 8);
}

TEST(OpenAiProtocolTest, DefaultsFollowOpenAi) {
  OpenAiRequest c = MustParse(R"({"prompt": "x"})", OpenAiEndpoint::kCompletions);
  EXPECT_EQ(c.request.max_new_tokens(), kCompletionsDefaultMaxTokens);
  EXPECT_EQ(c.request.sampling().temperature(), 1.0f);
  EXPECT_FALSE(c.stream);
  OpenAiRequest chat =
      MustParse(R"({"messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 3})",
                OpenAiEndpoint::kChatCompletions);
  EXPECT_EQ(chat.request.max_new_tokens(), 3);
}

TEST(OpenAiProtocolTest, PromptAsTokenIdsOrOneElementLists) {
  EXPECT_THAT(
      MustParse(R"({"prompt": [1, 5, 9]})", OpenAiEndpoint::kCompletions).request.token_ids().ids(),
      ::testing::ElementsAre(1, 5, 9));
  EXPECT_EQ(MustParse(R"({"prompt": ["abc"]})", OpenAiEndpoint::kCompletions).request.text(),
            "abc");
  EXPECT_EQ(
      MustParse(R"({"prompt": [[4, 2]]})", OpenAiEndpoint::kCompletions).request.token_ids().ids(1),
      2);
}

TEST(OpenAiProtocolTest, ChatMessages) {
  OpenAiRequest r = MustParse(
      R"({"messages": [{"role": "developer", "content": "Be brief."},
                       {"role": "user", "content": [{"type": "text", "text": "Hi "},
                                                    {"type": "text", "text": "there"}]},
                       {"role": "assistant", "content": null}]})",
      OpenAiEndpoint::kChatCompletions);
  ASSERT_EQ(r.request.chat().messages_size(), 3);
  EXPECT_EQ(r.request.chat().messages(0).role(), "system");
  EXPECT_EQ(r.request.chat().messages(1).content(), "Hi there");
  EXPECT_EQ(r.request.chat().messages(2).content(), "");
}

TEST(OpenAiProtocolTest, BadRequestsNameTheParam) {
  struct Case {
    const char* body;
    OpenAiEndpoint endpoint;
    const char* param;
    const char* message;
  } cases[] = {
      {R"({"prompt": "x", "max_tokens": -1})", OpenAiEndpoint::kCompletions, "max_tokens",
       "must be at least 1"},
      {R"({"prompt": "x", "max_tokens": "8"})", OpenAiEndpoint::kCompletions, "max_tokens",
       "expected an integer"},
      {R"({"prompt": "x", "temperature": 3})", OpenAiEndpoint::kCompletions, "temperature",
       "[0, 2]"},
      {R"({"prompt": "x", "top_p": 0})", OpenAiEndpoint::kCompletions, "top_p", "(0, 1]"},
      {R"({"max_tokens": 4})", OpenAiEndpoint::kCompletions, "prompt", "required"},
      {R"({"prompt": ""})", OpenAiEndpoint::kCompletions, "prompt", "empty"},
      {R"({"prompt": ["a", "b"]})", OpenAiEndpoint::kCompletions, "prompt", "one per request"},
      {R"({"prompt": [1, -2]})", OpenAiEndpoint::kCompletions, "prompt", "prompt[1]"},
      {R"({"prompt": "x", "n": 2})", OpenAiEndpoint::kCompletions, "n", "n = 1"},
      {R"({"prompt": "x", "echo": true})", OpenAiEndpoint::kCompletions, "echo", "not supported"},
      {R"({"prompt": "x", "stop": ["a", "b", "c", "d", "e"]})", OpenAiEndpoint::kCompletions,
       "stop", "at most 4"},
      {R"({"prompt": "x", "stop": 5})", OpenAiEndpoint::kCompletions, "stop", "string"},
      {R"({"prompt": "x", "kv_compression": {"method": "dapq", "budjet": 4}})",
       OpenAiEndpoint::kCompletions, "kv_compression.budjet", "unknown field"},
      {R"({"prompt": "x", "kv_compression": {"method": "nope", "budget": 4}})",
       OpenAiEndpoint::kCompletions, "kv_compression", "nope"},
      {R"({"messages": []})", OpenAiEndpoint::kChatCompletions, "messages", "non-empty"},
      {R"({"messages": [{"role": "tool", "content": "x"}]})", OpenAiEndpoint::kChatCompletions,
       "messages[0].role", "not supported"},
      {R"({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]})",
       OpenAiEndpoint::kChatCompletions, "messages[0].content[0]", "text"},
      // Mistyped optional fields are 400s naming them, never exceptions (found by fuzzing).
      {R"({"messages": [{"role": "user", "content": [{"type": 1, "text": "x"}]}]})",
       OpenAiEndpoint::kChatCompletions, "messages[0].content[0]", "text"},
      {R"({"prompt": "x", "echo": "yes"})", OpenAiEndpoint::kCompletions, "echo", "not supported"},
      {R"({"prompt": "x", "stream_options": {"include_usage": 1}})", OpenAiEndpoint::kCompletions,
       "stream_options.include_usage", "boolean"},
      {R"({"prompt": "x", "stream_options": 3})", OpenAiEndpoint::kCompletions, "stream_options",
       "object"},
  };
  for (const Case& c : cases) {
    OpenAiError e = MustFail(c.body, c.endpoint);
    EXPECT_EQ(e.http_status, 400) << c.body;
    EXPECT_EQ(e.param, c.param) << c.body;
    EXPECT_THAT(e.message, HasSubstr(c.message)) << c.body;
    json j = json::parse(e.ToJson());
    EXPECT_EQ(j["error"]["type"], "invalid_request_error");
    EXPECT_EQ(j["error"]["param"], c.param);
  }
}

TEST(OpenAiProtocolTest, NullOptionalFieldsMeanTheirDefaults) {
  OpenAiRequest r = MustParse(R"({"prompt": "x", "echo": null, "stream_options": null,
                                  "n": null, "logprobs": null})",
                              OpenAiEndpoint::kCompletions);
  EXPECT_FALSE(r.include_usage);
}

TEST(OpenAiProtocolTest, MalformedJsonIsA400WithNullParam) {
  OpenAiError e = MustFail("{\"prompt\": ", OpenAiEndpoint::kCompletions);
  EXPECT_EQ(e.http_status, 400);
  EXPECT_THAT(e.message, HasSubstr("not valid JSON"));
  EXPECT_TRUE(json::parse(e.ToJson())["error"]["param"].is_null());
  EXPECT_THAT(MustFail("[1]", OpenAiEndpoint::kCompletions).message, HasSubstr("JSON object"));
}

TEST(OpenAiProtocolTest, StatusMapping) {
  EXPECT_EQ(ErrorFromStatus(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "x")).http_status,
            400);
  OpenAiError too_long = ErrorFromStatus(grpc::Status(grpc::StatusCode::OUT_OF_RANGE, "long"));
  EXPECT_EQ(too_long.http_status, 400);
  EXPECT_EQ(too_long.code, "context_length_exceeded");
  EXPECT_EQ(ErrorFromStatus(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "")).http_status,
            429);
  EXPECT_EQ(ErrorFromStatus(grpc::Status(grpc::StatusCode::UNAVAILABLE, "")).http_status, 503);
  EXPECT_EQ(ErrorFromStatus(grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "")).http_status,
            504);
  EXPECT_EQ(ErrorFromStatus(grpc::Status(grpc::StatusCode::INTERNAL, "")).http_status, 500);
}

TEST(OpenAiProtocolTest, Utf8PrefixHoldsSplitCharacters) {
  const std::string cat = "猫";  // 3 bytes
  EXPECT_EQ(CompleteUtf8Prefix("ab"), 2u);
  EXPECT_EQ(CompleteUtf8Prefix("a" + cat), 4u);
  EXPECT_EQ(CompleteUtf8Prefix("a" + cat.substr(0, 1)), 1u);
  EXPECT_EQ(CompleteUtf8Prefix("a" + cat.substr(0, 2)), 1u);
  EXPECT_EQ(CompleteUtf8Prefix("\xff"), 1u);  // invalid: passes (replaced when written)
  EXPECT_EQ(CompleteUtf8Prefix(""), 0u);
}

dapq::v1::GenerateResponse Part(const std::string& text) {
  dapq::v1::GenerateResponse r;
  r.add_token_ids(1);
  r.set_text(text);
  return r;
}

TEST(OpenAiProtocolTest, BuilderCutsStopsAndJoinsSplitCharacters) {
  OpenAiRequest r = MustParse(R"({"prompt": "x", "stop": ["END"]})", OpenAiEndpoint::kCompletions);
  OpenAiResponseBuilder b(r, "stories", 1700000000);
  const std::string cat = "猫";
  EXPECT_EQ(b.Delta(Part("a" + cat.substr(0, 1))), "a");
  EXPECT_EQ(b.Delta(Part(cat.substr(1))), cat);
  EXPECT_EQ(b.Delta(Part(" E")), " ");
  EXPECT_EQ(b.Delta(Part("ND and more")), "");
  EXPECT_TRUE(b.stopped());
  EXPECT_EQ(b.Tail(), "");
  dapq::v1::GenerationSummary s;
  s.set_prompt_tokens(10);
  s.set_generated_tokens(4);
  s.set_finish_reason("cancelled");
  s.set_kv_full_slots(100);
  s.set_kv_kept_slots(25);
  json j = json::parse(b.ResponseJson("a" + cat + " ", s));
  EXPECT_EQ(j["object"], "text_completion");
  EXPECT_EQ(j["model"], "stories");
  EXPECT_THAT(j["id"].get<std::string>(), ::testing::StartsWith("cmpl-"));
  EXPECT_EQ(j["choices"][0]["text"], "a" + cat + " ");
  EXPECT_EQ(j["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(j["usage"]["prompt_tokens"], 10);
  EXPECT_EQ(j["usage"]["completion_tokens"], 4);
  EXPECT_EQ(j["usage"]["total_tokens"], 14);
  EXPECT_EQ(j["usage"]["kv_compression"]["kept_tokens"], 3);  // 25 slots / 10 per token
}

TEST(OpenAiProtocolTest, ChatChunksAndFinish) {
  OpenAiRequest r = MustParse(R"({"messages": [{"role": "user", "content": "hi"}]})",
                              OpenAiEndpoint::kChatCompletions);
  OpenAiResponseBuilder b(r, "m", 1);
  json role = json::parse(b.RoleChunkJson());
  EXPECT_EQ(role["object"], "chat.completion.chunk");
  EXPECT_EQ(role["choices"][0]["delta"]["role"], "assistant");
  json chunk = json::parse(b.ChunkJson("Hel"));
  EXPECT_EQ(chunk["choices"][0]["delta"]["content"], "Hel");
  EXPECT_TRUE(chunk["choices"][0]["finish_reason"].is_null());
  dapq::v1::GenerationSummary s;
  s.set_finish_reason("length");
  EXPECT_EQ(json::parse(b.FinishChunkJson(s))["choices"][0]["finish_reason"], "length");
  json usage = json::parse(b.UsageChunkJson(s));
  EXPECT_TRUE(usage["choices"].empty());
  EXPECT_TRUE(usage["usage"].contains("total_tokens"));
  json full = json::parse(b.ResponseJson("Hello", s));
  EXPECT_EQ(full["object"], "chat.completion");
  EXPECT_EQ(full["choices"][0]["message"]["content"], "Hello");
}

}  // namespace
}  // namespace dapq::coordinator
