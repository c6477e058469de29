// File: launcher/local_cluster.h
// A DapQ Serve cluster on this machine: one dapq-coordinator and G worker groups of T
// dapq-worker processes each (Gloo over loopback), all children of this process, with their
// logs and the batch database under one work directory. Used by `dapq serve`, the demo and the
// multi-process tests (which kill and restart its processes).
// Thread-compatible.
#ifndef DAPQ_LAUNCHER_LOCAL_CLUSTER_H_
#define DAPQ_LAUNCHER_LOCAL_CLUSTER_H_

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/tls.h"
#include "dapq/v1/admin.pb.h"
#include "launcher/child_process.h"

namespace dapq::launcher {

struct LocalClusterOptions {
  std::string bin_dir;  // holds dapq-coordinator and dapq-worker ("" = next to this program)
  std::string model, tokenizer;
  std::string chat_template;  // the workers' --chat_template ("" = the model's own)
  int groups = 1, tp = 2;
  int port = 0;        // the coordinator's port on 127.0.0.1 (0 = a free one)
  int http_port = -1;  // its OpenAI HTTP API (-1 = off, 0 = a free port)
  // The coordinator's --auth_token_file ("TENANT TOKEN" lines; "" = no authentication). The
  // cluster's own calls (WaitReady) go as the first tenant.
  std::string auth_token_file;
  // TLS for every process (mutual on the internal ports); empty = plaintext on loopback.
  // `dapq serve --tls auto` fills it with MakeThrowawayTls.
  TlsFiles tls;
  std::string work_dir;  // logs, rendezvous, batch.db ("" = a new directory under /tmp)
  std::string db;        // batch store ("" = work_dir/batch.db)
  // The coordinator's --batch_dir: the only directory batch jobs may name files in ("" = none:
  // items inline only).
  std::string batch_dir;
  int prefill_chunk = 1024;
  int max_in_flight = 64;
  int heartbeat_ms = 200;
  int worker_max_queue = 16;
  // /metrics: the coordinator on metrics_port, worker ranks on the following ports in order
  // g0r0, g0r1, g1r0, ... (0 = free ports chosen at start).
  int metrics_port = 0;
  // Sessions in each rank's tiered KV store (disk tier under work_dir/kv); capacities of the
  // memory tiers in KiB (0 = the worker's defaults).
  bool kv_store = true;
  int kv_device_kib = 0, kv_host_kib = 0;
  // Disk tier capacity in MiB (-1 = the worker's default, 0 = no disk tier).
  int kv_disk_mib = -1;
  // Idle sessions' KV each rank keeps in its block pool, in KiB (-1 = the worker's default,
  // 0 = none: every turn restores its session from the store).
  int kv_resident_kib = -1;
  // The store's last tier on every rank: "redis://host:port" or "grpc://host:port" (a KvPeer,
  // e.g. another worker's --kv_peer_listen); "" = none. kv_remote_mib: per-rank capacity there
  // (0 = the worker's default).
  std::string kv_remote;
  int kv_remote_mib = 0;
  std::vector<std::string> worker_args;  // extra dapq-worker flags
  // Where the ranks run: "cpu"; "cuda" (rank r of every group on cuda:r, so a group's ranks
  // have a device each and groups share them); or "cuda:N" (every rank on device N). The
  // workers check the device; a CUDA worker needs a KV pool cap
  // (--worker_arg=--kv_pool_blocks).
  std::string device = "cpu";
  // The flag value rank `rank` is started with ("" for the CPU, whose flag is the default).
  std::string WorkerDevice(int rank) const;
  absl::Status Validate() const;
};

class LocalCluster {
 public:
  // Starts the coordinator and every worker; returns once each process reported the ports it
  // bound (the group forming and registering is WaitReady's).
  static absl::StatusOr<std::unique_ptr<LocalCluster>> Start(const LocalClusterOptions& options);
  ~LocalCluster();  // Stop()

  const std::string& address() const { return address_; }
  const std::string& work_dir() const { return options_.work_dir; }
  const LocalClusterOptions& options() const { return options_; }
  // Waits until every group is registered and healthy (DeadlineExceeded naming the missing
  // groups and the logs to read otherwise; FailedPrecondition when a process exited).
  absl::StatusOr<dapq::v1::ClusterStatusResponse> WaitReady(std::chrono::milliseconds timeout);
  ChildProcess& coordinator() { return *coordinator_; }
  ChildProcess& worker(int group, int rank) { return *workers_[group * options_.tp + rank]; }
  int coordinator_metrics_port() const { return coordinator_metrics_port_; }
  int http_port() const { return http_port_; }          // 0 when the HTTP API is off
  int internal_port() const { return internal_port_; }  // the coordinator's Registry
  int worker_metrics_port(int group, int rank) const {
    return worker_metrics_ports_[group * options_.tp + rank];
  }
  // Starts the coordinator again (after it died or was killed), with the same port and db (a
  // new metrics port).
  absl::Status RestartCoordinator();
  // Stops what is left of a group and starts all its ranks again (a new Gloo rendezvous); the
  // group re-registers with its heartbeats.
  absl::Status RestartGroup(int group);
  // Times a group was started again.
  int group_restarts(int group) const { return group_starts_[group]; }
  // The first process found dead ("" when all run), e.g. "g1 rank 0 (exit 1)".
  std::string FirstDead();
  // SIGTERM every process (workers first), SIGKILL what is left after the grace period.
  void Stop();

 private:
  explicit LocalCluster(LocalClusterOptions options) : options_(std::move(options)) {}
  absl::Status StartCoordinator();
  absl::Status StartWorker(int group, int rank);

  LocalClusterOptions options_;
  std::string address_;
  int coordinator_metrics_port_ = 0;
  int http_port_ = 0;
  int internal_port_ = 0;  // the coordinator's Registry (0 until it first started)
  std::vector<int> worker_metrics_ports_;
  std::unique_ptr<ChildProcess> coordinator_;
  std::vector<std::unique_ptr<ChildProcess>> workers_;
  std::vector<int> group_starts_;  // per group: 0 at the first start
};

// A port on 127.0.0.1 that was free a moment ago (bind to port 0, read it, close).
absl::StatusOr<int> FreeLoopbackPort();
// The directory of the running program (/proc/self/exe).
std::string ProgramDir();
// Polls Admin.ClusterStatus at `address` until it is ready with `groups` healthy groups (0 =
// any) or `timeout` passes.
// A throwaway CA and one certificate it signed (SANs localhost and 127.0.0.1, for server and
// client use) under `dir`, made with the openssl command: enough for a cluster on this machine.
absl::StatusOr<TlsFiles> MakeThrowawayTls(const std::string& dir);

absl::StatusOr<dapq::v1::ClusterStatusResponse> WaitForCluster(const std::string& address,
                                                               int groups,
                                                               std::chrono::milliseconds timeout);

}  // namespace dapq::launcher

#endif  // DAPQ_LAUNCHER_LOCAL_CLUSTER_H_
