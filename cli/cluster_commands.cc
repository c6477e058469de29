// File: cli/cluster_commands.cc
// The client commands of a running cluster: `dapq status` (readable cluster summary; exit 0 once
// ready) and `dapq batch submit|status|results|cancel` (durable batch jobs, with a progress bar).
#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <optional>
#include <thread>

#include "absl/strings/str_cat.h"
#include "api/request_rules.h"
#include "cli/batch_file.h"
#include "cli/command.h"
#include "common/auth_token.h"
#include "common/grpc_status.h"
#include "common/status_macros.h"
#include "common/tls.h"
#include "dapq/v1/batch.grpc.pb.h"
#include "launcher/local_cluster.h"
#include "nlohmann/json.hpp"

namespace dapq::cli {
namespace {

std::shared_ptr<grpc::Channel> Connect(const std::string& address) {
  return ClientChannel(address);
}

std::string Bytes(int64_t b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(b);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof(buf), u == 0 ? "%.0f %s" : "%.1f %s", v, units[u]);
  return buf;
}

void PrintStatus(const dapq::v1::ClusterStatusResponse& s) {
  std::printf("cluster: %s, %d/%d requests in flight, %ld rejected, %d open batch jobs\n",
              s.ready() ? "ready" : "NOT ready", s.queue_depth(), s.queue_capacity(),
              static_cast<long>(s.rejected_total()), s.batch_jobs_open());
  std::printf("%-6s %-22s %-3s %-8s %6s %13s %9s %12s %9s  %s\n", "group", "address", "tp",
              "health", "queue", "run/wait/cap", "sessions", "kv_bytes", "served", "detail");
  for (const auto& g : s.groups()) {
    const std::string batch = absl::StrCat(g.active(), "/", g.waiting(), "/", g.batch_capacity());
    std::printf("%-6s %-22s %-3d %-8s %6d %13s %9d %12s %9ld  %s\n", g.group_id().c_str(),
                g.address().c_str(), g.tp(), g.healthy() ? "healthy" : "DOWN",
                g.queue_depth() + g.in_flight(), batch.c_str(), g.sessions(),
                Bytes(g.kv_bytes_used()).c_str(), static_cast<long>(g.requests_served()),
                g.health_detail().c_str());
  }
  for (const auto& g : s.groups()) {
    if (!g.kv_remote().empty() || !g.kv_peer().empty()) {
      std::printf("%s: KV remote tier %s%s%s\n", g.group_id().c_str(),
                  g.kv_remote().empty() ? "none" : g.kv_remote().c_str(),
                  g.kv_peer().empty() ? "" : ", serves KvPeer on ", g.kv_peer().c_str());
    }
  }
  bool header = false;
  for (const auto& g : s.groups()) {
    for (const auto& r : g.ranks()) {
      if (!header) {
        std::printf(
            "\nKV per worker: live cache (paged pool), then the store's tiers "
            "(used / capacity, blocks):\n");
        header = true;
      }
      std::printf("  %s rank %d:", g.group_id().c_str(), r.rank());
      for (const auto& t : r.tiers()) {
        std::printf("  %s %s / %s (%d)", t.tier().c_str(), Bytes(t.used_bytes()).c_str(),
                    t.capacity_bytes() > 0 ? Bytes(t.capacity_bytes()).c_str() : "unbounded",
                    t.blocks());
      }
      std::printf("\n");
    }
  }
}

absl::Status RunStatus(const std::string& coordinator, int wait_s, int groups) {
  absl::StatusOr<dapq::v1::ClusterStatusResponse> s =
      launcher::WaitForCluster(coordinator, groups, std::chrono::seconds(wait_s));
  if (!s.ok()) return s.status();
  PrintStatus(*s);
  return absl::OkStatus();
}

void PrintJob(const dapq::v1::BatchJob& j) {
  std::printf(
      "%s %s: %s, %d items: %d succeeded, %d failed, %d cancelled, %d running, %d "
      "pending%s%s\n",
      j.job_id().c_str(), j.name().c_str(), j.state().c_str(), j.total(), j.succeeded(), j.failed(),
      j.cancelled(), j.running(), j.pending(),
      j.output_path().empty() ? "" : ", results: ", j.output_path().c_str());
}

bool Finished(const dapq::v1::BatchJob& j) { return j.finished_unix_ms() != 0; }

// Polls GetBatch and draws a progress bar on stderr until the job finishes. A coordinator that
// is unavailable (restarting, or one replica of several going away) is asked again for up to
// kUnavailableRetry: the job lives in the store, not in the coordinator.
absl::Status WaitForJob(dapq::v1::Batch::Stub& stub, const std::string& id) {
  constexpr auto kUnavailableRetry = std::chrono::seconds(60);
  const bool tty = isatty(STDERR_FILENO);
  std::optional<std::chrono::steady_clock::time_point> unavailable_since;
  while (true) {
    grpc::ClientContext context;
    AttachClientToken(&context);
    dapq::v1::GetBatchRequest request;
    request.set_job_id(id);
    dapq::v1::BatchJob job;
    if (grpc::Status s = stub.GetBatch(&context, request, &job); !s.ok()) {
      const auto now = std::chrono::steady_clock::now();
      if (s.error_code() != grpc::StatusCode::UNAVAILABLE ||
          now - unavailable_since.value_or(now) > kUnavailableRetry) {
        return FromGrpcStatus(s);
      }
      if (!unavailable_since) {
        unavailable_since = now;
        std::fprintf(stderr, "coordinator unavailable (%s); retrying for up to %llds\n",
                     s.error_message().c_str(), static_cast<long long>(kUnavailableRetry.count()));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
      continue;
    }
    unavailable_since.reset();
    const int done = job.succeeded() + job.failed() + job.cancelled();
    const int width = 30;
    const int fill = job.total() > 0 ? width * done / job.total() : width;
    std::fprintf(stderr, "%s[%s%s] %d/%d done (%d failed)%s", tty ? "\r" : "",
                 std::string(fill, '#').c_str(), std::string(width - fill, '.').c_str(), done,
                 job.total(), job.failed(), tty ? "" : "\n");
    if (Finished(job)) {
      std::fprintf(stderr, "\n");
      PrintJob(job);
      return job.failed() > 0 ? absl::AbortedError(absl::StrCat(job.failed(), " items failed"))
                              : absl::OkStatus();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(tty ? 200 : 1000));
  }
}

struct BatchOptions {
  std::string coordinator = "127.0.0.1:50051";
  std::string file, server_path, name, output_path, job_id, out;
  int max_new_tokens = 0, max_attempts = 0;
  bool wait = false, follow = false;
};

absl::Status Submit(const BatchOptions& o) {
  dapq::v1::SubmitBatchRequest request;
  request.set_name(o.name);
  request.set_output_path(o.output_path);
  request.set_max_attempts(o.max_attempts);
  request.mutable_defaults()->set_max_new_tokens(o.max_new_tokens);
  if (!o.server_path.empty()) {
    request.set_jsonl_path(o.server_path);
  } else {
    if (o.file.empty()) return absl::InvalidArgumentError("--file or --server_path is required");
    DAPQ_ASSIGN_OR_RETURN(std::vector<dapq::v1::GenerateRequest> items,
                          ReadBatchFile(o.file, request.defaults()));
    request.mutable_items()->Assign(items.begin(), items.end());
  }
  auto stub = dapq::v1::Batch::NewStub(Connect(o.coordinator));
  grpc::ClientContext context;
  AttachClientToken(&context);
  dapq::v1::SubmitBatchResponse response;
  if (grpc::Status s = stub->SubmitBatch(&context, request, &response); !s.ok()) {
    return FromGrpcStatus(s);
  }
  std::printf("%s\n", response.job_id().c_str());
  std::fflush(stdout);
  std::fprintf(stderr, "submitted %s with %d items\n", response.job_id().c_str(), response.items());
  return o.wait ? WaitForJob(*stub, response.job_id()) : absl::OkStatus();
}

absl::Status Status(const BatchOptions& o) {
  auto stub = dapq::v1::Batch::NewStub(Connect(o.coordinator));
  if (o.wait) return WaitForJob(*stub, o.job_id);
  grpc::ClientContext context;
  AttachClientToken(&context);
  if (o.job_id.empty()) {
    dapq::v1::ListBatchesResponse list;
    if (grpc::Status s = stub->ListBatches(&context, {}, &list); !s.ok()) return FromGrpcStatus(s);
    for (const auto& j : list.jobs()) PrintJob(j);
    return absl::OkStatus();
  }
  dapq::v1::GetBatchRequest request;
  request.set_job_id(o.job_id);
  dapq::v1::BatchJob job;
  if (grpc::Status s = stub->GetBatch(&context, request, &job); !s.ok()) return FromGrpcStatus(s);
  PrintJob(job);
  return absl::OkStatus();
}

absl::Status Results(const BatchOptions& o) {
  auto stub = dapq::v1::Batch::NewStub(Connect(o.coordinator));
  grpc::ClientContext context;
  AttachClientToken(&context);
  dapq::v1::StreamBatchResultsRequest request;
  request.set_job_id(o.job_id);
  request.set_follow(o.follow);
  std::unique_ptr<std::ofstream> file;
  if (!o.out.empty()) file = std::make_unique<std::ofstream>(o.out);
  auto reader = stub->StreamBatchResults(&context, request);
  dapq::v1::BatchItemResult item;
  while (reader->Read(&item)) {
    std::string line = item.result_json();
    if (item.state() != "succeeded") {
      nlohmann::json j;
      j["index"] = item.index();
      j["state"] = item.state();
      j["error"] = item.error();
      line = j.dump();
    }
    if (file) {
      *file << line << "\n";
    } else {
      std::printf("%s\n", line.c_str());
    }
  }
  return FromGrpcStatus(reader->Finish());
}

absl::Status Cancel(const BatchOptions& o) {
  auto stub = dapq::v1::Batch::NewStub(Connect(o.coordinator));
  grpc::ClientContext context;
  AttachClientToken(&context);
  dapq::v1::CancelBatchRequest request;
  request.set_job_id(o.job_id);
  dapq::v1::BatchJob job;
  if (grpc::Status s = stub->CancelBatch(&context, request, &job); !s.ok()) {
    return FromGrpcStatus(s);
  }
  PrintJob(job);
  return absl::OkStatus();
}

}  // namespace

void AddStatusCommand(CLI::App& app, CommandRunner& runner) {
  auto coordinator = std::make_shared<std::string>("127.0.0.1:50051");
  auto wait_s = std::make_shared<int>(0);
  auto groups = std::make_shared<int>(0);
  CLI::App* cmd = app.add_subcommand(
      "status", "show a cluster's groups, health, load and KV usage; exit 0 once it is ready");
  cmd->add_option("--coordinator", *coordinator, "host:port")->capture_default_str();
  cmd->add_option("--wait_s", *wait_s, "wait up to this long for readiness")->capture_default_str();
  cmd->add_option("--groups", *groups, "ready means at least this many healthy groups");
  runner.Add(cmd, WithAuthToken(cmd, [=]() { return RunStatus(*coordinator, *wait_s, *groups); }));
}

void AddBatchCommand(CLI::App& app, CommandRunner& runner) {
  auto o = std::make_shared<BatchOptions>();
  CLI::App* batch = app.add_subcommand("batch", "durable batch jobs on a cluster");
  batch->require_subcommand(1);
  batch->add_option("--coordinator", o->coordinator, "host:port")->capture_default_str();
  CLI::App* submit = batch->add_subcommand("submit", "submit a JSONL file of prompts");
  submit->add_option("--file", o->file,
                     "local JSONL: one {\"prompt\": ...} or {\"token_ids\": [...]} per line");
  submit->add_option("--server_path", o->server_path, "a JSONL path on the coordinator instead");
  submit->add_option("--name", o->name, "job name");
  submit->add_option("--output_path", o->output_path, "results JSONL written by the coordinator");
  submit->add_option("--max_new_tokens", o->max_new_tokens,
                     absl::StrCat("default for items (0 = ", api::kDefaultMaxNewTokens, ")"));
  submit->add_option("--max_attempts", o->max_attempts, "per item (0 = 3)");
  submit->add_flag("--wait", o->wait, "show progress until the job finishes");
  CLI::App* status = batch->add_subcommand("status", "a job's progress (all jobs without an id)");
  status->add_option("job_id", o->job_id, "job id");
  status->add_flag("--wait", o->wait, "show progress until the job finishes");
  CLI::App* results = batch->add_subcommand("results", "finished items as JSONL");
  results->add_option("job_id", o->job_id, "job id")->required();
  results->add_option("--out", o->out, "write to this file instead of stdout");
  results->add_flag("--follow", o->follow, "wait for the job to finish");
  CLI::App* cancel = batch->add_subcommand("cancel", "cancel a job's pending items");
  cancel->add_option("job_id", o->job_id, "job id")->required();
  runner.Add(submit, WithAuthToken(submit, [o]() { return Submit(*o); }));
  runner.Add(status, WithAuthToken(status, [o]() { return Status(*o); }));
  runner.Add(results, WithAuthToken(results, [o]() { return Results(*o); }));
  runner.Add(cancel, WithAuthToken(cancel, [o]() { return Cancel(*o); }));
}

}  // namespace dapq::cli
