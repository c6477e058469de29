// File: tests/e2e/serve_cli_test.cc
// `dapq serve` as a user runs it: a real local cluster of processes, driven by the `dapq`
// client commands (status, generate --coordinator, batch submit/status/results/cancel), then
// stopped with SIGTERM, leaving no process behind.
#include <signal.h>

#include <fstream>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "launcher/child_process.h"
#include "launcher/local_cluster.h"
#include "nlohmann/json.hpp"
#include "tests/util/redis_server.h"
#include "tests/util/run_command.h"
#include "tests/util/test_paths.h"

namespace dapq {
namespace {

using ::testing::HasSubstr;

// The address `dapq serve` writes to its cluster file (waiting for the file is bounded by serve
// exiting).
// The file `dapq serve` writes its address and pids to (StartServe passes --cluster_file).
std::string ClusterFile(const std::string& dir) { return dir + "/cluster.json"; }

std::string ServeAddress(launcher::ChildProcess& serve, const std::string& cluster_file) {
  std::string address;
  for (int i = 0; i < 600 && address.empty(); ++i) {
    std::ifstream in(cluster_file);
    if (in) address = nlohmann::json::parse(in, nullptr, false).value("address", "");
    if (address.empty() && serve.Wait(std::chrono::milliseconds(100)).has_value()) break;
  }
  return address;
}

// `dapq serve` of one TP=2 group of stories260K on free ports under `dir` (cluster file
// dir/cluster.json, log dir/serve.log), with `extra` flags.
absl::StatusOr<launcher::ChildProcess> StartServe(const std::string& dir,
                                                  const std::vector<std::string>& extra = {}) {
  std::vector<std::string> argv = {DAPQ_BINARY,      "serve",
                                   "--model",        testing::Stories260KPath(),
                                   "--tokenizer",    testing::Tok512Path(),
                                   "--groups",       "1",
                                   "--tp",           "2",
                                   "--port",         "0",
                                   "--metrics_port", "0",
                                   "--work_dir",     dir + "/work",
                                   "--cluster_file", ClusterFile(dir),
                                   "--batch_dir",    dir};
  argv.insert(argv.end(), extra.begin(), extra.end());
  return launcher::ChildProcess::Start(argv, dir + "/serve.log");
}

TEST(ServeCliTest, DeviceFlagsAreCheckedBeforeAnythingStarts) {
  const std::string serve = std::string(DAPQ_BINARY) + " serve --model " +
                            testing::Stories260KPath() + " --groups 1 --tp 1";
  const testing::CommandResult bad = testing::RunCommand(serve + " --device gpu");
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_THAT(bad.out, ::testing::HasSubstr("--device='gpu': cpu, cuda"));
  const testing::CommandResult uncapped = testing::RunCommand(serve + " --device cuda:0");
  EXPECT_NE(uncapped.exit_code, 0);
  EXPECT_THAT(uncapped.out, ::testing::HasSubstr("--worker_arg=--kv_pool_blocks"));
}

TEST(ServeCliTest, ServeGenerateBatchAndStopLeavesNoProcess) {
  const std::string dir = testing::MakeTempDir("serve_cli");
  const std::string dapq = DAPQ_BINARY;
  const std::string cluster_file = ClusterFile(dir);
  // Port 0 lets serve pick; the address is read from the cluster file (written at start).
  auto serve = StartServe(dir);
  ASSERT_TRUE(serve.ok()) << serve.status();
  // serve writes the cluster file before waiting for readiness; `dapq status --wait_s` then
  // blocks until the cluster is ready. (Waiting for the file is bounded by serve exiting.)
  const std::string address = ServeAddress(*serve, cluster_file);
  ASSERT_FALSE(address.empty()) << "dapq serve exited; see " << dir << "/serve.log";
  const testing::CommandResult status =
      testing::RunCommand(dapq + " status --wait_s 60 --groups 1 --coordinator " + address);
  ASSERT_EQ(status.exit_code, 0) << status.out;
  EXPECT_THAT(status.out, HasSubstr("cluster: ready"));
  EXPECT_THAT(status.out, HasSubstr("g0"));

  const testing::CommandResult generated =
      testing::RunCommand(dapq + " generate --coordinator " + address +
                          " --prompt 'Once upon a time' --steps 40 --method dapq --budget 4");
  ASSERT_EQ(generated.exit_code, 0) << generated.out;
  const testing::CommandResult local =
      testing::RunCommand(dapq + " generate --model " + testing::Stories260KPath() +
                              " --tokenizer " + testing::Tok512Path() +
                              " --prompt 'Once upon a time' --steps 40 --method dapq --budget 4",
                          /*merge_stderr=*/false);
  ASSERT_EQ(local.exit_code, 0);
  EXPECT_THAT(generated.out, HasSubstr(local.out.substr(0, local.out.size() - 1)));
  EXPECT_THAT(generated.out, HasSubstr("served by group g0"));
  EXPECT_THAT(generated.out, HasSubstr("time to first token"));
  EXPECT_THAT(generated.out, HasSubstr("kept 80 of"));  // 4 tokens x 5 layers x 4 KV heads

  {
    std::ofstream jsonl(dir + "/prompts.jsonl");
    jsonl << "{\"prompt\": \"Lily saw a cat\"}\n{\"token_ids\": [1, 400, 21]}\n\n"
          << "{\"prompt\": \"The dog\", \"max_new_tokens\": 5}\n";
  }
  const testing::CommandResult submitted = testing::RunCommand(
      dapq + " batch --coordinator " + address + " submit --file " + dir +
      "/prompts.jsonl --max_new_tokens 12 --wait --output_path " + dir + "/results.jsonl");
  ASSERT_EQ(submitted.exit_code, 0) << submitted.out;
  EXPECT_THAT(submitted.out, HasSubstr("3/3 done"));
  const std::string job = submitted.out.substr(0, submitted.out.find('\n'));
  const testing::CommandResult results = testing::RunCommand(
      dapq + " batch --coordinator " + address + " results " + job, /*merge_stderr=*/false);
  ASSERT_EQ(results.exit_code, 0) << results.out;
  int lines = 0;
  for (size_t at = 0; (at = results.out.find('\n', at)) != std::string::npos; ++at) ++lines;
  EXPECT_EQ(lines, 3);
  std::ifstream written(dir + "/results.jsonl");
  std::string line;
  int written_lines = 0;
  while (std::getline(written, line)) {
    const nlohmann::json j = nlohmann::json::parse(line);
    EXPECT_EQ(j["index"], written_lines);
    EXPECT_EQ(j["token_ids"].size(), written_lines == 2 ? 5u : 12u) << line;
    ++written_lines;
  }
  EXPECT_EQ(written_lines, 3);
  const testing::CommandResult cancel =
      testing::RunCommand(dapq + " batch --coordinator " + address + " cancel " + job);
  EXPECT_EQ(cancel.exit_code, 1);
  EXPECT_THAT(cancel.out, HasSubstr("FAILED_PRECONDITION"));
  const testing::CommandResult unknown =
      testing::RunCommand(dapq + " batch --coordinator " + address + " status job-999999");
  EXPECT_EQ(unknown.exit_code, 1);
  EXPECT_THAT(unknown.out, HasSubstr("NOT_FOUND"));

  // A killed rank: serve restarts its group, which registers again and serves.
  auto worker_pid = [&](int rank) {
    std::ifstream in(cluster_file);
    const nlohmann::json j = nlohmann::json::parse(in, nullptr, false);
    return j.is_object() ? j["workers"][rank]["pid"].get<pid_t>() : pid_t{-1};
  };
  const pid_t killed = worker_pid(1);
  ASSERT_EQ(kill(killed, SIGKILL), 0);
  bool restarted = false;
  for (int i = 0; i < 600 && !restarted; ++i) {
    const pid_t now = worker_pid(1);
    restarted = now > 0 && now != killed && kill(now, 0) == 0;
    if (!restarted) ASSERT_FALSE(serve->Wait(std::chrono::milliseconds(100)).has_value());
  }
  ASSERT_TRUE(restarted) << "serve did not restart the group";
  const testing::CommandResult after_restart =
      testing::RunCommand(dapq + " status --wait_s 60 --groups 1 --coordinator " + address);
  ASSERT_EQ(after_restart.exit_code, 0) << after_restart.out;
  testing::CommandResult again;
  for (int i = 0; i < 50; ++i) {  // the coordinator may still hold the dead group's last state
    again = testing::RunCommand(dapq + " generate --coordinator " + address +
                                " --prompt 'Once upon a time' --steps 40 --method dapq --budget 4");
    if (again.exit_code == 0) break;
    ASSERT_FALSE(serve->Wait(std::chrono::milliseconds(100)).has_value());
  }
  ASSERT_EQ(again.exit_code, 0) << again.out;
  EXPECT_THAT(again.out, HasSubstr(local.out.substr(0, local.out.size() - 1)));
  EXPECT_THAT(testing::RunCommand("cat " + dir + "/serve.log").out,
              HasSubstr("restarting group g0"));

  // SIGTERM: every process of the cluster exits.
  std::ifstream in(cluster_file);
  const nlohmann::json cluster = nlohmann::json::parse(in);
  std::vector<pid_t> pids = {cluster["coordinator_pid"].get<pid_t>()};
  for (const auto& w : cluster["workers"]) pids.push_back(w["pid"].get<pid_t>());
  serve->Signal(SIGTERM);
  const std::optional<int> code = serve->Wait(std::chrono::seconds(30));
  ASSERT_TRUE(code.has_value());
  EXPECT_EQ(*code, 0);
  for (pid_t pid : pids) EXPECT_NE(kill(pid, 0), 0) << "pid " << pid << " still runs";
}

// kill -9 of the coordinator in the middle of a batch job: `dapq serve` starts it again on the
// same port and store, the group registers again, the job finishes with every item once, and a
// client that retries gets its answer.
TEST(ServeCliTest, KilledCoordinatorIsRestartedAndTheBatchJobFinishesOnce) {
  const std::string dir = testing::MakeTempDir("serve_coordinator_kill");
  const std::string dapq = DAPQ_BINARY;
  const std::string cluster_file = ClusterFile(dir);
  auto serve = StartServe(dir);
  ASSERT_TRUE(serve.ok()) << serve.status();
  const std::string address = ServeAddress(*serve, cluster_file);
  ASSERT_FALSE(address.empty()) << "dapq serve exited; see " << dir << "/serve.log";
  ASSERT_EQ(testing::RunCommand(dapq + " status --wait_s 60 --groups 1 --coordinator " + address)
                .exit_code,
            0);
  constexpr int kItems = 200;
  {
    std::ofstream jsonl(dir + "/prompts.jsonl");
    for (int i = 0; i < kItems; ++i)
      jsonl << "{\"prompt\": \"Lily saw a cat number " << i << "\"}\n";
  }
  const testing::CommandResult submitted = testing::RunCommand(
      dapq + " batch --coordinator " + address + " submit --file " + dir +
          "/prompts.jsonl --max_new_tokens 48 --output_path " + dir + "/results.jsonl",
      /*merge_stderr=*/false);
  ASSERT_EQ(submitted.exit_code, 0) << submitted.out;
  const std::string job = submitted.out.substr(0, submitted.out.find('\n'));
  // Kill once some items are done and some are not.
  auto coordinator_pid = [&] {
    std::ifstream in(cluster_file);
    const nlohmann::json j = nlohmann::json::parse(in, nullptr, false);
    return j.is_object() ? j["coordinator_pid"].get<pid_t>() : pid_t{-1};
  };
  for (int i = 0; i < 600; ++i) {
    const testing::CommandResult st = testing::RunCommand(
        dapq + " batch --coordinator " + address + " status " + job, /*merge_stderr=*/false);
    if (st.out.find(": running") != std::string::npos &&
        st.out.find(" 0 succeeded") == std::string::npos) {
      break;
    }
    ASSERT_FALSE(serve->Wait(std::chrono::milliseconds(50)).has_value());
  }
  const pid_t killed = coordinator_pid();
  ASSERT_GT(killed, 0);
  ASSERT_EQ(kill(killed, SIGKILL), 0);
  // A client retrying (status --wait_s retries until the coordinator answers and is ready).
  const testing::CommandResult after =
      testing::RunCommand(dapq + " status --wait_s 60 --groups 1 --coordinator " + address);
  ASSERT_EQ(after.exit_code, 0) << after.out;
  EXPECT_NE(coordinator_pid(), killed);
  const testing::CommandResult waited = testing::RunCommand(
      dapq + " batch --coordinator " + address + " status --wait " + job, /*merge_stderr=*/false);
  ASSERT_EQ(waited.exit_code, 0) << waited.out;
  std::ifstream written(dir + "/results.jsonl");
  std::string line;
  std::vector<int> indexes;
  while (std::getline(written, line)) {
    const nlohmann::json j = nlohmann::json::parse(line);
    ASSERT_TRUE(j.contains("token_ids")) << line;  // succeeded
    indexes.push_back(j["index"].get<int>());
  }
  ASSERT_EQ(indexes.size(), static_cast<size_t>(kItems));
  for (int i = 0; i < kItems; ++i) EXPECT_EQ(indexes[i], i);
  EXPECT_THAT(testing::RunCommand("cat " + dir + "/serve.log").out,
              HasSubstr("restarting it (1 of"));
  serve->Signal(SIGTERM);
  const std::optional<int> code = serve->Wait(std::chrono::seconds(30));
  ASSERT_TRUE(code.has_value());
  EXPECT_EQ(*code, 0);
}

// `dapq serve` with a real Redis server as the KV store's last tier and upper tiers of a few
// blocks (no disk tier): sessions go down to Redis between turns, come back, and continue with
// the tokens of an in-process session (`dapq generate --session`, its own store).
TEST(ServeCliTest, SessionsThroughARedisRemoteTierContinueIdentically) {
  auto redis = testing::RedisServer::Start();
  ASSERT_TRUE(redis.ok()) << redis.status();
  const std::string url = absl::StrCat("redis://127.0.0.1:", (*redis)->port());
  const std::string dir = testing::MakeTempDir("serve_redis");
  const std::string dapq = DAPQ_BINARY;
  const std::string cluster_file = ClusterFile(dir);
  auto serve = StartServe(dir, {"--kv_device_kib", "4", "--kv_host_kib", "4", "--kv_disk_mib", "0",
                                "--kv_remote", url, "--kv_resident_kib", "0"});
  ASSERT_TRUE(serve.ok()) << serve.status();
  const std::string address = ServeAddress(*serve, cluster_file);
  ASSERT_FALSE(address.empty()) << "dapq serve exited; see " << dir << "/serve.log";
  const testing::CommandResult status =
      testing::RunCommand(dapq + " status --wait_s 60 --groups 1 --coordinator " + address);
  ASSERT_EQ(status.exit_code, 0) << status.out;
  EXPECT_THAT(status.out, HasSubstr("g0: KV remote tier " + url));

  const std::string flags = " --steps 24 --method dapq --budget 8 --print_ids";
  const std::vector<std::string> turns = {"'Once upon a time, Lily saw a big red ball'",
                                          "' Then the dog came.'", "' They went home.'"};
  for (size_t t = 0; t < turns.size(); ++t) {
    for (const char* session : {"chat-a", "chat-b"}) {
      SCOPED_TRACE(absl::StrCat(session, " turn ", t));
      const testing::CommandResult served =
          testing::RunCommand(absl::StrCat(dapq, " generate --coordinator ", address, " --session ",
                                           session, " --prompt ", turns[t], flags),
                              /*merge_stderr=*/false);
      ASSERT_EQ(served.exit_code, 0) << served.out;
      const testing::CommandResult local = testing::RunCommand(
          absl::StrCat(dapq, " generate --model ", testing::Stories260KPath(), " --tokenizer ",
                       testing::Tok512Path(), " --store_dir ", dir, "/local_store --session ",
                       session, " --prompt ", turns[t], flags),
          /*merge_stderr=*/false);
      ASSERT_EQ(local.exit_code, 0) << local.out;
      ASSERT_GT(local.out.size(), 10u);
      EXPECT_THAT(served.out, HasSubstr(local.out.substr(0, local.out.size() - 1)));
    }
  }
  // The sessions' blocks are on the Redis server, under each rank's prefix.
  for (int rank = 0; rank < 2; ++rank) {
    const testing::CommandResult keys = testing::RunCommand(absl::StrCat(
        "redis-cli -p ", (*redis)->port(), " --scan --pattern 'dapq:g0-r", rank, ":chat-*'"));
    EXPECT_THAT(keys.out, HasSubstr(absl::StrCat("dapq:g0-r", rank, ":chat-a.r", rank, ".l")));
  }
  serve->Signal(SIGTERM);
  EXPECT_EQ(serve->Wait(std::chrono::seconds(30)), 0);
}

}  // namespace
}  // namespace dapq
