// File: bench/kvstore_bench.cc
// Spill and restore throughput of the tiered KV store per tier pair, each beside the limit
// measured in the same run on the same bytes:
//  - device -> host (memory tiers): vs memcpy of the same bytes;
//  - host -> disk and back: vs raw sequential write+fsync / read of the same bytes (FileEnv);
//  - host -> remote (gRPC peer on loopback) and back: vs raw KvPeer RPCs on the same channel.
// Block sizes from 16 KiB to 4 MiB; 64 MiB moved per measurement (at least 8 blocks).
// Usage: dapq_kvstore_bench [--dir /tmp/dapq_kvstore_bench] [--total_mib 64]
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "bench/bench_util.h"
#include "kvstore/block_codec.h"
#include "kvstore/grpc_peer_tier.h"
#include "kvstore/kv_store.h"
#include "kvstore/memory_tier.h"
#include "kvstore/peer_service.h"

namespace dapq::bench {
namespace {
using namespace dapq::kvstore;  // NOLINT: benchmark-local brevity

std::string MakeBlock(size_t bytes, uint64_t seed) {
  const int head_dim = 128;
  const int tokens = static_cast<int>(std::max<size_t>(1, bytes / (2 * head_dim * 4 + 4)));
  std::vector<int32_t> pos(tokens);
  std::vector<float> payload(2ull * tokens * head_dim);
  FillUniform(payload.data(), payload.size(), seed);
  return *EncodeBlock({1, 2, 0, 0, 1, head_dim}, pos, payload);
}

double GiBps(size_t bytes, double seconds) { return bytes / seconds / (1ull << 30); }

struct Row {
  std::string pair;
  size_t block;
  double spill, restore, limit_spill, limit_restore;
};

void Print(const Row& r) {
  std::printf("| %s | %zu KiB | %.2f | %.2f | %.2f | %.2f | %.0f%% | %.0f%% |\n", r.pair.c_str(),
              r.block >> 10, r.spill, r.limit_spill, r.restore, r.limit_restore,
              100 * r.spill / r.limit_spill, 100 * r.restore / r.limit_restore);
  std::fflush(stdout);
}

int Run(const std::string& dir, size_t total) {
  std::printf(
      "| tier pair | block | spill GiB/s | limit GiB/s | restore GiB/s | limit GiB/s | "
      "spill / limit | restore / limit |\n|---|---|---|---|---|---|---|---|\n");
  // The remote peer: a memory tier served on loopback.
  auto peer_tier = *MemoryTier::Create({"peer", 8ull << 30, 0.99, 0.9});
  KvPeerService service(peer_tier.get());
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.SetMaxReceiveMessageSize(80 << 20);
  builder.SetMaxSendMessageSize(80 << 20);
  builder.RegisterService(&service);
  auto server = builder.BuildAndStart();
  const std::string address = absl::StrCat("127.0.0.1:", port);

  for (size_t block : {16u << 10, 64u << 10, 256u << 10, 1u << 20, 4u << 20}) {
    const int n = static_cast<int>(std::max<size_t>(8, total / block));
    std::vector<std::string> blocks;
    for (int i = 0; i < n; ++i) blocks.push_back(MakeBlock(block, i));
    const size_t bytes = n * blocks[0].size();
    std::fprintf(stderr, "block %zu KiB x %d ...\n", block >> 10, n);

    // device -> host vs memcpy.
    {
      auto device = *MemoryTier::Create({"device", 2 * bytes, 0.99, 0.9});
      auto host = *MemoryTier::Create({"host", 2 * bytes, 0.99, 0.9});
      for (int i = 0; i < n; ++i) (void)device->Put(absl::StrCat("k", i), blocks[i]);
      auto t0 = std::chrono::steady_clock::now();
      for (int i = 0; i < n; ++i) {
        const std::string k = absl::StrCat("k", i);
        (void)host->Put(k, *device->Get(k));
        (void)device->Erase(k);
      }
      const double spill = GiBps(bytes, SecondsSince(t0));
      t0 = std::chrono::steady_clock::now();
      for (int i = 0; i < n; ++i) {
        const std::string k = absl::StrCat("k", i);
        (void)device->Put(k, *host->Get(k));
        (void)host->Erase(k);
      }
      const double restore = GiBps(bytes, SecondsSince(t0));
      std::vector<char> dst(blocks[0].size());
      t0 = std::chrono::steady_clock::now();
      for (int i = 0; i < n; ++i) std::memcpy(dst.data(), blocks[i].data(), blocks[i].size());
      const double mc = GiBps(bytes, SecondsSince(t0));
      Print({"device->host", block, spill, restore, mc, mc});
    }
    // host -> disk vs raw write + fsync / read through the same FileEnv.
    {
      std::filesystem::remove_all(dir);
      KvStoreOptions o;
      o.device.capacity_bytes = 2 * bytes;
      o.host.capacity_bytes = 2 * bytes;
      o.disk.capacity_bytes = 4 * bytes;
      o.disk_dir = dir + "/tier";
      o.background = false;
      auto store = *KvStore::Open(o);
      for (int i = 0; i < n; ++i) (void)store->Put("s", absl::StrCat("s.", i), blocks[i]);
      auto t0 = std::chrono::steady_clock::now();
      (void)store->PersistAll();
      const double spill = GiBps(bytes, SecondsSince(t0));
      t0 = std::chrono::steady_clock::now();
      for (int i = 0; i < n; ++i) (void)store->Get(absl::StrCat("s.", i));
      const double restore = GiBps(bytes, SecondsSince(t0));
      FileEnv* env = FileEnv::Posix();
      (void)env->CreateDir(dir + "/raw");
      t0 = std::chrono::steady_clock::now();
      for (int i = 0; i < n; ++i)
        (void)env->WriteFile(absl::StrCat(dir, "/raw/", i), blocks[i], true);
      const double raw_w = GiBps(bytes, SecondsSince(t0));
      t0 = std::chrono::steady_clock::now();
      for (int i = 0; i < n; ++i) (void)env->ReadFile(absl::StrCat(dir, "/raw/", i));
      const double raw_r = GiBps(bytes, SecondsSince(t0));
      Print({"host->disk", block, spill, restore, raw_w, raw_r});
    }
    // host -> remote (gRPC peer) vs raw PutBlock / GetBlock RPCs.
    {
      GrpcPeerTierOptions po;
      po.address = address;
      po.tier.capacity_bytes = 4 * bytes;
      auto remote = *GrpcPeerTier::Create(po);
      auto t0 = std::chrono::steady_clock::now();
      for (int i = 0; i < n; ++i) (void)remote->Put(absl::StrCat("r.", i), blocks[i]);
      const double spill = GiBps(bytes, SecondsSince(t0));
      t0 = std::chrono::steady_clock::now();
      for (int i = 0; i < n; ++i) (void)remote->Get(absl::StrCat("r.", i));
      const double restore = GiBps(bytes, SecondsSince(t0));
      grpc::ChannelArguments args;
      args.SetMaxReceiveMessageSize(80 << 20);
      auto stub = dapq::v1::KvPeer::NewStub(
          grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args));
      t0 = std::chrono::steady_clock::now();
      for (int i = 0; i < n; ++i) {
        dapq::v1::PutBlockRequest req;
        req.set_key(absl::StrCat("raw.", i));
        req.set_block(blocks[i]);
        dapq::v1::PutBlockResponse resp;
        grpc::ClientContext ctx;
        (void)stub->PutBlock(&ctx, req, &resp);
      }
      const double raw_put = GiBps(bytes, SecondsSince(t0));
      t0 = std::chrono::steady_clock::now();
      for (int i = 0; i < n; ++i) {
        dapq::v1::GetBlockRequest req;
        req.set_key(absl::StrCat("raw.", i));
        dapq::v1::GetBlockResponse resp;
        grpc::ClientContext ctx;
        (void)stub->GetBlock(&ctx, req, &resp);
      }
      const double raw_get = GiBps(bytes, SecondsSince(t0));
      for (int i = 0; i < n; ++i) {
        (void)peer_tier->Erase(absl::StrCat("raw.", i));
        (void)remote->Erase(absl::StrCat("r.", i));
      }
      Print({"host->remote (gRPC)", block, spill, restore, raw_put, raw_get});
    }
  }
  server->Shutdown();
  std::filesystem::remove_all(dir);
  return 0;
}

}  // namespace
}  // namespace dapq::bench

int main(int argc, char** argv) {
  CLI::App app{"Tiered KV store spill/restore throughput"};
  std::string dir = "/tmp/dapq_kvstore_bench";
  int total_mib = 64;
  app.add_option("--dir", dir, "scratch directory for the disk tier")->capture_default_str();
  app.add_option("--total_mib", total_mib, "bytes moved per measurement")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  return dapq::bench::Run(dir, static_cast<size_t>(total_mib) << 20);
}
