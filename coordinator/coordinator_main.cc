// File: coordinator/coordinator_main.cc
// dapq-coordinator: serves dapq.v1.Inference, Batch and Admin to clients and dapq.v1.Registry
// to worker groups (on --listen, or on --internal_listen); batch jobs are kept in SQLite (--db)
// or in PostgreSQL shared with other coordinators (--batch_store) and resumed after a restart.
// With --etcd it routes to the groups registered in etcd and registers itself there, so any
// number of coordinators serve the same groups. SIGINT/SIGTERM stop it cleanly.
#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <optional>
#include <set>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "cluster/etcd_client.h"
#include "cluster/etcd_registration.h"
#include "cluster/etcd_url.h"
#include "cluster/etcd_watch.h"
#include "common/metrics.h"
#include "common/ready_fd.h"
#include "common/status_macros.h"
#include "common/termination.h"
#include "common/tls.h"
#include "common/tls_flags.h"
#include "coordinator/admin_service.h"
#include "coordinator/batch_runner.h"
#include "coordinator/batch_service.h"
#include "coordinator/coordinator_metrics.h"
#include "coordinator/http_server.h"
#include "coordinator/inference_service.h"
#include "coordinator/tenant_auth.h"

namespace dapq::coordinator {
namespace {

struct CoordinatorFlags {
  std::string listen = "127.0.0.1:50051", db = "dapq-batch.db";
  std::string batch_store;         // a postgres:// URL or an SQLite path; "" = --db
  std::string etcd;                // etcd://...: group membership, coordinator registration
  std::string advertise_internal;  // where workers reach the Registry ("" = the bound address)
  std::string coordinator_id;      // its etcd key ("" = <hostname>-<pid>)
  int etcd_ttl_s = 5;
  std::string batch_dir;  // "" = clients may name no server-side files
  std::string metrics_listen = "127.0.0.1:9400";
  int ready_fd = -1;
  int max_in_flight = 64, heartbeat_ms = 500, items_per_group = 2;
  int http_port = -1;              // the OpenAI HTTP API: -1 = off, 0 = any free port
  std::string internal_listen;     // Registry (worker heartbeats) only here; "" = on --listen
  std::string auth_token_file;     // "TENANT TOKEN" lines; "" = no authentication
  TlsFiles tls;                    // TLS on every listener and towards the worker groups
  int max_streams_per_tenant = 0;  // 0 = no per-tenant limit
  int max_request_s = 600;         // server-side deadline of every request and batch item
  bool allow_plaintext = false;    // plaintext on a non-loopback address
};

absl::Status RunCoordinator(const CoordinatorFlags& f) {
  if (f.max_in_flight < 1) return absl::InvalidArgumentError("--max_in_flight must be >= 1");
  if (f.heartbeat_ms < 10) return absl::InvalidArgumentError("--heartbeat_ms must be >= 10");
  if (f.items_per_group < 1) return absl::InvalidArgumentError("--items_per_group must be >= 1");
  if (f.max_request_s < 0) return absl::InvalidArgumentError("--max_request_s must be >= 0");
  DAPQ_ASSIGN_OR_RETURN(std::unique_ptr<BatchStore> store,
                        BatchStore::Open(f.batch_store.empty() ? f.db : f.batch_store));
  if (store->recovered_items() > 0) {
    std::printf("dapq-coordinator: resuming %d batch items interrupted by the last stop\n",
                store->recovered_items());
  }
  std::optional<cluster::EtcdUrl> etcd_url;
  std::shared_ptr<cluster::EtcdClient> etcd;
  if (!f.etcd.empty()) {
    DAPQ_ASSIGN_OR_RETURN(etcd_url, cluster::ParseEtcdUrl(f.etcd));
    if (f.etcd_ttl_s < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("--etcd_ttl_s=", f.etcd_ttl_s, " must be >= 1"));
    }
    DAPQ_ASSIGN_OR_RETURN(etcd, cluster::EtcdClient::FromUrl(f.etcd));
  }
  GroupRegistryOptions registry_options;
  registry_options.heartbeat_interval = std::chrono::milliseconds(f.heartbeat_ms);
  // Several coordinators (etcd) send a session to the same group without talking to each other.
  registry_options.deterministic_sessions = etcd != nullptr;
  GroupRegistry registry(registry_options);
  RequestRouterOptions router_options;
  router_options.max_in_flight = f.max_in_flight;
  router_options.max_request_time = std::chrono::seconds(f.max_request_s);
  RequestRouter router(&registry, router_options);
  BatchRunnerOptions runner_options;
  runner_options.items_per_group = f.items_per_group;
  BatchRunner runner(store.get(), &router, &registry, runner_options);

  auto metrics_registry = std::make_shared<prometheus::Registry>();
  AddBuildInfo(*metrics_registry);
  CoordinatorMetrics metrics(*metrics_registry);
  // With etcd, the groups holding a lease under <prefix>/groups/ are the routable ones (a
  // group whose processes died disappears when its lease expires); while etcd is unreachable
  // the last membership stays and serving goes on.
  std::atomic<int> etcd_groups{0};
  std::unique_ptr<cluster::PrefixWatcher> group_watch;
  if (etcd) {
    const std::string groups_prefix = absl::StrCat(etcd_url->prefix, "/groups/");
    DAPQ_ASSIGN_OR_RETURN(group_watch, cluster::PrefixWatcher::Start(
                                           etcd, groups_prefix,
                                           [&registry, &etcd_groups,
                                            groups_prefix](const cluster::PrefixWatcher::Map& map) {
                                             std::set<std::string> ids;
                                             for (const auto& [key, value] : map)
                                               ids.insert(key.substr(groups_prefix.size()));
                                             etcd_groups.store(static_cast<int>(ids.size()));
                                             registry.SetMembership(ids);
                                           }));
  }
  CoordinatorCounters counters;
  counters.item_failures = &runner.item_failures();
  counters.claim_errors = &runner.claim_errors();
  counters.commit_errors = &runner.commit_errors();
  if (group_watch) {
    counters.etcd_up = [w = group_watch.get()] { return w->healthy(); };
    counters.etcd_groups = [&etcd_groups] { return etcd_groups.load(); };
  }
  auto collector =
      std::make_shared<CoordinatorCollector>(&router, &registry, store.get(), counters);
  DAPQ_ASSIGN_OR_RETURN(std::unique_ptr<MetricsServer> metrics_server,
                        MetricsServer::Start(f.metrics_listen));
  metrics_server->Register(metrics_registry);
  metrics_server->Register(collector);

  std::unique_ptr<TenantAuth> auth;
  if (!f.auth_token_file.empty()) {
    DAPQ_ASSIGN_OR_RETURN(auth, TenantAuth::Load(f.auth_token_file));
    std::printf("dapq-coordinator: bearer tokens of %d tenant(s) required on the public APIs\n",
                auth->tenants());
  } else {
    std::printf("dapq-coordinator: no --auth_token_file: the public APIs take every caller\n");
  }
  TenantLimiter limiter(f.max_streams_per_tenant);
  InferenceService inference(&router, &metrics, auth.get(), &limiter);
  RegistryService registry_service(&registry, registry_options.heartbeat_interval);
  DAPQ_ASSIGN_OR_RETURN(BatchPaths batch_paths, BatchPaths::Create(f.batch_dir));
  BatchService batch(store.get(), &runner, &registry, std::move(batch_paths), auth.get());
  AdminService admin(&registry, &router, store.get(), auth.get());
  grpc::ServerBuilder builder;
  int port = 0;
  DAPQ_ASSIGN_OR_RETURN(
      auto public_creds,
      MakeServerCredentials(f.tls, /*require_client_cert=*/false, f.listen, f.allow_plaintext));
  // The coordinator calls worker groups with its own certificate (they require one).
  DAPQ_RETURN_IF_ERROR(SetClientTls(f.tls));
  builder.AddListeningPort(f.listen, public_creds, &port);
  // Larger than the 4 MiB request limit so oversized requests get a clear INVALID_ARGUMENT.
  builder.SetMaxReceiveMessageSize(64 << 20);
  builder.RegisterService(&inference);
  builder.RegisterService(&batch);
  builder.RegisterService(&admin);
  if (f.internal_listen.empty()) builder.RegisterService(&registry_service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    return absl::UnavailableError(absl::StrCat("could not listen on --listen=", f.listen));
  }
  // The internal surface (worker groups' heartbeats) on a listener of its own, which the
  // public network need not reach.
  std::unique_ptr<grpc::Server> internal;
  int internal_port = 0;
  if (!f.internal_listen.empty()) {
    grpc::ServerBuilder internal_builder;
    // Mutual TLS: only peers whose certificate the cluster CA signed may register a group.
    DAPQ_ASSIGN_OR_RETURN(auto internal_creds,
                          MakeServerCredentials(f.tls, /*require_client_cert=*/true,
                                                f.internal_listen, f.allow_plaintext));
    internal_builder.AddListeningPort(f.internal_listen, internal_creds, &internal_port);
    internal_builder.RegisterService(&registry_service);
    internal = internal_builder.BuildAndStart();
    if (internal == nullptr || internal_port == 0) {
      return absl::UnavailableError(
          absl::StrCat("could not listen on --internal_listen=", f.internal_listen));
    }
  }
  const std::string host = f.listen.substr(0, f.listen.rfind(':'));
  std::unique_ptr<HttpServer> http;
  if (f.http_port >= 0) {
    HttpServerOptions http_options;
    http_options.host = host;
    http_options.port = f.http_port;
    http_options.max_threads = f.max_in_flight + 8;
    http_options.tls_cert = f.tls.cert;
    http_options.tls_key = f.tls.key;
    http_options.allow_plaintext = f.allow_plaintext;
    DAPQ_ASSIGN_OR_RETURN(
        http, HttpServer::Start(http_options, &router, &registry, &metrics, auth.get(), &limiter));
  }
  runner.Start();
  ReportReady(f.ready_fd, absl::StrCat(port, " ", metrics_server->port(), " ",
                                       http ? http->port() : 0, " ", internal_port));
  std::printf("dapq-coordinator: serving on %s:%d (batch store %s, metrics on port %d)\n",
              host.c_str(), port, store->path().c_str(), metrics_server->port());
  if (http) {
    std::printf("dapq-coordinator: OpenAI HTTP API on http://%s:%d/v1\n", host.c_str(),
                http->port());
  }
  std::fflush(stdout);
  if (internal) {
    std::printf("dapq-coordinator: worker groups register on the internal port %d\n",
                internal_port);
  }
  // With etcd: this coordinator's Registry address under a lease, so that workers find every
  // coordinator (and stop heart-beating a dead one once its lease expires).
  std::unique_ptr<cluster::LeasedKey> registration;
  if (etcd) {
    std::string advertised = f.advertise_internal;
    if (advertised.empty()) {
      advertised = absl::StrCat(host, ":", internal ? internal_port : port);
    }
    std::string id = f.coordinator_id;
    if (id.empty()) {
      char hostname[256] = {0};
      gethostname(hostname, sizeof(hostname) - 1);
      id = absl::StrCat(hostname, "-", getpid());
    }
    DAPQ_ASSIGN_OR_RETURN(
        registration,
        cluster::LeasedKey::Create(etcd, absl::StrCat(etcd_url->prefix, "/coordinators/", id),
                                   advertised, f.etcd_ttl_s));
    std::printf(
        "dapq-coordinator: registered in etcd as %s (workers reach %s); %zu groups "
        "registered there\n",
        registration->key().c_str(), advertised.c_str(), group_watch->Snapshot().size());
  }
  std::fflush(stdout);
  WatchTerminationSignals([&server, &internal](int) {
    const auto deadline = std::chrono::system_clock::now() + std::chrono::seconds(2);
    server->Shutdown(deadline);
    if (internal) internal->Shutdown(deadline);
  });
  server->Wait();
  if (internal) internal->Wait();
  if (registration) (void)registration->Stop();
  if (group_watch) group_watch->Stop();
  if (http) http->Stop();
  return absl::OkStatus();
}

}  // namespace
}  // namespace dapq::coordinator

int main(int argc, char** argv) {
  dapq::BlockTerminationSignals();
  dapq::coordinator::CoordinatorFlags f;
  CLI::App app{"dapq-coordinator: routes requests and batch jobs over DapQ Serve worker groups"};
  app.add_option("--listen", f.listen, "address to serve on (port 0 = any free port)");
  app.add_option("--db", f.db, "SQLite file of the batch jobs");
  app.add_option("--batch_store", f.batch_store,
                 "the batch jobs' store: postgres://USER[:PASSWORD]@HOST:PORT/DB (shared by any "
                 "number of coordinators; the password may come from PGPASSWORD) or an SQLite "
                 "path (one coordinator); unset: --db");
  app.add_option("--batch_dir", f.batch_dir,
                 "the only directory batch jsonl_path/output_path may name (resolved, links "
                 "followed); unset: batch items must come inline");
  app.add_option("--metrics_listen", f.metrics_listen, "/metrics address (port 0 = any)");
  app.add_option("--ready_fd", f.ready_fd,
                 "write \"<port> <metrics port> <http port or 0> <internal port or 0>\" to this "
                 "descriptor once serving");
  app.add_option("--etcd", f.etcd,
                 "etcd://HOST:PORT[,HOST:PORT...]/PREFIX: route to the worker groups registered "
                 "there (one membership for every coordinator), register this coordinator there "
                 "for the workers to find, and route new sessions alike on every coordinator");
  app.add_option("--etcd_ttl_s", f.etcd_ttl_s, "lease of this coordinator's etcd key")
      ->capture_default_str();
  app.add_option("--advertise_internal", f.advertise_internal,
                 "HOST:PORT workers reach this coordinator's Registry at (with --etcd; default: "
                 "--internal_listen's address, else --listen's)");
  app.add_option("--coordinator_id", f.coordinator_id,
                 "this coordinator's name in etcd (default: <hostname>-<pid>)");
  app.add_option("--internal_listen", f.internal_listen,
                 "serve the worker groups' Registry (heartbeats) only on this address (port 0 = "
                 "any free port), not on --listen; unset: on --listen");
  AddServerTlsFlags(app, &f.tls, &f.allow_plaintext);
  app.add_option("--auth_token_file", f.auth_token_file,
                 "require a bearer token on the public APIs (gRPC and HTTP): a file of "
                 "\"TENANT TOKEN\" lines; a tenant's sessions and batch jobs are its own");
  app.add_option("--http_port", f.http_port,
                 "serve the OpenAI-compatible HTTP API (/v1/completions, /v1/chat/completions, "
                 "/v1/models, /health) on this port of --listen's host; 0 = any free port, -1 "
                 "= off")
      ->capture_default_str();
  app.add_option("--max_in_flight", f.max_in_flight, "requests admitted at once");
  app.add_option("--max_streams_per_tenant", f.max_streams_per_tenant,
                 "requests one tenant may have in flight (gRPC and HTTP; 0 = no limit); beyond: "
                 "RESOURCE_EXHAUSTED with a retry hint")
      ->capture_default_str();
  app.add_option("--max_request_s", f.max_request_s,
                 "server-side deadline of every request and batch item attempt, whatever the "
                 "client asks (0 = none)")
      ->capture_default_str();
  app.add_option("--heartbeat_ms", f.heartbeat_ms, "heartbeat interval expected from groups");
  app.add_option("--items_per_group", f.items_per_group,
                 "batch items run per group at once, at least (a group that batches takes its "
                 "reported batch capacity)");
  CLI11_PARSE(app, argc, argv);
  const absl::Status status = dapq::coordinator::RunCoordinator(f);
  if (!status.ok()) {
    std::fprintf(stderr, "dapq-coordinator: %s\n", status.ToString().c_str());
    return 1;
  }
  return 0;
}
