// File: worker/service/session_agreement_test.cc
// A multi-process TP=2 group (forked ranks, Gloo over loopback) whose rank 1 cannot save a
// session (its KV store is too small): every rank must drop the session — rank 0 answers the
// turn with FailedPrecondition naming the other rank — and the group stays in step: the same
// session's next turn fails the same way instead of hanging on mismatched collectives, and a
// request without a session is served.
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "gtest/gtest.h"
#include "kvstore/kv_store.h"
#include "tests/util/fork_ranks.h"
#include "tests/util/stories_model.h"
#include "tests/util/test_paths.h"
#include "worker/comm/gloo_communicator.h"
#include "worker/service/group_driver.h"
#include "worker/tokenizer.h"

namespace dapq::worker::service {
namespace {

// The engine owns its communicator; the driver needs the same one: lend it.
class Borrowed final : public Communicator {
 public:
  explicit Borrowed(Communicator* c) : c_(c) {}
  int rank() const override { return c_->rank(); }
  int size() const override { return c_->size(); }
  absl::Status AllReduceSum(float* d, size_t n) override { return c_->AllReduceSum(d, n); }
  absl::Status AllReduceSum(int64_t* d, size_t n) override { return c_->AllReduceSum(d, n); }
  absl::Status Broadcast(void* d, size_t b, int root) override { return c_->Broadcast(d, b, root); }
  absl::Status Barrier() override { return c_->Barrier(); }
  void Abort() override { c_->Abort(); }

 private:
  Communicator* const c_;
};

// Submits `request` and waits for its final event.
StreamEvent RunToEnd(GroupDriver& driver, dapq::v1::GenerateRequest request) {
  absl::StatusOr<std::shared_ptr<RequestChannel>> channel = driver.Submit(std::move(request));
  StreamEvent event;
  if (!channel.ok()) {
    event.done = true;
    event.status = channel.status();
    return event;
  }
  while (!((*channel)->Pop(&event, std::chrono::milliseconds(100)) && event.done)) {
  }
  return event;
}

dapq::v1::GenerateRequest Turn(const std::string& session, const std::string& text) {
  dapq::v1::GenerateRequest r;
  r.set_text(text);
  r.set_max_new_tokens(4);
  r.set_session_id(session);
  r.set_ignore_stop_tokens(true);
  return r;
}

TEST(SessionAgreementTest, ASaveThatFailsOnOneRankDropsTheSessionOnEveryRank) {
  const std::string dir = dapq::testing::MakeTempDir("session_agreement");
  auto model = dapq::testing::SharedStories260K();
  const std::vector<dapq::testing::RankOutcome> outcomes =
      dapq::testing::ForkRanks(dir, 2, [&](int rank) -> absl::Status {
        GlooGroupOptions g;
        g.rank = rank;
        g.size = 2;
        g.rendezvous_dir = dir + "/rendezvous";
        g.group_id = "agreement";
        g.timeout = absl::Seconds(60);
        DAPQ_ASSIGN_OR_RETURN(std::unique_ptr<Communicator> comm, ConnectGlooGroup(g));
        EngineOptions o;
        o.tp = 2;
        DAPQ_ASSIGN_OR_RETURN(std::unique_ptr<Engine> engine,
                              Engine::CreateRank(model, o, std::make_unique<Borrowed>(comm.get())));
        kvstore::KvStoreOptions so;
        so.background = false;
        if (rank == 1) {  // far too small for a session's blocks, and no tier below
          so.device.capacity_bytes = 64;
          so.host.capacity_bytes = 64;
        }
        DAPQ_ASSIGN_OR_RETURN(std::unique_ptr<kvstore::KvStore> store, kvstore::KvStore::Open(so));
        GroupDriverOptions d;
        d.store = store.get();
        d.group_id = "agreement";
        DAPQ_ASSIGN_OR_RETURN(Tokenizer tok, Tokenizer::Load(dapq::testing::Tok512Path(), 512));
        GroupDriver driver(engine.get(), comm.get(), rank == 0 ? &tok : nullptr, d);
        if (rank != 0) return driver.RunFollower();

        absl::Status run;
        std::thread loop([&] { run = driver.RunDriver(); });
        std::string report;
        for (const char* text : {"Once upon a time", " and then"}) {
          const StreamEvent done = RunToEnd(driver, Turn("s1", text));
          absl::StrAppend(&report, absl::StatusCodeToString(done.status.code()), ": ",
                          done.status.message(), "\n");
        }
        absl::StrAppend(&report, "sessions: ", driver.Status().sessions(), "\n");
        const StreamEvent plain = RunToEnd(driver, Turn("", "Lily"));
        absl::StrAppend(&report, "plain: ", absl::StatusCodeToString(plain.status.code()), " ",
                        plain.summary.generated_tokens(), "\n");
        driver.Shutdown();
        loop.join();
        dapq::testing::WriteBytes(dir + "/report.txt", report.data(), report.size());
        return run;
      });
  for (const auto& o : outcomes) EXPECT_TRUE(o.ok()) << o.DebugString();
  const std::string report = dapq::testing::ReadBytes(dir + "/report.txt");
  // Both turns: rank 1 could not save, so every rank dropped the session; no hang, no DATA_LOSS.
  EXPECT_EQ(report.find("FAILED_PRECONDITION"), 0u) << report;
  EXPECT_NE(report.find("other rank(s)"), std::string::npos) << report;
  const size_t second = report.find('\n') + 1;
  EXPECT_EQ(report.find("FAILED_PRECONDITION", second), second) << report;
  EXPECT_NE(report.find("sessions: 0"), std::string::npos) << report;
  EXPECT_NE(report.find("plain: OK 4"), std::string::npos) << report;
}

}  // namespace
}  // namespace dapq::worker::service
