// File: tests/api/request_rules_test.cc
// One table of good and bad requests (as batch JSONL lines), fed through the three places that
// judge a request: the CLI's batch file reader (cli/batch_file.h), the coordinator's SubmitBatch
// item checks (coordinator/batch_service.h, jsonl_path) and the worker's request conversion
// (worker/service/request_options.h, run by GroupDriver::Submit). All three must give the same
// verdict: the same status code, and a message naming the same field. Lines that fail the JSONL
// schema never reach a worker (it receives protobuf), so the worker skips those rows.
#include "api/request_rules.h"

#include <fstream>
#include <string>
#include <vector>

#include "api/batch_items.h"
#include "cli/batch_file.h"
#include "coordinator/batch_service.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/util/test_paths.h"
#include "worker/service/request_options.h"

namespace dapq {
namespace {

struct Row {
  const char* name;
  std::string line;
  absl::StatusCode code;
  const char* field;  // a substring every rejection must hold
};

const std::vector<Row>& Table() {
  static const std::vector<Row> rows = {
      {"text prompt", R"({"prompt": "Once upon a time"})", absl::StatusCode::kOk, ""},
      {"token ids, session, max_new_tokens",
       R"({"token_ids": [1, 2, 3], "max_new_tokens": 8, "session_id": "chat-1_A"})",
       absl::StatusCode::kOk, ""},
      {"dapq with a token budget",
       R"({"token_ids": [1, 2], "compression": {"method": "dapq", "budget_tokens": 16}})",
       absl::StatusCode::kOk, ""},
      {"snapkv with a ratio, window and kernel",
       R"({"prompt": "x", "compression": {"method": "snapkv", "budget_ratio": 0.5,
           "window": 4, "pool_kernel": 5, "query_window": 4}})",
       absl::StatusCode::kOk, ""},
      {"sampling options",
       R"({"prompt": "x", "sampling": {"temperature": 0.7, "top_p": 0.9, "seed": "42"}})",
       absl::StatusCode::kOk, ""},
      {"per-head adaptive budgets",
       R"({"prompt": "x", "compression": {"method": "h2o", "budget_tokens": 32,
           "allocator": "adaptive", "storage": "per_head"}})",
       absl::StatusCode::kOk, ""},
      // The JSONL schema.
      {"unknown field", R"({"prompt": "x", "sesion_id": "a"})", absl::StatusCode::kInvalidArgument,
       "sesion_id"},
      {"mistyped field", R"({"prompt": "x", "max_new_tokens": "8"})",
       absl::StatusCode::kInvalidArgument, "max_new_tokens"},
      {"prompt and token_ids", R"({"prompt": "x", "token_ids": [1]})",
       absl::StatusCode::kInvalidArgument, "token_ids"},
      {"token id not an integer", R"({"token_ids": [1, "a"]})", absl::StatusCode::kInvalidArgument,
       "token_ids"},
      {"token id past int32", R"({"token_ids": [4294967296]})", absl::StatusCode::kInvalidArgument,
       "token_ids"},
      {"unknown compression field", R"({"prompt": "x", "compression": {"budget": 16}})",
       absl::StatusCode::kInvalidArgument, "compression"},
      {"not an object", R"(["prompt", "x"])", absl::StatusCode::kInvalidArgument,
       "not a JSON object"},
      // The request rules.
      {"empty text", R"({"prompt": ""})", absl::StatusCode::kInvalidArgument, "prompt.text"},
      {"no prompt", R"({"max_new_tokens": 4})", absl::StatusCode::kInvalidArgument, "prompt"},
      {"negative token id", R"({"token_ids": [1, -5]})", absl::StatusCode::kInvalidArgument,
       "prompt.token_ids[1]=-5"},
      {"negative max_new_tokens", R"({"prompt": "x", "max_new_tokens": -1})",
       absl::StatusCode::kInvalidArgument, "max_new_tokens=-1"},
      {"session id syntax", R"({"prompt": "x", "session_id": "bad id!"})",
       absl::StatusCode::kInvalidArgument, "session_id"},
      {"session id too long",
       R"({"prompt": "x", "session_id": ")" + std::string(129, 'a') + R"("})",
       absl::StatusCode::kInvalidArgument, "session_id"},
      {"negative temperature", R"({"prompt": "x", "sampling": {"temperature": -1}})",
       absl::StatusCode::kInvalidArgument, "sampling.temperature"},
      {"top_p above 1", R"({"prompt": "x", "sampling": {"top_p": 1.5}})",
       absl::StatusCode::kInvalidArgument, "sampling.top_p"},
      {"unknown method", R"({"prompt": "x", "compression": {"method": "snapkv2"}})",
       absl::StatusCode::kInvalidArgument, "unknown method 'snapkv2'"},
      {"no budget", R"({"prompt": "x", "compression": {"method": "dapq"}})",
       absl::StatusCode::kInvalidArgument, "exactly one of compression.budget_tokens"},
      {"both budgets",
       R"({"prompt": "x", "compression": {"method": "dapq", "budget_tokens": 8,
           "budget_ratio": 0.5}})",
       absl::StatusCode::kInvalidArgument, "exactly one"},
      {"negative budget",
       R"({"prompt": "x", "compression": {"method": "dapq", "budget_tokens": -3}})",
       absl::StatusCode::kInvalidArgument, "compression.budget_tokens=-3"},
      {"ratio above 1",
       R"({"prompt": "x", "compression": {"method": "tova", "budget_ratio": 1.5}})",
       absl::StatusCode::kInvalidArgument, "compression.budget_ratio=1.5"},
      {"window + sinks over the budget",
       R"({"prompt": "x", "compression": {"method": "streaming", "budget_tokens": 16,
           "window": 14, "sinks": 4}})",
       absl::StatusCode::kInvalidArgument, "exceed compression.budget_tokens=16"},
      {"negative window",
       R"({"prompt": "x", "compression": {"method": "snapkv", "budget_tokens": 16, "window": -1}})",
       absl::StatusCode::kInvalidArgument, "compression.window=-1"},
      {"even pooling kernel",
       R"({"prompt": "x", "compression": {"method": "snapkv", "budget_tokens": 16,
           "pool_kernel": 4}})",
       absl::StatusCode::kInvalidArgument, "compression.pool_kernel=4"},
      {"zero query window",
       R"({"prompt": "x", "compression": {"method": "dapq", "budget_tokens": 16,
           "query_window": 0}})",
       absl::StatusCode::kInvalidArgument, "compression.query_window=0"},
      {"adaptive needs per_head",
       R"({"prompt": "x", "compression": {"method": "dapq", "budget_tokens": 16,
           "allocator": "adaptive"}})",
       absl::StatusCode::kInvalidArgument, "storage=per_head"},
      {"tova needs shared",
       R"({"prompt": "x", "compression": {"method": "tova", "budget_tokens": 16,
           "storage": "per_head"}})",
       absl::StatusCode::kInvalidArgument, "storage=shared"},
      {"unknown content",
       R"({"prompt": "x", "compression": {"method": "dapq", "budget_tokens": 16,
           "content": "bogus"}})",
       absl::StatusCode::kInvalidArgument, "unknown content 'bogus'"},
  };
  return rows;
}

// JSONL is one object per line: the table's multi-line rows are joined.
std::string OneLine(std::string line) {
  for (char& c : line) {
    if (c == '\n') c = ' ';
  }
  return line;
}

std::string WriteJsonl(const std::string& dir, int i, const std::string& line) {
  const std::string path = dir + "/row" + std::to_string(i) + ".jsonl";
  std::ofstream(path) << OneLine(line) << "\n";
  return path;
}

void ExpectVerdict(const Row& row, const absl::Status& status, const char* who) {
  SCOPED_TRACE(who);
  EXPECT_EQ(status.code(), row.code) << status;
  if (row.code != absl::StatusCode::kOk) {
    EXPECT_THAT(std::string(status.message()), ::testing::HasSubstr(row.field));
  }
}

TEST(RequestRulesTest, CliCoordinatorAndWorkerGiveTheSameVerdicts) {
  const std::string dir = testing::MakeTempDir("request_rules");
  const std::vector<Row>& rows = Table();
  for (size_t i = 0; i < rows.size(); ++i) {
    const Row& row = rows[i];
    SCOPED_TRACE(row.name);
    const std::string path = WriteJsonl(dir, static_cast<int>(i), row.line);

    ExpectVerdict(row, cli::ReadBatchFile(path, dapq::v1::GenerateRequest()).status(), "cli");

    dapq::v1::SubmitBatchRequest submit;
    submit.set_jsonl_path(path);
    ExpectVerdict(
        row,
        coordinator::BatchItems(submit, /*max_seq_len=*/0, *coordinator::BatchPaths::Create(dir))
            .status(),
        "coordinator");

    absl::StatusOr<dapq::v1::GenerateRequest> parsed = api::ParseBatchItem(OneLine(row.line), "");
    if (parsed.ok()) {
      ExpectVerdict(row, worker::service::ToGenerateOptions(*parsed).status(), "worker");
    } else {
      EXPECT_NE(row.code, absl::StatusCode::kOk) << parsed.status();
    }
  }
}

// The same rules hold for items sent inline (the path `dapq batch submit --file` takes).
TEST(RequestRulesTest, InlineItemsGetTheSameVerdicts) {
  for (const Row& row : Table()) {
    absl::StatusOr<dapq::v1::GenerateRequest> parsed = api::ParseBatchItem(OneLine(row.line), "");
    if (!parsed.ok()) continue;
    SCOPED_TRACE(row.name);
    dapq::v1::SubmitBatchRequest submit;
    *submit.add_items() = *parsed;
    ExpectVerdict(row, coordinator::BatchItems(submit, 0).status(), "coordinator inline");
  }
}

TEST(RequestRulesTest, ContextLimitIsOutOfRangeNamingTheField) {
  dapq::v1::SubmitBatchRequest submit;
  dapq::v1::GenerateRequest* item = submit.add_items();
  for (int i = 0; i < 500; ++i) item->mutable_token_ids()->add_ids(1);
  item->set_max_new_tokens(64);
  EXPECT_EQ(coordinator::BatchItems(submit, /*max_seq_len=*/512).status().code(),
            absl::StatusCode::kOutOfRange);
  EXPECT_THAT(std::string(coordinator::BatchItems(submit, 512).status().message()),
              ::testing::HasSubstr("items[0].prompt.token_ids"));
  item->set_max_new_tokens(12);
  EXPECT_TRUE(coordinator::BatchItems(submit, 512).ok());
}

TEST(RequestRulesTest, DefaultMaxNewTokensIsSharedByCoordinatorAndWorker) {
  dapq::v1::GenerateRequest request;
  request.set_text("x");
  absl::StatusOr<worker::GenerateOptions> options = worker::service::ToGenerateOptions(request);
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->max_new_tokens, api::kDefaultMaxNewTokens);
  EXPECT_EQ(api::EffectiveMaxNewTokens(request), api::kDefaultMaxNewTokens);
}

// Chat prompts and stop sequences have no batch JSONL form; the coordinator and the worker
// judge them through the shared ValidateGenerateRequest.
TEST(RequestRulesTest, ChatPromptAndStopSequences) {
  dapq::v1::GenerateRequest request;
  dapq::v1::ChatMessage* m = request.mutable_chat()->add_messages();
  m->set_role("user");
  m->set_content("Hi");
  request.add_stop("\n");
  EXPECT_TRUE(api::ValidateGenerateRequest(request).ok());
  EXPECT_TRUE(worker::service::ToGenerateOptions(request).ok());

  dapq::v1::GenerateRequest bad_role = request;
  bad_role.mutable_chat()->mutable_messages(0)->set_role("tool");
  EXPECT_THAT(std::string(api::ValidateGenerateRequest(bad_role).message()),
              ::testing::HasSubstr("prompt.chat.messages[0].role"));

  dapq::v1::GenerateRequest no_messages = request;
  no_messages.mutable_chat()->clear_messages();
  EXPECT_THAT(std::string(api::ValidateGenerateRequest(no_messages).message()),
              ::testing::HasSubstr("prompt.chat.messages is empty"));

  dapq::v1::GenerateRequest many_stops = request;
  for (int i = 0; i < 4; ++i) many_stops.add_stop("x");
  EXPECT_EQ(api::ValidateGenerateRequest(many_stops).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(api::ValidateGenerateRequest(many_stops).message()),
              ::testing::HasSubstr("stop: 5 sequences"));

  dapq::v1::GenerateRequest empty_stop = request;
  empty_stop.set_stop(0, "");
  EXPECT_THAT(std::string(worker::service::ToGenerateOptions(empty_stop).status().message()),
              ::testing::HasSubstr("stop[0]"));
}

}  // namespace
}  // namespace dapq
