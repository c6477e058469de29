// File: bench/loadgen.cc
// dapq_loadgen: a closed-loop load generator for the public Inference.Generate API.
// N client threads (--streams) each send requests back to back until --requests are done; per
// request it records the client-side time to first token (send -> first message with tokens) and
// the gaps between token messages (time per output token). One untimed warm-up request per path. It
// prints requests/s, output tokens/s, TTFT and TPOT p50/p90/p99 and errors by gRPC code. With
// --direct it then runs the same load against one group's rank 0 (dapq.v1.WorkerGroup.Generate,
// address from Admin.ClusterStatus) and prints the coordinator's added TTFT p50. Usage:
// dapq_loadgen (--coordinator host:port | --start_cluster --model M [--tokenizer T]
//          [--groups G] [--tp T]) [--streams 4] [--requests 64] [--max_new_tokens 64]
//          [--prompt text | --prompt_tokens K [--shared_prefix_tokens P]]
//          [--method dapq --budget 16] [--direct]
//          [--sessions [--turn_tokens 16]] [--kv_resident_kib K]
// With --sessions each stream is one session (its prompt, then turns of --turn_tokens) and the
// figures count the later turns only; --kv_resident_kib sets how much of them the workers keep in
// their block pools between turns (0: every turn restores its session from the KV store).
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "CLI/CLI.hpp"
#include "api/status_names.h"
#include "dapq/v1/admin.grpc.pb.h"
#include "dapq/v1/inference.grpc.pb.h"
#include "dapq/v1/worker.grpc.pb.h"
#include "launcher/local_cluster.h"

namespace dapq::bench {
namespace {

using Clock = std::chrono::steady_clock;

struct Options {
  std::string coordinator;
  bool start_cluster = false;
  launcher::LocalClusterOptions cluster;
  int streams = 4;
  int requests = 64;
  // Sweep: each stream count in turn against the same cluster, with requests_per_stream x
  // streams requests each; a summary compares every row with the first.
  std::vector<int> sweep_streams;
  int requests_per_stream = 2;
  int max_new_tokens = 64;
  std::string prompt;
  int prompt_tokens = 100;
  // The first shared_prefix_tokens of every request's token prompt are the same (a document
  // many questions share, for the workers' prefix cache); the rest differ per request.
  int shared_prefix_tokens = 0;
  int vocab = 512;
  std::string method;
  int budget = 0;
  bool direct = false;
  int timeout_s = 120;
  // Each stream is one session: its first request sends the prompt, every later one the next
  // turn of turn_tokens new token ids; TTFT and TPOT count the later turns only (what a turn of
  // a session that already holds its context costs).
  bool sessions = false;
  int turn_tokens = 16;
};

struct Result {
  std::string label;
  double wall_s = 0;
  int ok = 0;
  int64_t output_tokens = 0;
  std::vector<double> ttft_ms, tpot_ms;
  std::map<std::string, int> errors;  // gRPC code name -> count
};

// The next token id of the seeded generator with state `x`, in [3, vocab).
int NextId(uint64_t& x, int vocab) {
  x = x * 6364136223846793005ull + 1442695040888963407ull;
  return 3 + static_cast<int>((x >> 33) % (vocab - 3));
}

// Request `index`'s prompt: seeded, so every run sends the same prompts; past the shared prefix
// each request's tokens are its own (the workers' prefix cache reuses only what is shared).
dapq::v1::GenerateRequest MakeRequest(const Options& o, uint64_t index, bool next_turn = false) {
  dapq::v1::GenerateRequest r;
  if (next_turn) {  // a session's later turn: turn_tokens of its own
    uint64_t x = (index + 1) * 0xD1B54A32D192ED03ull;
    for (int i = 0; i < o.turn_tokens; ++i) r.mutable_token_ids()->add_ids(NextId(x, o.vocab));
  } else if (!o.prompt.empty()) {
    r.set_text(o.prompt);
  } else {
    uint64_t x = 0x9E3779B97F4A7C15ull;
    for (int i = 0; i < o.prompt_tokens; ++i) {
      if (i == o.shared_prefix_tokens) x ^= (index + 1) * 0xD1B54A32D192ED03ull;
      r.mutable_token_ids()->add_ids(NextId(x, o.vocab));
    }
  }
  r.set_max_new_tokens(o.max_new_tokens);
  r.set_ignore_stop_tokens(true);  // every request produces max_new_tokens
  if (!o.method.empty()) {
    r.mutable_compression()->set_method(o.method);
    if (o.budget > 0) r.mutable_compression()->set_budget_tokens(o.budget);
  }
  return r;
}

// Requests made by this process so far (the next request's prompt index), and streams started
// (the next stream's session id).
std::atomic<uint64_t> prompts_sent{0};
std::atomic<uint64_t> streams_started{0};

// Runs the load through `stub` (Inference or WorkerGroup: the same Generate signature).
template <typename Stub>
Result RunLoad(const std::string& label, Stub& stub, const Options& o) {
  {  // one untimed warm-up request: connects the channel before the clock starts
    const dapq::v1::GenerateRequest request = MakeRequest(o, UINT64_MAX);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(o.timeout_s));
    auto reader = stub.Generate(&ctx, request);
    dapq::v1::GenerateResponse response;
    while (reader->Read(&response)) {
    }
    reader->Finish();
  }
  Result total;
  total.label = label;
  std::mutex mu;
  std::atomic<int> next{0};
  const auto start = Clock::now();
  std::vector<std::thread> threads;
  for (int t = 0; t < o.streams; ++t) {
    threads.emplace_back([&] {
      Result local;
      const std::string session = "loadgen-" + std::to_string(streams_started.fetch_add(1));
      int turn = 0;
      for (int index = next.fetch_add(1); index < o.requests; index = next.fetch_add(1), ++turn) {
        // Prompts differ across the runs of a sweep too.
        dapq::v1::GenerateRequest request =
            MakeRequest(o, prompts_sent.fetch_add(1), o.sessions && turn > 0);
        if (o.sessions) request.set_session_id(session);
        const bool timed = !o.sessions || turn > 0;
        grpc::ClientContext ctx;
        ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(o.timeout_s));
        const auto sent = Clock::now();
        auto reader = stub.Generate(&ctx, request);
        dapq::v1::GenerateResponse response;
        bool first = true;
        Clock::time_point last;
        std::vector<double> gaps;
        int64_t tokens = 0;
        double ttft = 0;
        while (reader->Read(&response)) {
          if (response.token_ids_size() == 0) continue;
          const auto now = Clock::now();
          if (first) {
            ttft = std::chrono::duration<double, std::milli>(now - sent).count();
            first = false;
          } else {
            // A message with k tokens covers k output tokens: spread the gap over them.
            const double gap = std::chrono::duration<double, std::milli>(now - last).count();
            for (int k = 0; k < response.token_ids_size(); ++k) {
              gaps.push_back(gap / response.token_ids_size());
            }
          }
          last = now;
          tokens += response.token_ids_size();
        }
        const grpc::Status status = reader->Finish();
        if (!status.ok()) {
          ++local.errors[std::string(api::StatusCodeName(status.error_code()))];
          continue;
        }
        ++local.ok;
        local.output_tokens += tokens;
        if (!timed) continue;
        if (!first) local.ttft_ms.push_back(ttft);
        local.tpot_ms.insert(local.tpot_ms.end(), gaps.begin(), gaps.end());
      }
      std::lock_guard<std::mutex> lock(mu);
      total.ok += local.ok;
      total.output_tokens += local.output_tokens;
      total.ttft_ms.insert(total.ttft_ms.end(), local.ttft_ms.begin(), local.ttft_ms.end());
      total.tpot_ms.insert(total.tpot_ms.end(), local.tpot_ms.begin(), local.tpot_ms.end());
      for (const auto& [code, n] : local.errors) total.errors[code] += n;
    });
  }
  for (auto& t : threads) t.join();
  total.wall_s = std::chrono::duration<double>(Clock::now() - start).count();
  return total;
}

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t i = std::min(v.size() - 1, static_cast<size_t>(p / 100.0 * v.size()));
  return v[i];
}

std::string Errors(const Result& r) {
  if (r.errors.empty()) return "none";
  std::string s;
  for (const auto& [code, n] : r.errors) {
    if (!s.empty()) s += ", ";
    s += code + " " + std::to_string(n);
  }
  return s;
}

void PrintHeader() {
  std::printf(
      "| path | streams | ok/requests | req/s | out tok/s | TTFT p50 | TTFT p90 | TTFT p99 | "
      "TPOT p50 | TPOT p90 | TPOT p99 | errors |\n"
      "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n");
}

void PrintRow(const Result& r, const Options& o) {
  std::printf(
      "| %s | %d | %d/%d | %.2f | %.1f | %.1f ms | %.1f ms | %.1f ms | %.2f ms | %.2f ms | "
      "%.2f ms | %s |\n",
      r.label.c_str(), o.streams, r.ok, o.requests, r.ok / r.wall_s, r.output_tokens / r.wall_s,
      Percentile(r.ttft_ms, 50), Percentile(r.ttft_ms, 90), Percentile(r.ttft_ms, 99),
      Percentile(r.tpot_ms, 50), Percentile(r.tpot_ms, 90), Percentile(r.tpot_ms, 99),
      Errors(r).c_str());
  std::fflush(stdout);
}

int Run(Options& o) {
  std::unique_ptr<launcher::LocalCluster> cluster;
  if (o.start_cluster) {
    if (o.cluster.bin_dir.empty()) o.cluster.bin_dir = launcher::ProgramDir() + "/../cli";
    auto started = launcher::LocalCluster::Start(o.cluster);
    if (!started.ok()) {
      std::fprintf(stderr, "dapq_loadgen: %s\n", started.status().ToString().c_str());
      return 1;
    }
    cluster = std::move(*started);
    auto ready = cluster->WaitReady(std::chrono::seconds(120));
    if (!ready.ok()) {
      std::fprintf(stderr, "dapq_loadgen: %s\n", ready.status().ToString().c_str());
      return 1;
    }
    o.coordinator = cluster->address();
    std::fprintf(stderr, "dapq_loadgen: started %d group(s) x tp=%d at %s\n", o.cluster.groups,
                 o.cluster.tp, o.coordinator.c_str());
  } else if (o.coordinator.empty()) {
    std::fprintf(stderr, "dapq_loadgen: give --coordinator or --start_cluster\n");
    return 2;
  }
  auto status = launcher::WaitForCluster(o.coordinator, 0, std::chrono::seconds(60));
  if (!status.ok()) {
    std::fprintf(stderr, "dapq_loadgen: %s\n", status.status().ToString().c_str());
    return 1;
  }
  std::fprintf(stderr,
               "dapq_loadgen: %d streams, %d requests, %d new tokens, prompt %s, compression %s "
               "budget %d\n",
               o.streams, o.requests, o.max_new_tokens,
               o.prompt.empty() ? (std::to_string(o.prompt_tokens) + " token ids").c_str() : "text",
               o.method.empty() ? "full" : o.method.c_str(), o.budget);

  auto channel = grpc::CreateChannel(o.coordinator, grpc::InsecureChannelCredentials());
  auto inference = dapq::v1::Inference::NewStub(channel);
  PrintHeader();
  if (!o.sweep_streams.empty()) {
    std::vector<std::pair<Options, Result>> rows;
    for (int streams : o.sweep_streams) {
      Options run = o;
      run.streams = streams;
      run.requests = streams * o.requests_per_stream;
      rows.emplace_back(run, RunLoad("coordinator", *inference, run));
      PrintRow(rows.back().second, run);
    }
    const Result& base = rows.front().second;
    const double base_tps = base.output_tokens / base.wall_s;
    std::printf(
        "\n| streams | out tok/s vs %d streams | TPOT p99 vs %d streams |\n|---:|---:|---:|\n",
        rows.front().first.streams, rows.front().first.streams);
    bool errors = false;
    for (const auto& [run, r] : rows) {
      std::printf("| %d | %.2fx | %.2fx |\n", run.streams, (r.output_tokens / r.wall_s) / base_tps,
                  Percentile(r.tpot_ms, 99) / std::max(Percentile(base.tpot_ms, 99), 1e-9));
      errors = errors || !r.errors.empty();
    }
    return errors ? 3 : 0;
  }
  const Result via = RunLoad("coordinator", *inference, o);
  PrintRow(via, o);
  if (o.direct) {
    std::string address;
    for (const auto& g : status->groups()) {
      if (g.healthy() && !g.address().empty()) {
        address = g.address();
        break;
      }
    }
    if (address.empty()) {
      std::fprintf(stderr, "dapq_loadgen: no healthy group address in ClusterStatus\n");
      return 1;
    }
    auto worker = dapq::v1::WorkerGroup::NewStub(
        grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
    const Result direct = RunLoad("direct " + address, *worker, o);
    PrintRow(direct, o);
    const double overhead = Percentile(via.ttft_ms, 50) - Percentile(direct.ttft_ms, 50);
    std::printf("\ncoordinator overhead (TTFT p50, coordinator - direct): %.2f ms\n", overhead);
  }
  return (via.errors.empty()) ? 0 : 3;
}

}  // namespace
}  // namespace dapq::bench

int main(int argc, char** argv) {
  dapq::bench::Options o;
  CLI::App app{"dapq_loadgen: closed-loop load on Inference.Generate (TTFT, TPOT, throughput)"};
  app.add_option("--coordinator", o.coordinator, "coordinator host:port");
  app.add_flag("--start_cluster", o.start_cluster, "start a LocalCluster (needs --model)");
  app.add_option("--model", o.cluster.model, "model for --start_cluster");
  app.add_option("--tokenizer", o.cluster.tokenizer, "tokenizer for --start_cluster");
  app.add_option("--groups", o.cluster.groups, "worker groups (--start_cluster)")
      ->capture_default_str();
  app.add_option("--tp", o.cluster.tp, "ranks per group (--start_cluster)")->capture_default_str();
  app.add_option("--bin_dir", o.cluster.bin_dir,
                 "dir with dapq-coordinator/dapq-worker (default <this dir>/../cli)");
  app.add_option("--streams", o.streams, "concurrent client streams (threads)")
      ->capture_default_str();
  app.add_option("--requests", o.requests, "total requests")->capture_default_str();
  app.add_option("--sweep_streams", o.sweep_streams,
                 "run each stream count in turn (e.g. 1 32) and compare with the first");
  app.add_option("--requests_per_stream", o.requests_per_stream,
                 "with --sweep_streams: requests per stream")
      ->capture_default_str();
  app.add_option(
      "--worker_arg", o.cluster.worker_args,
      "extra dapq-worker flag for --start_cluster (repeat: --worker_arg=--max_step_tokens "
      "--worker_arg=64)");
  app.add_option("--max_new_tokens", o.max_new_tokens, "new tokens per request")
      ->capture_default_str();
  app.add_option("--prompt", o.prompt, "text prompt (instead of --prompt_tokens)");
  app.add_option("--prompt_tokens", o.prompt_tokens,
                 "seeded random prompt token ids, different for every request")
      ->capture_default_str();
  app.add_option("--shared_prefix_tokens", o.shared_prefix_tokens,
                 "the first N prompt tokens are the same in every request (prefix cache)")
      ->capture_default_str();
  app.add_option("--vocab", o.vocab, "token ids are drawn from [3, vocab)")->capture_default_str();
  app.add_option("--method", o.method, "compression method (dapq, snapkv, ...; default full)");
  app.add_option("--budget", o.budget, "compression budget in tokens")->capture_default_str();
  app.add_flag("--direct", o.direct,
               "also load one group's rank 0 directly (coordinator overhead)");
  app.add_option("--timeout_s", o.timeout_s, "per-request deadline")->capture_default_str();
  app.add_flag("--sessions", o.sessions,
               "each stream is one session: the prompt first, then turns of --turn_tokens; "
               "TTFT/TPOT count the later turns only");
  app.add_option("--turn_tokens", o.turn_tokens, "new token ids per later session turn")
      ->capture_default_str();
  app.add_option("--kv_resident_kib", o.cluster.kv_resident_kib,
                 "--start_cluster: idle sessions' KV each rank keeps in its block pool (-1 = the "
                 "worker's default, 0 = every turn restores from the store)")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  if (o.sessions && o.turn_tokens < 1) {
    std::fprintf(stderr, "dapq_loadgen: --turn_tokens must be >= 1\n");
    return 2;
  }
  if (o.streams < 1 || o.requests < 1) {
    std::fprintf(stderr, "dapq_loadgen: --streams and --requests must be >= 1\n");
    return 2;
  }
  if (o.shared_prefix_tokens < 0 || o.shared_prefix_tokens > o.prompt_tokens) {
    std::fprintf(stderr,
                 "dapq_loadgen: --shared_prefix_tokens=%d must be in [0, --prompt_tokens=%d]\n",
                 o.shared_prefix_tokens, o.prompt_tokens);
    return 2;
  }
  return dapq::bench::Run(o);
}
