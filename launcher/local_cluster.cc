// File: launcher/local_cluster.cc
// LocalCluster: process layout, readiness, restart and shutdown.
#include "launcher/local_cluster.h"

#include <grpcpp/grpcpp.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <climits>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/auth_token.h"
#include "common/grpc_status.h"
#include "common/status_macros.h"
#include "common/tls.h"
#include "dapq/v1/admin.grpc.pb.h"

namespace dapq::launcher {

absl::StatusOr<int> FreeLoopbackPort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return absl::UnavailableError("socket() failed");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    close(fd);
    return absl::UnavailableError("could not find a free port");
  }
  close(fd);
  return ntohs(addr.sin_port);
}

std::string ProgramDir() {
  char buf[PATH_MAX];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) return ".";
  return std::filesystem::path(std::string(buf, n)).parent_path().string();
}

absl::Status LocalClusterOptions::Validate() const {
  if (model.empty()) return absl::InvalidArgumentError("--model is required");
  if (groups < 1 || groups > 64) {
    return absl::InvalidArgumentError(absl::StrCat("--groups=", groups, " must be in [1, 64]"));
  }
  if (tp < 1 || tp > 64) {
    return absl::InvalidArgumentError(absl::StrCat("--tp=", tp, " must be in [1, 64]"));
  }
  if (port < 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("--port=", port, " must be in [0, 65535]"));
  }
  if (!kv_remote.empty() && !kv_store) {
    return absl::InvalidArgumentError("--kv_remote needs the KV store (kv_store)");
  }
  if (kv_disk_mib < -1 || kv_remote_mib < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--kv_disk_mib=", kv_disk_mib, " must be >= 0, --kv_remote_mib=", kv_remote_mib, " >= 0"));
  }
  if (device != "cpu" && device != "cuda" && !absl::StartsWith(device, "cuda:")) {
    return absl::InvalidArgumentError(
        absl::StrCat("--device='", device, "': cpu, cuda (rank r on cuda:r) or cuda:N"));
  }
  if (device != "cpu") {
    bool capped = false;
    for (const std::string& a : worker_args) {
      capped |= a == "--kv_pool_blocks" || absl::StartsWith(a, "--kv_pool_blocks=");
    }
    if (!capped) {
      return absl::InvalidArgumentError(
          absl::StrCat("--device=", device,
                       ": a GPU worker allocates its KV pool up front; give its size with "
                       "--worker_arg=--kv_pool_blocks --worker_arg=N (blocks of 16 slots per layer "
                       "and KV head)"));
    }
  }
  return absl::OkStatus();
}

std::string LocalClusterOptions::WorkerDevice(int rank) const {
  if (device == "cpu") return "";
  if (device == "cuda") return absl::StrCat("cuda:", rank);
  return device;
}

namespace {

void AddTlsFlags(const TlsFiles& tls, std::vector<std::string>* argv) {
  if (!tls.enabled()) return;
  argv->insert(argv->end(), {"--tls_cert", tls.cert, "--tls_key", tls.key, "--tls_ca", tls.ca});
  if (!tls.server_name.empty()) argv->insert(argv->end(), {"--tls_server_name", tls.server_name});
}

// The token of the first "TENANT TOKEN" line of a coordinator's --auth_token_file.
absl::StatusOr<std::string> FirstServerToken(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("auth_token_file ", path, ": cannot open"));
  std::string line;
  while (std::getline(in, line)) {
    if (const size_t hash = line.find('#'); hash != std::string::npos) line.resize(hash);
    std::istringstream fields(line);
    std::string tenant, token;
    if (fields >> tenant >> token) return token;
  }
  return absl::InvalidArgumentError(absl::StrCat("auth_token_file ", path, ": no token"));
}

}  // namespace

absl::StatusOr<std::unique_ptr<LocalCluster>> LocalCluster::Start(
    const LocalClusterOptions& options) {
  DAPQ_RETURN_IF_ERROR(options.Validate());
  std::unique_ptr<LocalCluster> c(new LocalCluster(options));
  LocalClusterOptions& o = c->options_;
  if (o.bin_dir.empty()) o.bin_dir = ProgramDir();
  if (o.work_dir.empty()) {
    std::string tmpl = (std::filesystem::temp_directory_path() / "dapq-serve-XXXXXX").string();
    if (mkdtemp(tmpl.data()) == nullptr) return absl::UnavailableError("mkdtemp failed");
    o.work_dir = tmpl;
  }
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(o.work_dir) / "logs", ec);
  if (ec) {
    return absl::UnavailableError(
        absl::StrCat("cannot create the work directory ", o.work_dir, ": ", ec.message()));
  }
  if (o.db.empty()) o.db = (std::filesystem::path(o.work_dir) / "batch.db").string();
  DAPQ_RETURN_IF_ERROR(SetClientTls(o.tls));  // the launcher's own calls (WaitReady)
  if (!o.auth_token_file.empty()) {
    // The launcher's own calls (WaitReady) go as the file's first tenant.
    DAPQ_ASSIGN_OR_RETURN(std::string token, FirstServerToken(o.auth_token_file));
    SetClientToken(std::move(token));
  }
  // Ports the caller did not fix are chosen by the processes themselves (bind to port 0) and
  // reported back through their ready pipes: no window in which another process takes them.
  const int ranks = o.groups * o.tp;
  c->coordinator_metrics_port_ = o.metrics_port;
  c->worker_metrics_ports_.assign(ranks, 0);
  if (o.metrics_port > 0) {
    for (int i = 0; i < ranks; ++i) c->worker_metrics_ports_[i] = o.metrics_port + 1 + i;
  }
  DAPQ_RETURN_IF_ERROR(c->StartCoordinator());
  c->workers_.resize(ranks);
  c->group_starts_.assign(o.groups, 0);
  for (int g = 0; g < o.groups; ++g) {
    for (int r = 0; r < o.tp; ++r) DAPQ_RETURN_IF_ERROR(c->StartWorker(g, r));
  }
  return c;
}

absl::Status LocalCluster::StartCoordinator() {
  const LocalClusterOptions& o = options_;
  const int port = address_.empty() ? o.port : std::stoi(address_.substr(address_.rfind(':') + 1));
  std::vector<std::string> argv = {
      (std::filesystem::path(o.bin_dir) / "dapq-coordinator").string()};
  const std::pair<const char*, std::string> flags[] = {
      {"--listen", absl::StrCat("127.0.0.1:", port)},
      {"--db", o.db},
      {"--max_in_flight", std::to_string(o.max_in_flight)},
      {"--heartbeat_ms", std::to_string(o.heartbeat_ms)},
      {"--metrics_listen", absl::StrCat("127.0.0.1:", coordinator_metrics_port_)},
      {"--ready_fd", "3"}};
  for (const auto& [flag, value] : flags) argv.insert(argv.end(), {flag, value});
  if (!o.batch_dir.empty()) argv.insert(argv.end(), {"--batch_dir", o.batch_dir});
  if (!o.auth_token_file.empty()) {
    argv.insert(argv.end(), {"--auth_token_file", o.auth_token_file});
  }
  AddTlsFlags(o.tls, &argv);
  // Worker groups register on an internal port of their own, never on the public one; a
  // restart keeps the port the workers know.
  argv.insert(argv.end(), {"--internal_listen", absl::StrCat("127.0.0.1:", internal_port_)});
  if (o.http_port >= 0) {
    // A restart keeps the port the first start bound.
    argv.insert(argv.end(),
                {"--http_port", std::to_string(http_port_ > 0 ? http_port_ : o.http_port)});
  }
  DAPQ_ASSIGN_OR_RETURN(
      ChildProcess p,
      ChildProcess::Start(argv, o.work_dir + "/logs/coordinator.log", /*ready_pipe=*/true));
  coordinator_ = std::make_unique<ChildProcess>(std::move(p));
  DAPQ_ASSIGN_OR_RETURN(const std::string ready,
                        coordinator_->ReadReadyLine(std::chrono::seconds(60)));
  int bound = 0, metrics = 0, http = 0, internal = 0;
  if (std::sscanf(ready.c_str(), "%d %d %d %d", &bound, &metrics, &http, &internal) != 4) {
    return absl::InternalError(absl::StrCat("coordinator: unexpected ready line '", ready, "'"));
  }
  address_ = absl::StrCat("127.0.0.1:", bound);
  coordinator_metrics_port_ = metrics;
  http_port_ = http;
  internal_port_ = internal;
  return absl::OkStatus();
}

absl::Status LocalCluster::StartWorker(int group, int rank) {
  const LocalClusterOptions& o = options_;
  const std::string group_id = absl::StrCat("g", group);
  std::vector<std::string> argv = {(std::filesystem::path(o.bin_dir) / "dapq-worker").string()};
  const std::pair<const char*, std::string> flags[] = {
      {"--model", o.model},
      {"--tp", std::to_string(o.tp)},
      {"--rank", std::to_string(rank)},
      {"--group_id", group_id},
      // A fresh directory per start of the group: Gloo's keys of a failed attempt stay behind.
      {"--rendezvous_dir",
       absl::StrCat(o.work_dir, "/rendezvous/", group_id, "-", group_starts_[group])},
      {"--coordinator", absl::StrCat("127.0.0.1:", internal_port_)},
      {"--heartbeat_ms", std::to_string(o.heartbeat_ms)},
      {"--prefill_chunk", std::to_string(o.prefill_chunk)},
      {"--max_queue", std::to_string(o.worker_max_queue)},
      {"--metrics_listen", absl::StrCat("127.0.0.1:", worker_metrics_ports_[group * o.tp + rank])},
      {"--ready_fd", "3"}};
  for (const auto& [flag, value] : flags) argv.insert(argv.end(), {flag, value});
  AddTlsFlags(o.tls, &argv);
  if (!o.tokenizer.empty()) argv.insert(argv.end(), {"--tokenizer", o.tokenizer});
  if (!o.chat_template.empty()) argv.insert(argv.end(), {"--chat_template", o.chat_template});
  if (o.kv_store) {
    argv.insert(argv.end(), {"--kv_dir", o.work_dir + "/kv"});
    if (o.kv_device_kib > 0) {
      argv.insert(argv.end(), {"--kv_device_kib", std::to_string(o.kv_device_kib)});
    }
    if (o.kv_host_kib > 0)
      argv.insert(argv.end(), {"--kv_host_kib", std::to_string(o.kv_host_kib)});
    if (o.kv_disk_mib >= 0) {
      argv.insert(argv.end(), {"--kv_disk_mib", std::to_string(o.kv_disk_mib)});
    }
    if (o.kv_resident_kib >= 0) {
      argv.insert(argv.end(), {"--kv_resident_kib", std::to_string(o.kv_resident_kib)});
    }
    if (!o.kv_remote.empty()) argv.insert(argv.end(), {"--kv_remote", o.kv_remote});
    if (o.kv_remote_mib > 0) {
      argv.insert(argv.end(), {"--kv_remote_mib", std::to_string(o.kv_remote_mib)});
    }
  }
  if (const std::string device = o.WorkerDevice(rank); !device.empty()) {
    argv.insert(argv.end(), {"--device", device});
  }
  argv.insert(argv.end(), o.worker_args.begin(), o.worker_args.end());
  DAPQ_ASSIGN_OR_RETURN(
      ChildProcess p,
      ChildProcess::Start(argv, absl::StrCat(o.work_dir, "/logs/", group_id, "-r", rank, ".log"),
                          /*ready_pipe=*/true));
  auto& worker = workers_[group * o.tp + rank];
  worker = std::make_unique<ChildProcess>(std::move(p));
  DAPQ_ASSIGN_OR_RETURN(const std::string ready, worker->ReadReadyLine(std::chrono::seconds(60)));
  worker_metrics_ports_[group * o.tp + rank] = std::atoi(ready.c_str());
  return absl::OkStatus();
}

LocalCluster::~LocalCluster() { Stop(); }

absl::Status LocalCluster::RestartGroup(int group) {
  if (group < 0 || group >= options_.groups) {
    return absl::InvalidArgumentError(absl::StrCat("no group g", group));
  }
  for (int r = 0; r < options_.tp; ++r) worker(group, r).Signal(SIGTERM);
  for (int r = 0; r < options_.tp; ++r) worker(group, r).Stop(std::chrono::seconds(5));
  ++group_starts_[group];
  for (int r = 0; r < options_.tp; ++r) DAPQ_RETURN_IF_ERROR(StartWorker(group, r));
  return absl::OkStatus();
}

absl::Status LocalCluster::RestartCoordinator() {
  if (coordinator_ != nullptr && coordinator_->running()) {
    return absl::FailedPreconditionError("the coordinator is still running");
  }
  coordinator_metrics_port_ = 0;  // the grpc port stays (workers send heartbeats there)
  return StartCoordinator();
}

std::string LocalCluster::FirstDead() {
  if (coordinator_ && !coordinator_->running()) {
    return absl::StrCat("the coordinator (exit ", coordinator_->Wait({}).value_or(-1), ", log ",
                        coordinator_->log_path(), ")");
  }
  for (size_t i = 0; i < workers_.size(); ++i) {
    if (workers_[i] && !workers_[i]->running()) {
      return absl::StrCat("g", i / options_.tp, " rank ", i % options_.tp, " (exit ",
                          workers_[i]->Wait({}).value_or(-1), ", log ", workers_[i]->log_path(),
                          ")");
    }
  }
  return "";
}

void LocalCluster::Stop() {
  for (auto& w : workers_) {
    if (w) w->Signal(SIGTERM);
  }
  for (auto& w : workers_) {
    if (w) w->Stop(std::chrono::seconds(10));
  }
  if (coordinator_) coordinator_->Stop(std::chrono::seconds(10));
}

absl::StatusOr<dapq::v1::ClusterStatusResponse> WaitForCluster(const std::string& address,
                                                               int groups,
                                                               std::chrono::milliseconds timeout) {
  auto stub = dapq::v1::Admin::NewStub(ClientChannel(address));
  const auto end = std::chrono::steady_clock::now() + timeout;
  std::string last = "no answer";
  while (true) {
    grpc::ClientContext context;
    AttachClientToken(&context);
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
    dapq::v1::ClusterStatusResponse status;
    const grpc::Status s = stub->ClusterStatus(&context, {}, &status);
    if (s.ok()) {
      int healthy = 0;
      for (const auto& g : status.groups()) healthy += g.healthy() ? 1 : 0;
      if (status.ready() && healthy >= groups) return status;
      last = absl::StrCat(healthy, " of ", groups, " groups healthy");
    } else if (s.error_code() == grpc::StatusCode::UNAUTHENTICATED ||
               s.error_code() == grpc::StatusCode::PERMISSION_DENIED) {
      return FromGrpcStatus(s);  // waiting will not change the answer
    } else {
      last = s.error_message();
    }
    if (std::chrono::steady_clock::now() >= end) {
      return absl::DeadlineExceededError(absl::StrCat("cluster at ", address, " not ready after ",
                                                      timeout.count(), " ms: ", last));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // polling a remote state
  }
}

absl::StatusOr<dapq::v1::ClusterStatusResponse> LocalCluster::WaitReady(
    std::chrono::milliseconds timeout) {
  const auto end = std::chrono::steady_clock::now() + timeout;
  while (true) {
    if (std::string dead = FirstDead(); !dead.empty()) {
      return absl::FailedPreconditionError(absl::StrCat("cluster: ", dead, " exited"));
    }
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        end - std::chrono::steady_clock::now());
    absl::StatusOr<dapq::v1::ClusterStatusResponse> s =
        WaitForCluster(address_, options_.groups, std::min(left, std::chrono::milliseconds(500)));
    if (s.ok()) return s;
    if (left.count() <= 500) {
      return absl::DeadlineExceededError(
          absl::StrCat(s.status().message(), "; logs in ", options_.work_dir, "/logs"));
    }
  }
}

absl::StatusOr<TlsFiles> MakeThrowawayTls(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return absl::UnavailableError(absl::StrCat("cannot create ", dir, ": ", ec.message()));
  TlsFiles f;
  f.cert = dir + "/cluster.crt";
  f.key = dir + "/cluster.key";
  f.ca = dir + "/ca.crt";
  const std::string ca_key = dir + "/ca.key", csr = dir + "/cluster.csr", ext = dir + "/ext.cnf";
  std::ofstream(ext) << "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
                     << "extendedKeyUsage=serverAuth,clientAuth\n";
  const std::string quiet = " >>'" + dir + "/openssl.log' 2>&1";
  const std::string commands[] = {
      "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 "
      "-subj '/CN=dapq throwaway CA' -keyout '" +
          ca_key + "' -out '" + f.ca + "'",
      "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
      "-subj '/CN=localhost' -keyout '" +
          f.key + "' -out '" + csr + "'",
      "openssl x509 -req -in '" + csr + "' -CA '" + f.ca + "' -CAkey '" + ca_key +
          "' -CAcreateserial -days 30 -extfile '" + ext + "' -out '" + f.cert + "'"};
  for (const std::string& c : commands) {
    if (std::system((c + quiet).c_str()) != 0) {
      return absl::UnavailableError(
          absl::StrCat("openssl failed making a throwaway CA (see ", dir, "/openssl.log)"));
    }
  }
  std::filesystem::permissions(f.key, std::filesystem::perms::owner_read, ec);
  std::filesystem::permissions(ca_key, std::filesystem::perms::owner_read, ec);
  return f;
}

}  // namespace dapq::launcher
