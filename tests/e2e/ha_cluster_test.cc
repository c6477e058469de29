// File: tests/e2e/ha_cluster_test.cc
// Beyond one machine (issue #17), as processes: a real etcd and a real PostgreSQL (Debian's
// packages), two dapq-coordinator replicas sharing both (--etcd, --batch_store postgres://), and
// two TP=2 worker groups whose ranks run in working directories of their own and meet through
// etcd (no shared path; no --coordinator: they find the coordinators in etcd). Faults are real:
// SIGKILL of a coordinator in the middle of a 200-item batch job and of client traffic, SIGKILL
// of a group, etcd killed and restarted during traffic, PostgreSQL killed and restarted in the
// middle of a job. Every answer is checked against the tokens of the in-process engine
// (`dapq generate --model`), and every job's results hold one line per index.
#include <signal.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/status_macros.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "launcher/child_process.h"
#include "nlohmann/json.hpp"
#include "tests/util/etcd_server.h"
#include "tests/util/postgres_server.h"
#include "tests/util/run_command.h"
#include "tests/util/status_matchers.h"
#include "tests/util/test_paths.h"

namespace dapq {
namespace {

using launcher::ChildProcess;
using ::testing::HasSubstr;

constexpr int kEtcdTtlS = 2;
constexpr int kSteps = 24;
const std::vector<std::string>& Prompts() {
  static const auto* prompts = new std::vector<std::string>{
      "Lily saw a cat", "The dog ran to the park", "Once upon a time", "Tom had a red ball"};
  return *prompts;
}

std::string Bin(const std::string& name) {
  return (std::filesystem::path(DAPQ_BINARY).parent_path() / name).string();
}

// The in-process engine's greedy ids for a prompt: the reference every served answer matches.
std::string ReferenceIds(const std::string& prompt, int steps = kSteps) {
  const testing::CommandResult r = testing::RunCommand(
      absl::StrCat(DAPQ_BINARY, " generate --model ", testing::Stories260KPath(), " --tokenizer ",
                   testing::Tok512Path(), " --prompt '", prompt, "' --steps ", steps,
                   " --print_ids"),
      /*merge_stderr=*/false);
  EXPECT_EQ(r.exit_code, 0) << r.out;
  return std::string(absl::StripAsciiWhitespace(r.out));
}

// "1 2 3" from a result line's token_ids.
std::string JoinIds(const nlohmann::json& ids) {
  std::string out;
  for (const auto& id : ids) absl::StrAppend(&out, out.empty() ? "" : " ", id.get<int>());
  return out;
}

class HaCluster {
 public:
  static absl::StatusOr<std::unique_ptr<HaCluster>> Start(const std::string& dir) {
    auto c = std::unique_ptr<HaCluster>(new HaCluster(dir));
    DAPQ_ASSIGN_OR_RETURN(c->etcd_, testing::EtcdServer::Start());
    DAPQ_ASSIGN_OR_RETURN(c->pg_, testing::PostgresServer::Start("ha_pg"));
    for (int i = 0; i < 2; ++i) DAPQ_RETURN_IF_ERROR(c->StartCoordinator(i));
    for (int g = 0; g < 2; ++g) {
      for (int r = 0; r < 2; ++r) DAPQ_RETURN_IF_ERROR(c->StartWorker(g, r));
    }
    return c;
  }

  absl::Status StartCoordinator(int i) {
    const std::vector<std::string> argv = {Bin("dapq-coordinator"),
                                           "--listen",
                                           absl::StrCat("127.0.0.1:", ports_[i]),
                                           "--internal_listen",
                                           "127.0.0.1:0",
                                           "--metrics_listen",
                                           "127.0.0.1:0",
                                           "--heartbeat_ms",
                                           "200",
                                           "--etcd",
                                           etcd_url(),
                                           "--etcd_ttl_s",
                                           std::to_string(kEtcdTtlS),
                                           "--coordinator_id",
                                           absl::StrCat("c", i),
                                           "--batch_store",
                                           pg_->url(),
                                           "--batch_dir",
                                           dir_,
                                           "--ready_fd",
                                           "3"};
    DAPQ_ASSIGN_OR_RETURN(
        ChildProcess p,
        ChildProcess::Start(argv, absl::StrCat(dir_, "/coordinator", i, ".log"), true));
    coordinators_[i] = std::make_unique<ChildProcess>(std::move(p));
    DAPQ_ASSIGN_OR_RETURN(std::string ready,
                          coordinators_[i]->ReadReadyLine(std::chrono::seconds(60)));
    ports_[i] = std::atoi(ready.c_str());  // a restart keeps the port
    return absl::OkStatus();
  }

  // Each rank in a working directory of its own: nothing on disk is shared.
  absl::Status StartWorker(int g, int r) {
    const std::string cwd = absl::StrCat(dir_, "/g", g, "r", r);
    std::filesystem::create_directories(cwd);
    const std::vector<std::string> argv = {"/bin/sh",
                                           "-c",
                                           "cd \"$1\" && shift && exec \"$@\"",
                                           "sh",
                                           cwd,
                                           Bin("dapq-worker"),
                                           "--model",
                                           std::filesystem::absolute(testing::Stories260KPath()),
                                           "--tokenizer",
                                           std::filesystem::absolute(testing::Tok512Path()),
                                           "--tp",
                                           "2",
                                           "--rank",
                                           std::to_string(r),
                                           "--group_id",
                                           absl::StrCat("g", g),
                                           "--etcd",
                                           etcd_url(),
                                           "--etcd_ttl_s",
                                           std::to_string(kEtcdTtlS),
                                           "--heartbeat_ms",
                                           "200",
                                           "--metrics_listen",
                                           "127.0.0.1:0"};
    DAPQ_ASSIGN_OR_RETURN(ChildProcess p,
                          ChildProcess::Start(argv, absl::StrCat(cwd, "/worker.log")));
    workers_[g * 2 + r] = std::make_unique<ChildProcess>(std::move(p));
    return absl::OkStatus();
  }

  std::string etcd_url() const { return etcd_->url("/ha"); }
  std::string address(int i) const { return absl::StrCat("127.0.0.1:", ports_[i]); }
  ChildProcess& coordinator(int i) { return *coordinators_[i]; }
  ChildProcess& worker(int g, int r) { return *workers_[g * 2 + r]; }
  testing::EtcdServer& etcd() { return *etcd_; }
  testing::PostgresServer& pg() { return *pg_; }

 private:
  explicit HaCluster(std::string dir) : dir_(std::move(dir)) {}
  std::string dir_;
  std::unique_ptr<testing::EtcdServer> etcd_;
  std::unique_ptr<testing::PostgresServer> pg_;
  int ports_[2] = {0, 0};
  std::unique_ptr<ChildProcess> coordinators_[2];
  std::unique_ptr<ChildProcess> workers_[4];
};

// `dapq status` of one coordinator: its output, and whether it exited 0 (ready with `groups`).
testing::CommandResult Status(const std::string& address, int groups, int wait_s) {
  return testing::RunCommand(absl::StrCat(DAPQ_BINARY, " status --wait_s ", wait_s, " --groups ",
                                          groups, " --coordinator ", address));
}

// A greedy generate through `address`, as a client that retries does (up to `tries` times, on
// any error: a coordinator that is away or a queue that is full): the ids printed after the
// echoed prompt, or "" when every try failed.
std::string ServedIds(const std::string& address, const std::string& prompt, int tries = 20,
                      int steps = kSteps) {
  for (int t = 0; t < tries; ++t) {
    const testing::CommandResult r = testing::RunCommand(
        absl::StrCat(DAPQ_BINARY, " generate --coordinator ", address, " --prompt '", prompt,
                     "' --steps ", steps, " --print_ids"),
        /*merge_stderr=*/false);
    if (r.exit_code != 0) {
      std::fprintf(stderr, "generate via %s (try %d): %s\n", address.c_str(), t + 1, r.out.c_str());
      continue;
    }
    std::string line = r.out.substr(0, r.out.find('\n'));
    if (absl::StartsWith(line, prompt)) line = line.substr(prompt.size());
    return std::string(absl::StripAsciiWhitespace(line));
  }
  return "";
}

// Writes `items` prompts (cycling over Prompts()) and submits them through `address`; the job
// id.
std::string SubmitJob(const std::string& dir, const std::string& name, int items,
                      const std::string& address) {
  {
    std::ofstream jsonl(absl::StrCat(dir, "/", name, ".jsonl"));
    for (int i = 0; i < items; ++i) {
      jsonl << nlohmann::json{{"prompt", Prompts()[i % Prompts().size()]}}.dump() << "\n";
    }
  }
  const testing::CommandResult submitted = testing::RunCommand(
      absl::StrCat(DAPQ_BINARY, " batch --coordinator ", address, " submit --file ", dir, "/", name,
                   ".jsonl --max_new_tokens ", kSteps, " --output_path ", dir, "/", name,
                   ".results.jsonl"),
      /*merge_stderr=*/false);
  EXPECT_EQ(submitted.exit_code, 0) << submitted.out;
  return submitted.out.substr(0, submitted.out.find('\n'));
}

// Polls `dapq batch status` until the job has some succeeded items and is still running.
void WaitForProgress(const std::string& address, const std::string& job) {
  for (int i = 0; i < 600; ++i) {
    const testing::CommandResult st = testing::RunCommand(
        absl::StrCat(DAPQ_BINARY, " batch --coordinator ", address, " status ", job),
        /*merge_stderr=*/false);
    if (st.out.find(": running") != std::string::npos &&
        st.out.find(" 0 succeeded") == std::string::npos) {
      return;
    }
    if (st.out.find(" 0 pending") != std::string::npos &&
        st.out.find(" 0 running") != std::string::npos) {
      return;  // finished already
    }
  }
}

// Waits through `address` until the job finished, then checks its results file: one line per
// index, in order, each succeeded with the reference ids of its prompt.
void ExpectFinishedOnce(const std::string& address, const std::string& dir, const std::string& name,
                        const std::string& job, int items,
                        const std::map<std::string, std::string>& reference) {
  const testing::CommandResult waited = testing::RunCommand(
      absl::StrCat(DAPQ_BINARY, " batch --coordinator ", address, " status --wait ", job),
      /*merge_stderr=*/false);
  ASSERT_EQ(waited.exit_code, 0) << waited.out;
  EXPECT_THAT(waited.out, HasSubstr(absl::StrCat(items, " succeeded")));
  std::ifstream results(absl::StrCat(dir, "/", name, ".results.jsonl"));
  std::string line;
  int n = 0;
  while (std::getline(results, line)) {
    const nlohmann::json j = nlohmann::json::parse(line);
    ASSERT_EQ(j.value("index", -1), n) << line;
    ASSERT_TRUE(j.contains("token_ids")) << line;
    EXPECT_EQ(JoinIds(j["token_ids"]), reference.at(Prompts()[n % Prompts().size()])) << line;
    ++n;
  }
  EXPECT_EQ(n, items);
}

std::map<std::string, std::string> References() {
  std::map<std::string, std::string> reference;
  for (const std::string& p : Prompts()) reference[p] = ReferenceIds(p);
  return reference;
}

// Two coordinators, two groups formed through etcd in separate directories: both coordinators
// serve the reference tokens; SIGKILL of one coordinator in the middle of a 200-item job and of
// client traffic leaves the other to finish the job, every item exactly once, and to answer the
// clients that retry there; a SIGKILLed group disappears from both coordinators within its
// lease TTL.
TEST(HaClusterTest, CoordinatorLossAndGroupLoss) {
  const std::string dir = testing::MakeTempDir("ha_cluster");
  const std::map<std::string, std::string> reference = References();
  auto cluster = HaCluster::Start(dir);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  HaCluster& c = **cluster;
  for (int i = 0; i < 2; ++i) {
    const testing::CommandResult st = Status(c.address(i), 2, 90);
    ASSERT_EQ(st.exit_code, 0) << st.out << " (logs in " << dir << ")";
    EXPECT_THAT(st.out, HasSubstr("g0"));
    EXPECT_THAT(st.out, HasSubstr("g1"));
    EXPECT_EQ(ServedIds(c.address(i), Prompts()[0]), reference.at(Prompts()[0]));
  }

  constexpr int kItems = 200;
  const std::string job = SubmitJob(dir, "job1", kItems, c.address(0));
  ASSERT_FALSE(job.empty());
  WaitForProgress(c.address(0), job);
  // A stream in flight through coordinator 0 when it dies (a long one, queued behind the job).
  const std::string long_prompt = Prompts()[3];
  auto stream = ChildProcess::Start({DAPQ_BINARY, "generate", "--coordinator", c.address(0),
                                     "--prompt", long_prompt, "--steps", "200", "--print_ids"},
                                    dir + "/stream.log");
  ASSERT_TRUE(stream.ok()) << stream.status();
  // Kill once the stream has begun (the CLI echoes the prompt with the first event), unless it
  // ended first.
  for (int i = 0; i < 1000 && std::filesystem::file_size(dir + "/stream.log") == 0; ++i) {
    if (stream->Wait(std::chrono::milliseconds(10)).has_value()) break;
  }
  c.coordinator(0).Signal(SIGKILL);
  const auto coordinator_killed_at = std::chrono::steady_clock::now();
  ASSERT_TRUE(c.coordinator(0).Wait(std::chrono::seconds(10)).has_value());
  const std::optional<int> stream_exit = stream->Wait(std::chrono::seconds(60));
  ASSERT_TRUE(stream_exit.has_value());
  // A client whose coordinator died retries on the other one and gets the reference answer.
  EXPECT_EQ(ServedIds(c.address(0), Prompts()[1], /*tries=*/1), "");
  EXPECT_EQ(ServedIds(c.address(1), Prompts()[1]), reference.at(Prompts()[1]));
  if (*stream_exit != 0) {
    EXPECT_EQ(ServedIds(c.address(1), long_prompt, 20, /*steps=*/200),
              ReferenceIds(long_prompt, /*steps=*/200));
  }
  ExpectFinishedOnce(c.address(1), dir, "job1", job, kItems, reference);
  std::printf(
      "job of %d items finished %.2f s after coordinator 0's SIGKILL\n", kItems,
      std::chrono::duration<double>(std::chrono::steady_clock::now() - coordinator_killed_at)
          .count());

  // The killed coordinator comes back (same port, same store and etcd) and sees both groups.
  ASSERT_THAT(c.StartCoordinator(0), testing::IsOk());
  ASSERT_EQ(Status(c.address(0), 2, 60).exit_code, 0);

  // SIGKILL of a whole group: it leaves both coordinators within the lease TTL (plus the
  // watch's delivery), without any heartbeat timeout involved.
  c.worker(1, 0).Signal(SIGKILL);
  c.worker(1, 1).Signal(SIGKILL);
  const auto killed_at = std::chrono::steady_clock::now();
  for (int i = 0; i < 2; ++i) {
    bool gone = false;
    for (int tries = 0; tries < 300 && !gone; ++tries) {
      const testing::CommandResult st = Status(c.address(i), 0, 1);
      gone = st.out.find("g1") == std::string::npos && st.out.find("g0") != std::string::npos;
    }
    EXPECT_TRUE(gone) << "coordinator " << i << " still lists g1";
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - killed_at).count();
  std::printf("g1 left both coordinators %.2f s after its SIGKILL (lease TTL %d s)\n", seconds,
              kEtcdTtlS);
  EXPECT_LT(seconds, kEtcdTtlS + 6.0);  // etcd expires leases within about a TTL
  EXPECT_EQ(ServedIds(c.address(0), Prompts()[2]), reference.at(Prompts()[2]));
}

// etcd killed and restarted during traffic: the groups already known keep serving, and a batch
// job running across it completes every item once; PostgreSQL killed and restarted in the
// middle of a job: no item lost or duplicated.
TEST(HaClusterTest, EtcdAndPostgresRestarts) {
  const std::string dir = testing::MakeTempDir("ha_restarts");
  const std::map<std::string, std::string> reference = References();
  auto cluster = HaCluster::Start(dir);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  HaCluster& c = **cluster;
  for (int i = 0; i < 2; ++i) ASSERT_EQ(Status(c.address(i), 2, 90).exit_code, 0) << dir;

  const std::string job = SubmitJob(dir, "across_etcd", 60, c.address(0));
  WaitForProgress(c.address(0), job);
  c.etcd().Kill();
  for (int i = 0; i < 4; ++i) {
    const std::string& prompt = Prompts()[i];
    EXPECT_EQ(ServedIds(c.address(i % 2), prompt), reference.at(prompt)) << "etcd down";
  }
  ASSERT_THAT(c.etcd().Restart(), testing::IsOk());
  EXPECT_EQ(ServedIds(c.address(1), Prompts()[3]), reference.at(Prompts()[3]));
  ExpectFinishedOnce(c.address(1), dir, "across_etcd", job, 60, reference);
  // After etcd returned, both coordinators still see both groups (re-registered if needed).
  for (int i = 0; i < 2; ++i) ASSERT_EQ(Status(c.address(i), 2, 30).exit_code, 0);

  const std::string job2 = SubmitJob(dir, "across_pg", 120, c.address(1));
  WaitForProgress(c.address(1), job2);
  ASSERT_THAT(c.pg().Kill(), testing::IsOk());
  ASSERT_THAT(c.pg().Restart(), testing::IsOk());
  ExpectFinishedOnce(c.address(0), dir, "across_pg", job2, 120, reference);
}

}  // namespace
}  // namespace dapq
