// File: cli/serve_command.cc
// `dapq serve`: starts a local cluster (coordinator + G groups x T worker processes on
// loopback), waits until it is ready, prints where it serves, and runs until SIGINT/SIGTERM or
// until its coordinator dies; then stops every process it started.
#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "cli/command.h"
#include "common/status_macros.h"
#include "launcher/local_cluster.h"

namespace dapq::cli {
namespace {

struct ServeOptions {
  launcher::LocalClusterOptions cluster;
  int ready_timeout_s = 120;
  int max_group_restarts = 5;         // per group; 0 = never restart a group
  int max_coordinator_restarts = 10;  // 0 = a dead coordinator stops the cluster
  std::string cluster_file;           // JSON with the address and every pid, for scripts and tests
  std::string tls = "none";           // "auto": a throwaway CA under <work_dir>/tls
};

void WriteClusterFile(launcher::LocalCluster& c, const std::string& path) {
  std::ofstream out(path + ".tmp");
  out << "{\"address\": \"" << c.address() << "\", \"work_dir\": \"" << c.work_dir()
      << "\", \"coordinator_pid\": " << c.coordinator().pid()
      << ", \"coordinator_metrics_port\": " << c.coordinator_metrics_port()
      << ", \"http_port\": " << c.http_port() << ", \"workers\": [";
  for (int g = 0; g < c.options().groups; ++g) {
    for (int r = 0; r < c.options().tp; ++r) {
      out << (g + r > 0 ? ", " : "") << "{\"group\": \"g" << g << "\", \"rank\": " << r
          << ", \"pid\": " << c.worker(g, r).pid()
          << ", \"metrics_port\": " << c.worker_metrics_port(g, r) << "}";
    }
  }
  out << "]}\n";
  out.close();
  std::rename((path + ".tmp").c_str(), path.c_str());
}

absl::Status RunServe(const ServeOptions& o) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigprocmask(SIG_BLOCK, &set, nullptr);
  const int sigfd = signalfd(-1, &set, SFD_CLOEXEC);

  // Batch jobs may name files under the directory serve runs in, unless told otherwise.
  launcher::LocalClusterOptions cluster_options = o.cluster;
  if (cluster_options.batch_dir.empty()) {
    cluster_options.batch_dir = std::filesystem::current_path().string();
  } else if (cluster_options.batch_dir == "none") {
    cluster_options.batch_dir.clear();
  }
  if (o.tls == "auto") {
    if (cluster_options.tls.enabled()) {
      return absl::InvalidArgumentError("--tls auto makes its own certificates: drop --tls_*");
    }
    if (cluster_options.work_dir.empty()) {
      std::string tmpl = (std::filesystem::temp_directory_path() / "dapq-serve-XXXXXX").string();
      if (mkdtemp(tmpl.data()) == nullptr) return absl::UnavailableError("mkdtemp failed");
      cluster_options.work_dir = tmpl;
    }
    DAPQ_ASSIGN_OR_RETURN(cluster_options.tls,
                          launcher::MakeThrowawayTls(cluster_options.work_dir + "/tls"));
    std::fprintf(stderr,
                 "dapq serve: TLS with a throwaway CA; clients: --tls_ca %s (or --tls_cert %s "
                 "--tls_key %s)\n",
                 cluster_options.tls.ca.c_str(), cluster_options.tls.cert.c_str(),
                 cluster_options.tls.key.c_str());
  } else if (o.tls != "none") {
    return absl::InvalidArgumentError(
        absl::StrCat("--tls=", o.tls, ": auto or none (or give --tls_cert/--tls_key/--tls_ca)"));
  }
  DAPQ_ASSIGN_OR_RETURN(std::unique_ptr<launcher::LocalCluster> cluster,
                        launcher::LocalCluster::Start(cluster_options));
  std::fprintf(stderr, "dapq serve: starting %d group(s) x %d rank(s) of %s; logs in %s/logs\n",
               o.cluster.groups, o.cluster.tp, o.cluster.model.c_str(),
               cluster->work_dir().c_str());
  if (!o.cluster_file.empty()) WriteClusterFile(*cluster, o.cluster_file);
  absl::StatusOr<dapq::v1::ClusterStatusResponse> ready =
      cluster->WaitReady(std::chrono::seconds(o.ready_timeout_s));
  if (!ready.ok()) return ready.status();
  std::printf("dapq serve: ready at %s (%d groups x tp=%d)\n", cluster->address().c_str(),
              o.cluster.groups, o.cluster.tp);
  if (cluster->http_port() > 0) {
    std::printf("dapq serve: OpenAI HTTP API at %s://127.0.0.1:%d/v1\n",
                cluster_options.tls.enabled() ? "https" : "http", cluster->http_port());
  }
  std::fflush(stdout);

  // Wait for a signal. A coordinator that exits is started again on the same port and batch
  // store (the groups re-register with their next heartbeats; the store puts the items it ran
  // back to pending), up to --max_coordinator_restarts. A group that lost a process is stopped
  // and started again (the coordinator routes around it meanwhile), up to --max_group_restarts.
  std::vector<bool> reported(o.cluster.groups, false);  // a group left down
  int coordinator_restarts = 0;
  while (true) {
    pollfd fds[2] = {{sigfd, POLLIN, 0}, {cluster->coordinator().exit_fd(), POLLIN, 0}};
    const int n = poll(fds, 2, 500);
    if (n > 0 && (fds[0].revents & POLLIN)) {
      signalfd_siginfo info;
      (void)!read(sigfd, &info, sizeof(info));
      std::fprintf(stderr, "dapq serve: signal %u, stopping the cluster\n", info.ssi_signo);
      break;
    }
    if (n > 0 && (fds[1].revents & POLLIN)) {
      const std::string dead = cluster->FirstDead();
      if (coordinator_restarts >= o.max_coordinator_restarts) {
        cluster->Stop();
        return absl::UnavailableError(absl::StrCat("dapq serve: ", dead, " exited after ",
                                                   coordinator_restarts,
                                                   " restarts (--max_coordinator_restarts)"));
      }
      ++coordinator_restarts;
      std::fprintf(stderr, "dapq serve: %s exited; restarting it (%d of %d)\n", dead.c_str(),
                   coordinator_restarts, o.max_coordinator_restarts);
      if (absl::Status s = cluster->RestartCoordinator(); !s.ok()) {
        cluster->Stop();
        return absl::UnavailableError(
            absl::StrCat("dapq serve: restarting the coordinator failed: ", s.message()));
      }
      if (!o.cluster_file.empty()) WriteClusterFile(*cluster, o.cluster_file);
      continue;
    }
    for (int g = 0; g < o.cluster.groups; ++g) {
      int dead = -1;
      for (int r = 0; r < o.cluster.tp && dead < 0; ++r) {
        if (!cluster->worker(g, r).running()) dead = r;
      }
      if (dead < 0 || reported[g]) continue;
      std::fprintf(stderr, "dapq serve: group g%d rank %d exited (log %s)\n", g, dead,
                   cluster->worker(g, dead).log_path().c_str());
      if (cluster->group_restarts(g) >= o.max_group_restarts) {
        std::fprintf(stderr, "dapq serve: group g%d restarted %d times; leaving it down\n", g,
                     cluster->group_restarts(g));
        reported[g] = true;
        continue;
      }
      std::fprintf(stderr, "dapq serve: restarting group g%d\n", g);
      if (absl::Status s = cluster->RestartGroup(g); !s.ok()) {
        std::fprintf(stderr, "dapq serve: restarting group g%d failed: %s\n", g,
                     s.ToString().c_str());
        reported[g] = true;
      } else if (!o.cluster_file.empty()) {
        WriteClusterFile(*cluster, o.cluster_file);
      }
    }
  }
  cluster->Stop();
  std::fprintf(stderr, "dapq serve: stopped\n");
  close(sigfd);
  return absl::OkStatus();
}

}  // namespace

void AddServeCommand(CLI::App& app, CommandRunner& runner) {
  auto o = std::make_shared<ServeOptions>();
  CLI::App* cmd = app.add_subcommand(
      "serve", "start a local cluster: a coordinator and worker groups as processes on loopback");
  launcher::LocalClusterOptions& c = o->cluster;
  c.port = 50051;
  c.metrics_port = 9400;
  cmd->add_option("--model", c.model, "model for every group (llama2.c .bin, HF dir, synthetic:)")
      ->required();
  cmd->add_option("--tokenizer", c.tokenizer,
                  "llama2.c tokenizer.bin or a Hugging Face tokenizer.json (default: the model "
                  "directory's tokenizer.json when it has one)");
  cmd->add_option("--chat_template", c.chat_template,
                  "chat prompts: llama3, llama2, mistral, chatml, or a Jinja template file of "
                  "one of these families (default: the model's tokenizer_config.json)");
  cmd->add_option("--tls", o->tls,
                  "auto: TLS everywhere (mutual between the processes) with a throwaway CA made "
                  "under <work_dir>/tls; none: plaintext on loopback, or the --tls_* files")
      ->capture_default_str();
  cmd->add_option("--tls_cert", c.tls.cert, "PEM certificate for every process");
  cmd->add_option("--tls_key", c.tls.key, "PEM private key of --tls_cert");
  cmd->add_option("--tls_ca", c.tls.ca, "PEM CA of the cluster");
  cmd->add_option("--auth_token_file", c.auth_token_file,
                  "require bearer tokens on the public APIs: \"TENANT TOKEN\" lines (clients: "
                  "--auth_token_file with one token, or $DAPQ_AUTH_TOKEN)");
  cmd->add_option("--http_port", c.http_port,
                  "the coordinator's OpenAI-compatible HTTP API on 127.0.0.1 (0 = a free port, "
                  "-1 = off)")
      ->capture_default_str();
  cmd->add_option("--groups", c.groups, "worker groups")->capture_default_str();
  cmd->add_option("--tp", c.tp, "ranks (processes) per group")->capture_default_str();
  cmd->add_option("--port", c.port, "coordinator port on 127.0.0.1 (0 = a free one)")
      ->capture_default_str();
  cmd->add_option("--work_dir", c.work_dir,
                  "logs, rendezvous and batch.db (default: a new /tmp dir)");
  cmd->add_option("--db", c.db, "batch job database (default: <work_dir>/batch.db)");
  cmd->add_option("--batch_dir", c.batch_dir,
                  "the only directory batch jobs may read items from or write results to "
                  "(default: the current directory; \"none\": items inline only)");
  cmd->add_option("--prefill_chunk", c.prefill_chunk, "prompt tokens per forward pass")
      ->capture_default_str();
  cmd->add_option("--max_in_flight", c.max_in_flight, "coordinator admission limit")
      ->capture_default_str();
  cmd->add_option("--ready_timeout_s", o->ready_timeout_s, "seconds to wait for readiness")
      ->capture_default_str();
  cmd->add_option("--cluster_file", o->cluster_file, "write the address and pids here (JSON)");
  cmd->add_option("--max_coordinator_restarts", o->max_coordinator_restarts,
                  "times a coordinator that exited is started again (0 = stop the cluster)");
  cmd->add_option("--max_group_restarts", o->max_group_restarts,
                  "a group that lost a process is restarted up to this many times (0 = never)")
      ->capture_default_str();
  cmd->add_option("--metrics_port", c.metrics_port,
                  "coordinator /metrics port; worker ranks use the next ones (0 = free ports)")
      ->capture_default_str();
  cmd->add_option("--kv_device_kib", c.kv_device_kib, "per-rank KV store device tier (0 = 64 MiB)");
  cmd->add_option("--kv_host_kib", c.kv_host_kib, "per-rank KV store host tier (0 = 256 MiB)");
  cmd->add_option("--kv_disk_mib", c.kv_disk_mib,
                  "per-rank KV store disk tier (0 = none, -1 = 4096 MiB)")
      ->capture_default_str();
  cmd->add_option("--kv_resident_kib", c.kv_resident_kib,
                  "per-rank idle sessions' KV kept in the engine's block pool, whose next turn "
                  "then reads nothing from the store (0 = none, -1 = 64 MiB)")
      ->capture_default_str();
  cmd->add_option("--kv_remote", c.kv_remote,
                  "the KV store's last tier on every rank: rediss://HOST:PORT (Redis over TLS "
                  "with the --tls_* files), redis://HOST:PORT (plaintext, loopback only unless "
                  "--worker_arg=--allow_plaintext) or grpc://HOST:PORT (a worker started with "
                  "--kv_peer_listen)");
  cmd->add_option("--kv_remote_mib", c.kv_remote_mib,
                  "per-rank capacity on the remote tier (0 = 1024 MiB)");
  cmd->add_option("--device", c.device,
                  "where the ranks run: cpu, cuda (rank r of each group on cuda:r) or cuda:N; a "
                  "CUDA worker needs --worker_arg=--kv_pool_blocks --worker_arg=N")
      ->capture_default_str();
  cmd->add_option("--worker_arg", c.worker_args,
                  "an extra dapq-worker flag for every rank, repeatable, e.g. "
                  "--worker_arg=--max_batch --worker_arg=32 (see dapq-worker --help: --max_batch, "
                  "--max_step_tokens, --preemption, --kv_pool_blocks, --kv_dtype, ...)");
  runner.Add(cmd, [o]() { return RunServe(*o); });
}

}  // namespace dapq::cli
