// File: tests/e2e/overload_test.cc
// Overload, as an attacker or a traffic spike brings it: clients keep twice the coordinator's
// admission capacity (--max_in_flight) busy for a fixed time (60 s; DAPQ_OVERLOAD_SECONDS
// overrides it). Every call must come back — OK, or RESOURCE_EXHAUSTED with a retry hint —
// none lost or failing otherwise, the cluster keeps serving afterwards, and the coordinator's
// resident memory stays bounded (sampled from /proc while the load runs; the figures are
// printed for the closing note).
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "dapq/v1/inference.grpc.pb.h"
#include "gtest/gtest.h"
#include "launcher/local_cluster.h"
#include "tests/util/test_paths.h"

namespace dapq {
namespace {

long RssKib(pid_t pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::atol(line.c_str() + 6);
  }
  return -1;
}

TEST(OverloadTest, TwiceTheAdmissionCapacityAnswersOnlyOkOrResourceExhausted) {
  constexpr int kMaxInFlight = 8;
  const char* env = std::getenv("DAPQ_OVERLOAD_SECONDS");
  const int seconds = env != nullptr ? std::atoi(env) : 60;
  launcher::LocalClusterOptions o;
  o.bin_dir = launcher::ProgramDir() + "/../cli";
  o.model = testing::Stories260KPath();
  o.tokenizer = testing::Tok512Path();
  o.groups = 1;
  o.tp = 1;
  o.work_dir = testing::MakeTempDir("overload_test");
  o.heartbeat_ms = 100;
  o.max_in_flight = kMaxInFlight;
  auto cluster = launcher::LocalCluster::Start(o);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  ASSERT_TRUE((*cluster)->WaitReady(std::chrono::seconds(60)).ok());
  const pid_t coordinator = (*cluster)->coordinator().pid();
  auto channel = grpc::CreateChannel((*cluster)->address(), grpc::InsecureChannelCredentials());

  std::mutex mu;
  std::map<grpc::StatusCode, long> codes;
  std::atomic<long> sent{0}, answered{0}, missing_retry_hint{0};
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  std::vector<std::thread> clients;
  for (int c = 0; c < 2 * kMaxInFlight; ++c) {
    clients.emplace_back([&, c] {
      auto stub = dapq::v1::Inference::NewStub(channel);
      for (int i = 0; std::chrono::steady_clock::now() < end; ++i) {
        dapq::v1::GenerateRequest r;
        r.set_text(absl::StrCat("Once upon a time, client ", c, " request ", i));
        r.set_max_new_tokens(8);
        grpc::ClientContext context;
        context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
        dapq::v1::CompleteResponse response;
        sent.fetch_add(1);
        const grpc::Status s = stub->Complete(&context, r, &response);
        answered.fetch_add(1);
        if (s.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED &&
            context.GetServerTrailingMetadata().count("retry-after-ms") == 0) {
          missing_retry_hint.fetch_add(1);
        }
        std::lock_guard<std::mutex> lock(mu);
        ++codes[s.error_code()];
      }
    });
  }
  // The coordinator's memory while the load runs: after a warm-up, then at the end.
  long rss_start = -1, rss_peak = 0;
  while (std::chrono::steady_clock::now() < end) {
    std::this_thread::sleep_for(std::chrono::seconds(1));  // sampling, not synchronising
    const long rss = RssKib(coordinator);
    if (rss_start < 0 && std::chrono::steady_clock::now() >
                             end - std::chrono::seconds(seconds) + std::chrono::seconds(5)) {
      rss_start = rss;
    }
    rss_peak = std::max(rss_peak, rss);
  }
  for (std::thread& t : clients) t.join();
  const long rss_end = RssKib(coordinator);

  EXPECT_EQ(sent.load(), answered.load());
  long ok = 0, exhausted = 0;
  for (const auto& [code, n] : codes) {
    if (code == grpc::StatusCode::OK) {
      ok = n;
    } else if (code == grpc::StatusCode::RESOURCE_EXHAUSTED) {
      exhausted = n;
    } else {
      ADD_FAILURE() << n << " calls ended with gRPC code " << code;
    }
  }
  EXPECT_GT(ok, 0);
  EXPECT_GT(exhausted, 0) << "twice the capacity must be turned away in part";
  EXPECT_EQ(missing_retry_hint.load(), 0);
  std::printf(
      "overload %d s, %d clients, max_in_flight %d: %ld OK, %ld RESOURCE_EXHAUSTED; "
      "coordinator RSS %ld KiB after warm-up, peak %ld KiB, end %ld KiB\n",
      seconds, 2 * kMaxInFlight, kMaxInFlight, ok, exhausted, rss_start, rss_peak, rss_end);
  // Bounded: the load adds no more than 64 MiB after warm-up (it is in the tens of MiB).
  ASSERT_GT(rss_start, 0);
  EXPECT_LT(rss_peak - rss_start, 64 << 10);

  // Still serving.
  grpc::ClientContext context;
  dapq::v1::GenerateRequest r;
  r.set_text("Lily");
  r.set_max_new_tokens(4);
  dapq::v1::CompleteResponse response;
  EXPECT_TRUE(dapq::v1::Inference::NewStub(channel)->Complete(&context, r, &response).ok());
}

}  // namespace
}  // namespace dapq
