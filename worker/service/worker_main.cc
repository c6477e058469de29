// File: worker/service/worker_main.cc
// dapq-worker: one tensor-parallel rank of a worker group. Every rank loads the model and
// connects to the others (Gloo over TCP; the ranks meet through a shared directory or through
// etcd, --rendezvous); rank 0 serves dapq.v1.WorkerGroup on --listen, registers the group in
// etcd under a lease (--etcd) and with the coordinators (--coordinator, and every coordinator
// registered in etcd) through heartbeats, and drives the group. SIGINT/SIGTERM stop the group
// cleanly; a lost rank stops it with exit code 1 (the coordinator routes around it).
#include <grpcpp/grpcpp.h>

#include <cstdio>
#include <memory>
#include <optional>

#include "CLI/CLI.hpp"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "cluster/etcd_client.h"
#include "cluster/etcd_registration.h"
#include "cluster/etcd_url.h"
#include "cluster/etcd_watch.h"
#include "common/logging.h"
#include "common/metrics.h"
#include "common/ready_fd.h"
#include "common/status_macros.h"
#include "common/termination.h"
#include "common/tls.h"
#include "common/tls_flags.h"
#include "kernels/cpu_threads.h"
#include "kernels/device.h"
#include "kvstore/kv_store.h"
#include "kvstore/memory_tier.h"
#include "kvstore/peer_service.h"
#include "kvstore/remote_tier.h"
#include "nlohmann/json.hpp"
#include "worker/comm/gloo_communicator.h"
#include "worker/comm/nccl_communicator.h"
#include "worker/model_loader.h"
#include "worker/prompt_codec.h"
#include "worker/service/group_driver.h"
#include "worker/service/worker_service.h"

namespace dapq::worker::service {
namespace {

struct WorkerFlags {
  std::string model, served_model_name, tokenizer, chat_template, group_id = "g0", rendezvous_dir,
                                                                  listen = "127.0.0.1:0";
  std::string weights_dtype = "fp32", kv_dtype = "fp32";
  std::string device = "cpu", comm = "gloo";
  std::string coordinator, advertise_host = "127.0.0.1", gloo_host = "127.0.0.1";
  std::string rendezvous;  // a directory or an etcd:// URL (--rendezvous_dir is the former)
  std::string etcd;        // etcd://...: group membership and coordinator discovery
  int etcd_ttl_s = 5;
  int tp = 1, rank = 0, prefill_chunk = 1024, max_queue = 16, max_sessions = 64, threads = 0;
  int heartbeat_ms = 500, gloo_timeout_s = 120;
  std::string metrics_listen = "127.0.0.1:0";
  std::string kv_dir;  // sessions in the tiered KV store, disk tier under kv_dir/<group>-r<rank>
  int kv_device_kib = 64 << 10, kv_host_kib = 256 << 10, kv_disk_mib = 4096;
  int kv_resident_kib = 64 << 10;  // idle sessions kept in the block pool (with a store)
  std::string kv_remote;           // the store's last tier: rediss://, redis:// or grpc://host:port
  int kv_remote_mib = 1024;
  std::string kv_peer_listen;  // serve KvPeer (a memory tier other workers use as remote)
  int kv_peer_mib = 1024;
  int max_batch = 64, max_step_tokens = 256;
  std::string preemption = "recompute";
  std::string admission = "reserve";
  bool no_batching = false;
  bool no_prefix_cache = false;
  bool fail_on_bad_block = false;
  int ready_fd = -1;
  int kv_block_tokens = 16;
  long kv_pool_blocks = 0;
  TlsFiles tls;  // mutual TLS on the group API and KvPeer, and towards the coordinator
  bool allow_plaintext = false;
};

absl::Status RunWorker(const WorkerFlags& f) {
  if (f.model.empty()) return absl::InvalidArgumentError("--model is required");
  // Heartbeats, the remote KV tier and peers go out with this rank's certificate.
  DAPQ_RETURN_IF_ERROR(SetClientTls(f.tls));
  if (f.tp < 1) return absl::InvalidArgumentError(absl::StrCat("--tp=", f.tp, " must be >= 1"));
  if (f.rank < 0 || f.rank >= f.tp) {
    return absl::InvalidArgumentError(
        absl::StrCat("--rank=", f.rank, " must be in [0, --tp=", f.tp, ")"));
  }
  // Where the ranks meet: --rendezvous (a directory or etcd://), --rendezvous_dir, else --etcd.
  std::string rendezvous_dir = f.rendezvous_dir, rendezvous_url;
  if (!f.rendezvous.empty()) {
    if (!rendezvous_dir.empty()) {
      return absl::InvalidArgumentError("give --rendezvous or --rendezvous_dir, not both");
    }
    (cluster::IsEtcdUrl(f.rendezvous) ? rendezvous_url : rendezvous_dir) = f.rendezvous;
  } else if (rendezvous_dir.empty()) {
    rendezvous_url = f.etcd;
  }
  if (f.tp > 1 && rendezvous_dir.empty() && rendezvous_url.empty()) {
    return absl::InvalidArgumentError(
        "--tp > 1 needs a place for the ranks to meet: --rendezvous DIR|etcd://... or --etcd");
  }
  std::optional<cluster::EtcdUrl> etcd_url;
  if (!f.etcd.empty()) {
    DAPQ_ASSIGN_OR_RETURN(etcd_url, cluster::ParseEtcdUrl(f.etcd));
    if (f.etcd_ttl_s < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("--etcd_ttl_s=", f.etcd_ttl_s, " must be >= 1"));
    }
  }
  if (f.max_batch < 1 || f.max_step_tokens < 1) {
    return absl::InvalidArgumentError(absl::StrCat("--max_batch=", f.max_batch,
                                                   " and --max_step_tokens=", f.max_step_tokens,
                                                   " must be >= 1"));
  }
  if (f.preemption != "recompute" && f.preemption != "swap") {
    return absl::InvalidArgumentError(
        absl::StrCat("--preemption='", f.preemption, "' must be swap or recompute"));
  }
  if (f.admission != "reserve" && f.admission != "optimistic") {
    return absl::InvalidArgumentError(
        absl::StrCat("--admission='", f.admission, "' must be reserve or optimistic"));
  }
  if (f.preemption == "swap" && f.kv_dir.empty() && f.kv_remote.empty()) {
    return absl::InvalidArgumentError(
        "--preemption=swap saves preempted sequences in the KV store: set --kv_dir");
  }
  if (f.kv_disk_mib < 0 || f.kv_remote_mib <= 0 || f.kv_peer_mib <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--kv_disk_mib=", f.kv_disk_mib, " must be >= 0, --kv_remote_mib=", f.kv_remote_mib,
        " and --kv_peer_mib=", f.kv_peer_mib, " > 0"));
  }
  // KvPeer: this worker lends a memory tier to others (their --kv_remote grpc://...). It serves
  // before the model loads, so the peers can start in any order.
  std::unique_ptr<kvstore::Tier> peer_tier;
  std::unique_ptr<kvstore::KvPeerService> peer_service;
  std::unique_ptr<grpc::Server> peer_server;
  int peer_port = 0;
  if (!f.kv_peer_listen.empty()) {
    DAPQ_ASSIGN_OR_RETURN(peer_tier,
                          kvstore::MemoryTier::Create(kvstore::TierOptions{
                              "peer", static_cast<size_t>(f.kv_peer_mib) << 20, 1.0, 1.0}));
    peer_service = std::make_unique<kvstore::KvPeerService>(peer_tier.get());
    grpc::ServerBuilder peer_builder;
    // Mutual TLS: only processes with a certificate of the cluster CA use this memory.
    DAPQ_ASSIGN_OR_RETURN(auto peer_creds,
                          MakeServerCredentials(f.tls, /*require_client_cert=*/true,
                                                f.kv_peer_listen, f.allow_plaintext));
    peer_builder.AddListeningPort(f.kv_peer_listen, peer_creds, &peer_port);
    peer_builder.SetMaxReceiveMessageSize(kvstore::kMaxPeerMessageBytes);
    peer_builder.SetMaxSendMessageSize(kvstore::kMaxPeerMessageBytes);
    peer_builder.RegisterService(peer_service.get());
    peer_server = peer_builder.BuildAndStart();
    if (peer_server == nullptr || peer_port == 0) {
      return absl::UnavailableError(
          absl::StrCat("could not listen on --kv_peer_listen=", f.kv_peer_listen));
    }
    std::printf("dapq-worker %s rank %d: KvPeer on port %d (%d MiB)\n", f.group_id.c_str(), f.rank,
                peer_port, f.kv_peer_mib);
  }
  // Metrics: one registry and /metrics endpoint per rank.
  auto registry = std::make_shared<prometheus::Registry>();
  AddBuildInfo(*registry);
  WorkerMetrics metrics(*registry, f.group_id, f.rank);
  DAPQ_ASSIGN_OR_RETURN(std::unique_ptr<MetricsServer> metrics_server,
                        MetricsServer::Start(f.metrics_listen));
  metrics_server->Register(registry);
  // "<metrics port>[ <KvPeer port>]", before the group forms.
  ReportReady(f.ready_fd, peer_port > 0 ? absl::StrCat(metrics_server->port(), " ", peer_port)
                                        : std::to_string(metrics_server->port()));
  DAPQ_ASSIGN_OR_RETURN(ModelWeights weights, LoadModelAs(f.model, f.weights_dtype));
  auto model = std::make_shared<const ModelWeights>(std::move(weights));
  // Only rank 0 turns text into tokens; the other ranks receive token ids.
  LoadedPromptCodec codec;
  if (f.rank == 0) {
    DAPQ_ASSIGN_OR_RETURN(
        codec, LoadPromptCodec(f.model, f.tokenizer, f.chat_template, model->config.vocab_size));
    DAPQ_LOG(INFO) << "worker " << f.group_id << ": " << codec.describe();
  }
  EngineOptions engine_options;
  engine_options.tp = f.tp;
  engine_options.prefill_chunk = f.prefill_chunk;
  engine_options.kv_tokens_per_block = f.kv_block_tokens;
  engine_options.kv_max_blocks = f.kv_pool_blocks;
  engine_options.prefix_cache = !f.no_prefix_cache;
  DAPQ_ASSIGN_OR_RETURN(engine_options.kv_dtype, ParseKvDtype(f.kv_dtype));
  engine_options.cpu_threads = f.threads;
  DAPQ_ASSIGN_OR_RETURN(engine_options.device, kernels::ParseDevice(f.device));
  const bool on_cuda = engine_options.device.backend == kernels::Backend::kCuda;
  if (f.comm != "gloo" && f.comm != "nccl") {
    return absl::InvalidArgumentError(absl::StrCat("--comm='", f.comm, "': gloo or nccl"));
  }
  if (f.comm == "nccl" && !on_cuda) {
    return absl::InvalidArgumentError(
        absl::StrCat("--comm=nccl needs a CUDA device (--device cuda:N), not ", f.device));
  }
  std::unique_ptr<Communicator> comm, nccl_comm;
  std::unique_ptr<Engine> engine;
  if (f.tp == 1) {
    DAPQ_ASSIGN_OR_RETURN(engine, Engine::Create(model, engine_options));
  } else {
    GlooGroupOptions g;
    g.rank = f.rank;
    g.size = f.tp;
    g.rendezvous_dir = rendezvous_dir;
    g.rendezvous_url = rendezvous_url;
    g.group_id = f.group_id;
    g.hostname = f.gloo_host;
    g.timeout = absl::Seconds(f.gloo_timeout_s);
    DAPQ_ASSIGN_OR_RETURN(comm, ConnectGlooGroup(g));
    // The engine's all-reduces are timed; the driver's command broadcasts are not (they stay on
    // Gloo, which also bootstraps NCCL).
    std::unique_ptr<Communicator> engine_comm =
        std::make_unique<TimedCommunicator>(comm.get(), &metrics);
    if (f.comm == "nccl") {
      DAPQ_ASSIGN_OR_RETURN(nccl_comm, ConnectNcclGroup(*comm, engine_options.device.ordinal));
      engine_comm = std::make_unique<TimedCommunicator>(nccl_comm.get(), &metrics);
    }
    DAPQ_ASSIGN_OR_RETURN(engine,
                          Engine::CreateRank(model, engine_options, std::move(engine_comm)));
  }

  std::unique_ptr<kvstore::KvStore> store;
  std::shared_ptr<KvStoreCollector> store_collector;
  std::unique_ptr<kvstore::Tier> remote;
  if (!f.kv_remote.empty()) {
    kvstore::RemoteTierOptions ro;
    ro.url = f.kv_remote;
    ro.capacity_bytes = static_cast<size_t>(f.kv_remote_mib) << 20;
    ro.key_prefix = absl::StrCat(f.group_id, "-r", f.rank);
    ro.tls = f.tls;  // rediss:// checks the server against --tls_ca and presents --tls_cert
    ro.allow_plaintext = f.allow_plaintext;  // redis:// beyond loopback
    absl::StatusOr<std::unique_ptr<kvstore::Tier>> opened = kvstore::OpenRemoteTier(ro);
    if (!opened.ok()) {
      const absl::string_view why = opened.status().message();
      return absl::Status(opened.status().code(),
                          absl::StartsWith(why, "kv_remote")
                              ? absl::StrCat("--", why)
                              : absl::StrCat("--kv_remote=", f.kv_remote, ": ", why));
    }
    remote = std::move(*opened);
  }
  if (!f.kv_dir.empty() || remote != nullptr) {
    kvstore::KvStoreOptions so;
    so.device.capacity_bytes = static_cast<size_t>(f.kv_device_kib) << 10;
    so.host.capacity_bytes = static_cast<size_t>(f.kv_host_kib) << 10;
    so.disk.capacity_bytes = static_cast<size_t>(f.kv_disk_mib) << 20;
    // --kv_disk_mib 0 (or no --kv_dir): no disk tier; blocks go from host memory to the remote.
    if (!f.kv_dir.empty() && f.kv_disk_mib > 0) {
      so.disk_dir = absl::StrCat(f.kv_dir, "/", f.group_id, "-r", f.rank);
    }
    so.remote = remote.get();
    so.observer = &metrics;
    DAPQ_ASSIGN_OR_RETURN(store, kvstore::KvStore::Open(so));
    // The session table starts empty, so blocks a previous run left on the persistent tiers
    // (the disk tier survives restarts) belong to no session: collect them.
    const std::vector<std::string> orphans = store->Sessions();
    for (const std::string& session : orphans) {
      DAPQ_RETURN_IF_ERROR(store->EraseSession(session));
    }
    if (!orphans.empty()) {
      DAPQ_LOG(INFO) << "worker " << f.group_id << " rank " << f.rank << ": collected "
                     << orphans.size() << " orphaned session(s) left by a previous run";
    }
    std::vector<std::string> names;
    for (const kvstore::TierStats& t : store->Stats()) names.push_back(t.name);
    metrics.SetTierNames(std::move(names));
    store_collector = std::make_shared<KvStoreCollector>(store.get(), f.group_id, f.rank);
    metrics_server->Register(store_collector);
  }
  std::printf("dapq-worker %s rank %d: metrics on port %d\n", f.group_id.c_str(), f.rank,
              metrics_server->port());
  std::fflush(stdout);

  auto pool_collector = std::make_shared<KvPoolCollector>(&engine->kv_pool(0), f.group_id, f.rank);
  metrics_server->Register(pool_collector);

  GroupDriverOptions driver_options;
  driver_options.store = store.get();
  driver_options.fail_on_bad_block = f.fail_on_bad_block;
  driver_options.metrics = &metrics;
  driver_options.group_id = f.group_id;
  driver_options.max_queue = f.max_queue;
  driver_options.max_sessions = f.max_sessions;
  driver_options.resident_session_bytes = static_cast<size_t>(f.kv_resident_kib) << 10;
  driver_options.kv_remote = f.kv_remote;
  driver_options.continuous_batching = !f.no_batching;
  driver_options.scheduler.max_running = f.max_batch;
  driver_options.scheduler.max_step_tokens = f.max_step_tokens;
  driver_options.scheduler.preemption =
      f.preemption == "swap" ? Preemption::kSwap : Preemption::kRecompute;
  driver_options.scheduler.admission =
      f.admission == "optimistic" ? Admission::kOptimistic : Admission::kReserve;
  if (peer_port > 0) driver_options.kv_peer = absl::StrCat(f.advertise_host, ":", peer_port);
  if (codec.chat_template) driver_options.chat_template = &*codec.chat_template;
  GroupDriver driver(engine.get(), comm.get(), codec.tokenizer.get(), driver_options);
  DAPQ_LOG(INFO) << "worker " << f.group_id << " rank " << f.rank << ": " << model->config.name
                 << ", weights " << kernels::DTypeName(model->weights_dtype) << ", KV cache "
                 << kernels::DTypeName(engine_options.kv_dtype) << ", device "
                 << kernels::DeviceName(engine_options.device)
                 << (f.tp > 1 ? absl::StrCat(", all-reduce over ", f.comm) : std::string()) << ", "
                 << kernels::CpuKernelsSummary();

  if (f.rank != 0) {
    WatchTerminationSignals([](int) { std::_Exit(0); });  // rank 0 stops the group
    DAPQ_LOG(INFO) << "worker " << f.group_id << " rank " << f.rank << " of " << f.tp
                   << ": following rank 0";
    return driver.RunFollower();
  }

  grpc::ServerBuilder builder;
  int port = 0;
  // Mutual TLS: the group's API takes requests from the coordinator (the cluster CA's) only.
  DAPQ_ASSIGN_OR_RETURN(auto creds, MakeServerCredentials(f.tls, /*require_client_cert=*/true,
                                                          f.listen, f.allow_plaintext));
  builder.AddListeningPort(f.listen, creds, &port);
  builder.SetMaxReceiveMessageSize(4 << 20);
  WorkerGroupService service(
      &driver, f.served_model_name.empty() ? model->config.name : f.served_model_name);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    return absl::UnavailableError(absl::StrCat("could not listen on --listen=", f.listen));
  }
  const std::string address = absl::StrCat(f.advertise_host, ":", port);
  service.set_address(address);
  std::printf("dapq-worker %s: serving on %s (tp=%d)\n", f.group_id.c_str(), address.c_str(), f.tp);
  std::fflush(stdout);
  std::unique_ptr<HeartbeatSender> heartbeats;
  if (!f.coordinator.empty() || etcd_url) {
    std::vector<std::string> fixed;
    if (!f.coordinator.empty()) fixed.push_back(f.coordinator);
    heartbeats = std::make_unique<HeartbeatSender>(std::move(fixed), &service,
                                                   std::chrono::milliseconds(f.heartbeat_ms));
  }
  // With etcd: the group's key under a lease (the coordinators route to the groups that hold
  // one; a SIGKILLed group's key expires with its lease) and heartbeats to every coordinator
  // registered there.
  std::unique_ptr<cluster::LeasedKey> registration;
  std::unique_ptr<cluster::PrefixWatcher> coordinators;
  if (etcd_url) {
    DAPQ_ASSIGN_OR_RETURN(std::shared_ptr<cluster::EtcdClient> etcd,
                          cluster::EtcdClient::FromUrl(f.etcd));
    nlohmann::json value = {{"address", address}, {"tp", f.tp}, {"model", model->config.name}};
    DAPQ_ASSIGN_OR_RETURN(
        registration,
        cluster::LeasedKey::Create(etcd, absl::StrCat(etcd_url->prefix, "/groups/", f.group_id),
                                   value.dump(), f.etcd_ttl_s));
    metrics_server->Register(std::make_shared<LeaseLossCollector>(
        [r = registration.get()] { return r->registrations() - 1; }, f.group_id, f.rank));
    HeartbeatSender* sender = heartbeats.get();
    DAPQ_ASSIGN_OR_RETURN(coordinators, cluster::PrefixWatcher::Start(
                                            etcd, absl::StrCat(etcd_url->prefix, "/coordinators/"),
                                            [sender](const cluster::PrefixWatcher::Map& map) {
                                              std::vector<std::string> addresses;
                                              for (const auto& [key, address] : map) {
                                                addresses.push_back(address);
                                              }
                                              sender->SetCoordinators(addresses);
                                            }));
    std::printf("dapq-worker %s: registered in etcd under %s (lease %ds)\n", f.group_id.c_str(),
                registration->key().c_str(), f.etcd_ttl_s);
    std::fflush(stdout);
  }
  WatchTerminationSignals([&driver](int) { driver.Shutdown(); });
  const absl::Status status = driver.RunDriver();
  if (coordinators) coordinators->Stop();
  if (heartbeats) heartbeats->Stop();            // a last heartbeat reports the group's health
  if (registration) (void)registration->Stop();  // the coordinators forget the group at once
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  return status;
}

}  // namespace
}  // namespace dapq::worker::service

int main(int argc, char** argv) {
  dapq::BlockTerminationSignals();
  dapq::worker::service::WorkerFlags f;
  CLI::App app{"dapq-worker: one tensor-parallel rank of a DapQ Serve worker group"};
  app.add_option("--model", f.model, "llama2.c .bin, HF directory or synthetic:<name>")->required();
  app.add_option("--weights_dtype", f.weights_dtype,
                 "fp32 | bf16: what the linear layers multiply with (bf16 reads half the bytes)")
      ->capture_default_str();
  app.add_option("--kv_dtype", f.kv_dtype,
                 "fp32 | bf16 | fp16: element type of the KV cache (2-byte types halve it)")
      ->capture_default_str();
  app.add_option("--device", f.device,
                 "where this rank runs: cpu, or cuda:N (the weight shard is uploaded, the KV pool "
                 "is allocated on the device up front: give --kv_pool_blocks)")
      ->capture_default_str();
  app.add_option("--comm", f.comm,
                 "all-reduce transport of a tp > 1 group: gloo (TCP; the CPU default) or nccl "
                 "(--device cuda:N, one device per rank; bootstrapped over Gloo)")
      ->capture_default_str();
  app.add_option("--threads", f.threads,
                 "CPU threads for this rank's kernels (OpenBLAS, oneDNN, our loops); 0 = every "
                 "core. Ranks sharing a machine should split the cores between them")
      ->capture_default_str();
  app.add_option("--tokenizer", f.tokenizer,
                 "llama2.c tokenizer.bin, or a Hugging Face tokenizer.json (or its directory); "
                 "default: the model directory's tokenizer.json when it has one");
  app.add_option("--served_model_name", f.served_model_name,
                 "the model's name in the coordinator's APIs (OpenAI `model`); default: the "
                 "model file's stem or the HF directory's name");
  app.add_option("--chat_template", f.chat_template,
                 "chat prompts: a family (llama3, llama2, mistral, chatml) or a Jinja template "
                 "file of one; default: the tokenizer directory's tokenizer_config.json");
  AddServerTlsFlags(app, &f.tls, &f.allow_plaintext);
  app.add_option("--tp", f.tp, "ranks in the group");
  app.add_option("--rank", f.rank, "this process's rank");
  app.add_option("--group_id", f.group_id, "the group's name");
  app.add_option("--rendezvous_dir", f.rendezvous_dir, "directory the ranks meet in (tp > 1)");
  app.add_option("--rendezvous", f.rendezvous,
                 "where the ranks meet (tp > 1): a directory they all see, or "
                 "etcd://HOST:PORT[,HOST:PORT...]/PREFIX (no shared files; default with --etcd)");
  app.add_option("--etcd", f.etcd,
                 "etcd://HOST:PORT[,HOST:PORT...]/PREFIX: rank 0 registers the group there under "
                 "a lease and heartbeats to every coordinator registered there (--coordinator "
                 "becomes optional); tp > 1 ranks meet there unless --rendezvous says otherwise");
  app.add_option("--etcd_ttl_s", f.etcd_ttl_s,
                 "lease of the group's etcd key: a group that dies disappears within it")
      ->capture_default_str();
  app.add_option("--listen", f.listen, "rank 0's gRPC address (port 0 = any free port)");
  app.add_option("--advertise_host", f.advertise_host, "host the coordinator reaches rank 0 at");
  app.add_option("--gloo_host", f.gloo_host, "address this rank's Gloo transport binds");
  app.add_option("--coordinator", f.coordinator,
                 "coordinator address to register with (with --etcd: in addition to those "
                 "registered in etcd)");
  app.add_option("--prefill_chunk", f.prefill_chunk, "prompt tokens per forward pass");
  app.add_option("--max_queue", f.max_queue, "requests waiting before RESOURCE_EXHAUSTED");
  app.add_option("--max_sessions", f.max_sessions, "sessions kept (LRU)");
  app.add_option("--heartbeat_ms", f.heartbeat_ms, "heartbeat interval");
  app.add_option("--gloo_timeout_s", f.gloo_timeout_s, "per-collective timeout");
  app.add_option("--metrics_listen", f.metrics_listen, "/metrics address (port 0 = any)");
  app.add_option("--ready_fd", f.ready_fd,
                 "write \"<metrics port>\" to this descriptor once /metrics serves");
  app.add_option("--kv_dir", f.kv_dir,
                 "keep sessions in the tiered KV store; its disk tier under DIR/<group>-r<rank>");
  app.add_option("--kv_device_kib", f.kv_device_kib, "KV store device tier capacity");
  app.add_option("--kv_resident_kib", f.kv_resident_kib,
                 "with a KV store: idle sessions' KV kept in the engine's block pool (their next "
                 "turn reads nothing from the store; saved through to it, so they leave the pool "
                 "without a copy, least recently used first, beyond this, or when requests need "
                 "the blocks); 0 = every session leaves the pool after its turn")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--kv_host_kib", f.kv_host_kib, "KV store host tier capacity");
  app.add_option("--kv_disk_mib", f.kv_disk_mib, "KV store disk tier capacity (0 = no disk tier)");
  app.add_option("--kv_remote", f.kv_remote,
                 "the KV store's last tier: rediss://HOST:PORT (a Redis server over TLS: checked "
                 "against --tls_ca, presenting --tls_cert), redis://HOST:PORT (plaintext: "
                 "loopback only unless --allow_plaintext) or grpc://HOST:PORT (another worker's "
                 "--kv_peer_listen); keys are prefixed <group>-r<rank>");
  app.add_option("--kv_remote_mib", f.kv_remote_mib, "capacity this rank may use on the remote");
  app.add_option("--kv_peer_listen", f.kv_peer_listen,
                 "serve KvPeer here (HOST:PORT, port 0 = any): a memory tier other workers use "
                 "with --kv_remote grpc://...; the port follows the metrics port on --ready_fd");
  app.add_option("--kv_peer_mib", f.kv_peer_mib, "capacity of the tier served with KvPeer");
  app.add_option("--max_batch", f.max_batch,
                 "continuous batching: sequences that run together at most (the group's batch "
                 "capacity, reported to the coordinator)")
      ->capture_default_str();
  app.add_option("--max_step_tokens", f.max_step_tokens,
                 "continuous batching: tokens per engine step (decode tokens first, prompt chunks "
                 "fill the rest); smaller keeps the time per output token low under prefill load")
      ->capture_default_str();
  app.add_flag("--no_batching", f.no_batching,
               "run one request at a time (no continuous batching)");
  app.add_flag("--no_prefix_cache", f.no_prefix_cache,
               "prefill every prompt in full (default: a prompt starting with blocks an earlier "
               "prompt left in the KV pool takes them and prefills only the rest)");
  app.add_option("--kv_block_tokens", f.kv_block_tokens,
                 "slots per block of the paged KV cache (a power of two)");
  app.add_option("--kv_pool_blocks", f.kv_pool_blocks,
                 "blocks in this rank's KV pool (0 = grow as needed); a request that needs more "
                 "fails with RESOURCE_EXHAUSTED");
  app.add_option("--admission", f.admission,
                 "continuous batching with a capped --kv_pool_blocks: reserve = admit a request "
                 "when its whole length fits (no preemption from growth); optimistic = admit it "
                 "when its prompt fits, more sequences share the pool and the newest is "
                 "preempted when decoding fills it")
      ->capture_default_str();
  app.add_option("--preemption", f.preemption,
                 "how a sequence leaves a full KV pool: recompute (drop its blocks, prefill it "
                 "again when readmitted) or swap (save its KV to the KV store, needs --kv_dir or "
                 "--kv_remote, and restore it)")
      ->capture_default_str();
  app.add_flag("--fail_on_bad_block", f.fail_on_bad_block,
               "a stored block failing verification fails the request (default: recompute)");
  CLI11_PARSE(app, argc, argv);
  const absl::Status status = dapq::worker::service::RunWorker(f);
  if (!status.ok()) {
    std::fprintf(stderr, "dapq-worker %s rank %d: %s\n", f.group_id.c_str(), f.rank,
                 status.ToString().c_str());
    return 1;
  }
  return 0;
}
