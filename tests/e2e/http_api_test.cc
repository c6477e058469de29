// File: tests/e2e/http_api_test.cc
// The OpenAI-compatible HTTP API end to end, as users reach it: `dapq convert` writes
// stories260K as a Hugging Face directory with a tokenizer.json equivalent to tok512, `dapq serve
// --http_port` serves it (text prompts tokenized by the HF tokenizer, chat through the llama2
// template), and curl and the official OpenAI client (npm `openai`, run by node) drive it:
// completions and chat, streamed and not, stop sequences, token-id prompts, KV compression, a
// stream the client abandons, and bad requests answered with OpenAI error objects. The greedy
// text must equal `dapq generate`'s on the llama2.c files, and the gRPC API's on the HF dir.
#include <signal.h>

#include <fstream>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "launcher/child_process.h"
#include "nlohmann/json.hpp"
#include "tests/util/run_command.h"
#include "tests/util/test_paths.h"

namespace dapq {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;

constexpr char kPrompt[] = "Once upon a time, Lily";
constexpr int kMaxTokens = 24;
const std::string kDapq = DAPQ_BINARY;

// Single-quotes `s` for the shell.
std::string Quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

class HttpApiTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(testing::MakeTempDir("http_api"));
    const std::string& dir = *dir_;
    const testing::CommandResult converted = testing::RunCommand(
        kDapq + " convert --model " + testing::Stories260KPath() + " --tokenizer " +
        testing::Tok512Path() + " --out " + dir + "/stories260K-hf");
    ASSERT_EQ(converted.exit_code, 0) << converted.out;
    auto serve = launcher::ChildProcess::Start({kDapq,
                                                "serve",
                                                "--model",
                                                dir + "/stories260K-hf",
                                                "--chat_template",
                                                "llama2",
                                                "--http_port",
                                                "0",
                                                "--groups",
                                                "1",
                                                "--tp",
                                                "2",
                                                "--port",
                                                "0",
                                                "--metrics_port",
                                                "0",
                                                "--work_dir",
                                                dir + "/work",
                                                "--cluster_file",
                                                dir + "/cluster.json",
                                                "--batch_dir",
                                                "none"},
                                               dir + "/serve.log");
    ASSERT_TRUE(serve.ok()) << serve.status();
    serve_ = new launcher::ChildProcess(std::move(*serve));
    // serve writes its cluster file at start; `dapq status --wait_s` blocks until ready.
    for (int i = 0; i < 600 && address_ == nullptr; ++i) {
      std::ifstream in(dir + "/cluster.json");
      const json j = in ? json::parse(in, nullptr, false) : json();
      if (j.is_object() && j.contains("http_port")) {
        address_ = new std::string(j["address"].get<std::string>());
        http_port_ = j["http_port"].get<int>();
        metrics_port_ = j["coordinator_metrics_port"].get<int>();
      } else {
        ASSERT_FALSE(serve_->Wait(std::chrono::milliseconds(100)).has_value())
            << "dapq serve exited; see " << dir << "/serve.log";
      }
    }
    ASSERT_NE(address_, nullptr);
    const testing::CommandResult status =
        testing::RunCommand(kDapq + " status --wait_s 60 --groups 1 --coordinator " + *address_);
    ASSERT_EQ(status.exit_code, 0) << status.out;
  }
  static void TearDownTestSuite() {
    if (serve_ != nullptr) {
      kill(serve_->pid(), SIGTERM);
      EXPECT_TRUE(serve_->Wait(std::chrono::seconds(30)).has_value());
    }
    delete serve_;
    delete address_;
    delete dir_;
  }

  static std::string Url(const std::string& path) {
    return absl::StrCat("http://127.0.0.1:", http_port_, path);
  }
  // POSTs `body` with curl; the output ends with a line "HTTP <status>".
  static testing::CommandResult Post(const std::string& path, const std::string& body,
                                     const std::string& flags = "") {
    return testing::RunCommand("curl -sS " + flags + " -w '\\nHTTP %{http_code}' -H " +
                                   Quote("Content-Type: application/json") + " -d " + Quote(body) +
                                   " " + Url(path),
                               /*merge_stderr=*/false);
  }
  // The JSON body and status of a non-streamed curl answer.
  static std::pair<json, int> PostJson(const std::string& path, const std::string& body) {
    const testing::CommandResult r = Post(path, body);
    const size_t at = r.out.rfind("\nHTTP ");
    if (r.exit_code != 0 || at == std::string::npos) return {json(), -1};
    return {json::parse(r.out.substr(0, at), nullptr, false), std::stoi(r.out.substr(at + 6))};
  }
  // The `data:` payloads of a server-sent event stream.
  static std::vector<std::string> Events(const std::string& sse) {
    std::vector<std::string> events;
    for (absl::string_view line : absl::StrSplit(sse, '\n')) {
      if (absl::ConsumePrefix(&line, "data: ")) events.emplace_back(line);
    }
    return events;
  }
  // The llama2.c reference: `dapq generate` on stories260K.bin + tok512.bin, greedy; its stdout
  // echoes the prompt before the generated text.
  static std::string ReferenceContinuation() {
    const testing::CommandResult local = testing::RunCommand(
        kDapq + " generate --model " + testing::Stories260KPath() + " --tokenizer " +
            testing::Tok512Path() + " --prompt " + Quote(kPrompt) + " --steps " +
            std::to_string(kMaxTokens) + " --temperature 0",
        /*merge_stderr=*/false);
    EXPECT_EQ(local.exit_code, 0);
    EXPECT_EQ(local.out.rfind(kPrompt, 0), 0u) << local.out;
    std::string text = local.out.substr(std::string(kPrompt).size());
    if (!text.empty() && text.back() == '\n') text.pop_back();
    return text;
  }
  static std::string Metrics() {
    return testing::RunCommand(
               absl::StrCat("curl -sS http://127.0.0.1:", metrics_port_, "/metrics"), false)
        .out;
  }

  static std::string* dir_;
  static launcher::ChildProcess* serve_;
  static std::string* address_;
  static int http_port_, metrics_port_;
};

std::string* HttpApiTest::dir_ = nullptr;
launcher::ChildProcess* HttpApiTest::serve_ = nullptr;
std::string* HttpApiTest::address_ = nullptr;
int HttpApiTest::http_port_ = 0;
int HttpApiTest::metrics_port_ = 0;

TEST_F(HttpApiTest, HealthAndModels) {
  const testing::CommandResult health =
      testing::RunCommand("curl -sS -w '\\nHTTP %{http_code}' " + Url("/health"), false);
  EXPECT_THAT(health.out, HasSubstr("\"status\":\"ok\""));
  EXPECT_THAT(health.out, HasSubstr("HTTP 200"));
  const testing::CommandResult models = testing::RunCommand("curl -sS " + Url("/v1/models"), false);
  const json j = json::parse(models.out, nullptr, false);
  ASSERT_TRUE(j.is_object()) << models.out;
  EXPECT_EQ(j["object"], "list");
  ASSERT_EQ(j["data"].size(), 1u);
  EXPECT_EQ(j["data"][0]["id"], "stories260K-hf");
}

TEST_F(HttpApiTest, CurlCompletionEqualsDapqGenerateAndTheGrpcApi) {
  const std::string reference = ReferenceContinuation();
  ASSERT_FALSE(reference.empty());
  const std::string body = json({{"model", "stories260K-hf"},
                                 {"prompt", kPrompt},
                                 {"max_tokens", kMaxTokens},
                                 {"temperature", 0}})
                               .dump();
  auto [j, status] = PostJson("/v1/completions", body);
  ASSERT_EQ(status, 200) << j;
  EXPECT_EQ(j["object"], "text_completion");
  EXPECT_EQ(j["choices"][0]["text"], reference);
  EXPECT_EQ(j["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(j["usage"]["completion_tokens"], kMaxTokens);
  EXPECT_GT(j["usage"]["prompt_tokens"].get<int>(), 3);

  // Streamed: the deltas add up to the same text; the stream ends with [DONE].
  json streamed_body = json::parse(body);
  streamed_body["stream"] = true;
  const testing::CommandResult sse = Post("/v1/completions", streamed_body.dump(), "-N");
  ASSERT_EQ(sse.exit_code, 0);
  EXPECT_THAT(sse.out, HasSubstr("HTTP 200"));
  const std::vector<std::string> events = Events(sse.out);
  ASSERT_GE(events.size(), 3u) << sse.out;
  EXPECT_EQ(events.back(), "[DONE]");
  std::string text;
  std::string finish;
  for (size_t i = 0; i + 1 < events.size(); ++i) {
    const json e = json::parse(events[i]);
    text += e["choices"][0]["text"].get<std::string>();
    if (e["choices"][0]["finish_reason"].is_string()) finish = e["choices"][0]["finish_reason"];
  }
  EXPECT_EQ(text, reference);
  EXPECT_EQ(finish, "length");

  // The gRPC API on the same HF directory gives the same text.
  const testing::CommandResult grpc = testing::RunCommand(
      kDapq + " generate --coordinator " + *address_ + " --prompt " + Quote(kPrompt) + " --steps " +
          std::to_string(kMaxTokens) + " --temperature 0",
      /*merge_stderr=*/false);
  ASSERT_EQ(grpc.exit_code, 0) << grpc.out;
  EXPECT_THAT(grpc.out, HasSubstr(reference));
}

TEST_F(HttpApiTest, OfficialOpenAiClient) {
  const std::string reference = ReferenceContinuation();
  // A stop sequence: a word from the middle of the reference text.
  const size_t space = reference.find(' ', reference.size() / 2);
  ASSERT_NE(space, std::string::npos) << reference;
  const size_t word_end = reference.find_first_of(" .,", space + 1);
  const std::string stop = reference.substr(space + 1, word_end - space - 1);
  const std::string expected_stopped = reference.substr(0, reference.find(stop));
  const testing::CommandResult node = testing::RunCommand(
      "node tests/npm/openai_client_check.mjs " + Quote(Url("/v1")) + " stories260K-hf " +
          Quote(kPrompt) + " " + std::to_string(kMaxTokens) + " " + Quote(stop),
      /*merge_stderr=*/true);
  ASSERT_EQ(node.exit_code, 0) << node.out << "\n(run scripts/setup.sh: npm ci in tests/npm)";
  const json out = json::parse(node.out, nullptr, false);
  ASSERT_TRUE(out.is_object()) << node.out;

  EXPECT_EQ(out["models"], json::array({"stories260K-hf"}));
  EXPECT_EQ(out["completion"]["text"], reference);
  EXPECT_EQ(out["completion"]["usage"]["completion_tokens"], kMaxTokens);
  EXPECT_EQ(out["completion_stream"]["text"], reference);
  EXPECT_EQ(out["completion_stream"]["finish_reason"], "length");
  EXPECT_EQ(out["completion_stream"]["usage"]["completion_tokens"], kMaxTokens);
  EXPECT_EQ(out["token_id_prompt"]["usage"]["prompt_tokens"], 3);

  EXPECT_EQ(out["stop"]["text"], expected_stopped) << "stop sequence " << stop;
  EXPECT_EQ(out["stop"]["finish_reason"], "stop");
  EXPECT_EQ(out["stop_stream"]["text"], expected_stopped);
  EXPECT_EQ(out["stop_stream"]["finish_reason"], "stop");

  // DapQ with a budget of 4 of the prompt's 7 tokens: the usage reports what was kept.
  const json& kv = out["compressed"]["usage"]["kv_compression"];
  EXPECT_EQ(out["compressed"]["usage"]["prompt_tokens"], 7);
  EXPECT_EQ(kv["kept_tokens"], 4) << out["compressed"];
  EXPECT_EQ(kv["kept_slots"].get<int>() * 7, kv["full_slots"].get<int>() * 4) << kv;
  EXPECT_THAT(out["compressed"]["usage"]["kv_compression"]["config"].get<std::string>(),
              HasSubstr("dapq"));

  EXPECT_EQ(out["chat"]["role"], "assistant");
  EXPECT_EQ(out["chat"]["object"], "chat.completion");
  EXPECT_FALSE(out["chat"]["text"].get<std::string>().empty());
  EXPECT_EQ(out["chat_stream"]["text"], out["chat"]["text"]);
  EXPECT_EQ(out["chat_stream"]["role"], "assistant");

  EXPECT_EQ(out["cancelled_stream"]["chunks_read"], 1);

  const json& errors = out["errors"];
  EXPECT_EQ(errors["unknown_model"]["status"], 404);
  EXPECT_EQ(errors["unknown_model"]["code"], "model_not_found");
  EXPECT_EQ(errors["negative_max_tokens"]["status"], 400);
  EXPECT_EQ(errors["negative_max_tokens"]["param"], "max_tokens");
  EXPECT_EQ(errors["over_long_prompt"]["status"], 400);
  EXPECT_EQ(errors["over_long_prompt"]["code"], "context_length_exceeded");
  EXPECT_THAT(errors["over_long_prompt"]["message"].get<std::string>(), HasSubstr("context limit"));

  // The abandoned stream reached the worker group: it is cancelled there, not run to the end.
  bool cancelled = false;
  for (int i = 0; i < 300 && !cancelled; ++i) {
    cancelled = Metrics().find("dapq_coordinator_requests_total{code=\"CANCELLED\"} 1") !=
                std::string::npos;
    if (!cancelled) ASSERT_FALSE(serve_->Wait(std::chrono::milliseconds(100)).has_value());
  }
  EXPECT_TRUE(cancelled) << Metrics();
}

TEST_F(HttpApiTest, ChatThroughTheTemplateEqualsTheRenderedTextPrompt) {
  const json chat = {{"model", "stories260K-hf"},
                     {"messages", json::array({{{"role", "user"}, {"content", "Hi"}}})},
                     {"max_tokens", 12},
                     {"temperature", 0}};
  auto [c, status] = PostJson("/v1/chat/completions", chat.dump());
  ASSERT_EQ(status, 200) << c;
  // The llama2 template renders "<s>[INST] Hi [/INST]": the same tokens as that text prompt.
  const json text = {{"prompt", "[INST] Hi [/INST]"}, {"max_tokens", 12}, {"temperature", 0}};
  auto [t, text_status] = PostJson("/v1/completions", text.dump());
  ASSERT_EQ(text_status, 200) << t;
  EXPECT_EQ(c["choices"][0]["message"]["content"], t["choices"][0]["text"]);
  EXPECT_EQ(c["usage"]["prompt_tokens"], t["usage"]["prompt_tokens"]);
}

TEST_F(HttpApiTest, BadRequestsGetOpenAiErrorsAndTheServerStaysUp) {
  struct Case {
    const char* path;
    std::string body;
    int status;
    const char* message;
  } cases[] = {
      {"/v1/completions", "{\"prompt\": ", 400, "not valid JSON"},
      {"/v1/completions", R"({"prompt": "x", "max_tokens": -1})", 400, "max_tokens"},
      {"/v1/completions", R"({"model": "gpt-4", "prompt": "x"})", 404, "does not exist"},
      {"/v1/completions", R"({"prompt": [1, 999999]})", 400, "outside [0, 512)"},
      {"/v1/chat/completions", R"({"messages": [{"role": "user", "content": "a"},
                                               {"role": "user", "content": "b"}]})",
       400, "alternating"},
      {"/v1/nothing", "{}", 404, "no route"},
  };
  for (const Case& c : cases) {
    auto [j, status] = PostJson(c.path, c.body);
    EXPECT_EQ(status, c.status) << c.body << " -> " << j;
    ASSERT_TRUE(j.is_object() && j.contains("error")) << c.body << " -> " << j;
    EXPECT_THAT(j["error"]["message"].get<std::string>(), HasSubstr(c.message)) << c.body;
    EXPECT_TRUE(j["error"].contains("type"));
  }
  // A deadline that passes while the group works: 504 with OpenAI's error object.
  const testing::CommandResult late =
      Post("/v1/completions", R"({"prompt": "Once upon a time", "max_tokens": 400})",
           "-H 'X-Request-Timeout-Ms: 1'");
  EXPECT_THAT(late.out, HasSubstr("HTTP 504"));
  EXPECT_THAT(late.out, HasSubstr("\"timeout_error\""));
  auto [ok, status] = PostJson("/v1/completions", R"({"prompt": "Hi", "max_tokens": 2})");
  EXPECT_EQ(status, 200) << ok;
  EXPECT_THAT(Metrics(), HasSubstr("dapq_coordinator_http_responses_total{path=\"/v1/completions\","
                                   "status=\"400\"}"));
}

}  // namespace
}  // namespace dapq
