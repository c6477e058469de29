// File: worker/comm/etcd_store_test.cc
// Gloo through etcd against a real etcd (tests/util/etcd_server.h). EtcdStore alone: set/get/
// wait, a second writer refused, a repeated set accepted, a wait timing out (DeadlineExceeded,
// "timeout" in Gloo's exception) and a failing check ending the wait (Aborted). Then real
// processes (fork, each in its own working directory, so nothing is shared but etcd): two ranks
// form a group with rank 1 started first and all-reduce exactly; a rank that dies and restarts
// alone forms the group again with the surviving rank 0 (a second incarnation). Afterwards only
// the incarnation counter remains in etcd.
#include "worker/comm/etcd_store.h"

#include <signal.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cluster/etcd_client.h"
#include "common/status_macros.h"
#include "gloo/common/error.h"
#include "gtest/gtest.h"
#include "tests/util/etcd_server.h"
#include "tests/util/fork_ranks.h"
#include "tests/util/status_matchers.h"
#include "tests/util/test_paths.h"
#include "worker/comm/gloo_communicator.h"

namespace dapq::worker {
namespace {
using ::dapq::testing::EtcdServer;
using ::dapq::testing::ForkRanks;
using ::dapq::testing::IsOk;
using ::dapq::testing::RankOutcome;
using ::dapq::testing::StatusIs;
using ::testing::HasSubstr;

std::shared_ptr<cluster::EtcdClient> Client(const EtcdServer& etcd) {
  absl::StatusOr<std::unique_ptr<cluster::EtcdClient>> c = cluster::EtcdClient::FromUrl(etcd.url());
  EXPECT_TRUE(c.ok()) << c.status();
  return std::shared_ptr<cluster::EtcdClient>(std::move(*c));
}

std::vector<char> Bytes(const std::string& s) { return std::vector<char>(s.begin(), s.end()); }

TEST(EtcdStoreTest, SetGetWaitAndErrors) {
  ASSERT_OK_AND_ASSIGN(auto etcd, EtcdServer::Start());
  auto client = Client(*etcd);
  EtcdStoreOptions options;
  options.prefix = "/s/";
  options.timeout = absl::Milliseconds(300);
  EtcdStore store(client, options);
  const std::string binary("a\0b\xff", 4);
  store.set("0", Bytes(binary));
  store.set("0", Bytes(binary));  // the same data again: a retried set
  EXPECT_EQ(store.get("0"), Bytes(binary));
  store.set("1", Bytes("x"));
  store.wait({"0", "1"});
  store.wait({"0"}, std::chrono::milliseconds(100));
  EXPECT_THAT(store.error(), IsOk());
  ASSERT_OK_AND_ASSIGN(std::optional<cluster::EtcdKeyValue> kv, client->Get("/s/1"));
  EXPECT_EQ(kv->value, "x");

  EXPECT_THROW(store.set("1", Bytes("other")), gloo::IoException);
  EXPECT_THAT(store.error(),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("already set")));

  EtcdStore waiting(client, options);
  try {
    waiting.wait({"0", "missing"});
    ADD_FAILURE() << "wait for a missing key returned";
  } catch (const gloo::IoException& e) {
    EXPECT_THAT(e.what(), HasSubstr("timeout"));
  }
  EXPECT_THAT(waiting.error(),
              StatusIs(absl::StatusCode::kDeadlineExceeded, HasSubstr("/s/missing")));

  options.timeout = absl::Seconds(30);
  options.check = [] { return absl::AbortedError("superseded"); };
  EtcdStore checked(client, options);
  const absl::Time start = absl::Now();
  EXPECT_THROW(checked.get("missing"), gloo::IoException);
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  EXPECT_THAT(checked.error(), StatusIs(absl::StatusCode::kAborted, HasSubstr("superseded")));
}

GlooGroupOptions Options(const std::string& url, int rank) {
  GlooGroupOptions o;
  o.rank = rank;
  o.size = 2;
  o.rendezvous_url = url;
  o.group_id = "tp0";
  o.timeout = absl::Seconds(60);
  return o;
}

// Each rank works in a directory of its own: the ranks share nothing but etcd.
absl::Status EnterOwnDir(const std::string& dir, int slot) {
  const std::string own = absl::StrCat(dir, "/cwd", slot);
  std::error_code ec;
  std::filesystem::create_directories(own, ec);
  if (ec || ::chdir(own.c_str()) != 0) return absl::InternalError("chdir " + own);
  return absl::OkStatus();
}

// rank r contributes r + 1 + i/8 at index i (exact in float); the sum over 2 ranks is 3 + i/4.
std::vector<float> Input(int rank, size_t n) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<float>(rank + 1) + static_cast<float>(i) / 8;
  return v;
}

absl::Status AllReduceAndCheck(Communicator& comm, int rank) {
  constexpr size_t kCount = 1031;
  std::vector<float> data = Input(rank, kCount);
  DAPQ_RETURN_IF_ERROR(comm.AllReduceSum(data.data(), data.size()));
  for (size_t i = 0; i < kCount; ++i) {
    const float want = 3.0f + static_cast<float>(i) / 4;
    if (data[i] != want) {
      return absl::InternalError(
          absl::StrCat("rank ", rank, ": [", i, "] = ", data[i], " != ", want));
    }
  }
  int64_t n = rank + 1;
  DAPQ_RETURN_IF_ERROR(comm.AllReduceSum(&n, 1));
  if (n != 3) return absl::InternalError(absl::StrCat("int64 sum ", n));
  return absl::OkStatus();
}

void ExpectOnlyTheCounter(cluster::EtcdClient& client, const std::string& value) {
  absl::StatusOr<cluster::EtcdRange> range = client.GetPrefix("/test/");
  ASSERT_TRUE(range.ok()) << range.status();
  ASSERT_EQ(range->kvs.size(), 1u) << "left behind: " << range->kvs.back().key;
  EXPECT_EQ(range->kvs[0].key, "/test/rendezvous/tp0/incarnation");
  EXPECT_EQ(range->kvs[0].value, value);
}

TEST(GlooEtcdRendezvousTest, TwoProcessesFormAGroupWithRank1StartedFirst) {
  ASSERT_OK_AND_ASSIGN(auto etcd, EtcdServer::Start());
  const std::string url = etcd->url("/test");
  const std::string dir = dapq::testing::MakeTempDir("gloo_etcd_two");
  int started[2];
  ASSERT_EQ(::pipe(started), 0);
  const auto outcomes = ForkRanks(dir, 2, [&](int rank) -> absl::Status {
    DAPQ_RETURN_IF_ERROR(EnterOwnDir(dir, rank));
    if (rank == 1) {
      ::close(started[0]);
      const char one = 1;
      if (::write(started[1], &one, 1) != 1) return absl::InternalError("pipe");
    } else {
      ::close(started[1]);
      char byte = 0;  // rank 0 begins only once rank 1 is on its way
      if (::read(started[0], &byte, 1) != 1) return absl::InternalError("pipe");
    }
    DAPQ_ASSIGN_OR_RETURN(auto comm, ConnectGlooGroup(Options(url, rank)));
    if (comm->rank() != rank || comm->size() != 2) return absl::InternalError("rank/size");
    DAPQ_RETURN_IF_ERROR(AllReduceAndCheck(*comm, rank));
    return comm->Barrier();
  });
  ::close(started[0]);
  ::close(started[1]);
  for (const RankOutcome& o : outcomes) EXPECT_TRUE(o.ok()) << o.DebugString();
  ExpectOnlyTheCounter(*Client(*etcd), "1");
}

TEST(GlooEtcdRendezvousTest, RankRestartedAloneFormsTheGroupAgain) {
  ASSERT_OK_AND_ASSIGN(auto etcd, EtcdServer::Start());
  const std::string url = etcd->url("/test");
  const std::string dir = dapq::testing::MakeTempDir("gloo_etcd_restart");
  int died[2];  // the first rank 1 says it is about to die; its replacement starts then
  ASSERT_EQ(::pipe(died), 0);
  // Slot 0: rank 0 throughout. Slot 1: the first rank 1, SIGKILLed after one round. Slot 2: the
  // restarted rank 1.
  const auto outcomes = ForkRanks(dir, 3, [&](int slot) -> absl::Status {
    DAPQ_RETURN_IF_ERROR(EnterOwnDir(dir, slot));
    if (slot == 0) {
      ::close(died[0]);
      ::close(died[1]);
      DAPQ_ASSIGN_OR_RETURN(auto comm, ConnectGlooGroup(Options(url, 0)));
      DAPQ_RETURN_IF_ERROR(AllReduceAndCheck(*comm, 0));
      // The peer dies: the next collective fails; form the group again.
      float x = 1;
      const absl::Status broken = comm->AllReduceSum(&x, 1);
      if (broken.ok()) return absl::InternalError("collective with a dead peer succeeded");
      comm.reset();
      DAPQ_ASSIGN_OR_RETURN(comm, ConnectGlooGroup(Options(url, 0)));
      DAPQ_RETURN_IF_ERROR(AllReduceAndCheck(*comm, 0));
      return comm->Barrier();
    }
    if (slot == 1) {
      ::close(died[0]);
      DAPQ_ASSIGN_OR_RETURN(auto comm, ConnectGlooGroup(Options(url, 1)));
      DAPQ_RETURN_IF_ERROR(AllReduceAndCheck(*comm, 1));
      const char one = 1;
      if (::write(died[1], &one, 1) != 1) return absl::InternalError("pipe");
      ::kill(::getpid(), SIGKILL);
      return absl::InternalError("survived SIGKILL");
    }
    ::close(died[1]);
    char byte = 0;
    if (::read(died[0], &byte, 1) != 1) return absl::InternalError("pipe");
    DAPQ_ASSIGN_OR_RETURN(auto comm, ConnectGlooGroup(Options(url, 1)));
    DAPQ_RETURN_IF_ERROR(AllReduceAndCheck(*comm, 1));
    return comm->Barrier();
  });
  ::close(died[0]);
  ::close(died[1]);
  EXPECT_TRUE(outcomes[0].ok()) << outcomes[0].DebugString();
  EXPECT_EQ(outcomes[1].signal, SIGKILL) << outcomes[1].DebugString();
  EXPECT_TRUE(outcomes[2].ok()) << outcomes[2].DebugString();
  ExpectOnlyTheCounter(*Client(*etcd), "2");
}

TEST(GlooEtcdRendezvousTest, ValidatesTheEtcdOptions) {
  GlooGroupOptions o = Options("etcds://127.0.0.1:1", 0);
  EXPECT_THAT(ConnectGlooGroup(o).status(), StatusIs(absl::StatusCode::kUnimplemented));
  o = Options("etcd://127.0.0.1:0", 0);
  EXPECT_THAT(ConnectGlooGroup(o).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("rendezvous_url")));
  o = Options("etcd://127.0.0.1:1", 0);
  o.group_id = "a/b";
  EXPECT_THAT(ConnectGlooGroup(o).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("group_id")));
  o = Options("", 0);
  EXPECT_THAT(ConnectGlooGroup(o).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("rendezvous_dir")));
}

}  // namespace
}  // namespace dapq::worker
