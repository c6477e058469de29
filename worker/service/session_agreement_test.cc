// File: worker/service/session_agreement_test.cc
// A multi-process TP=2 group (forked ranks, Gloo over loopback) whose rank 1 cannot save a
// session (its KV store is too small): every rank must drop the session — rank 0 answers the
// turn with FailedPrecondition naming the other rank — and the group stays in step: the same
// session's next turn fails the same way instead of hanging on mismatched collectives, and a
// request without a session is served. And the same group keeping idle sessions in the ranks'
// pools: rank 0 decides which leave and every rank follows, with the same tokens either way.
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "gtest/gtest.h"
#include "kvstore/kv_store.h"
#include "prometheus/registry.h"
#include "tests/util/fork_ranks.h"
#include "tests/util/metric_values.h"
#include "tests/util/stories_model.h"
#include "tests/util/test_paths.h"
#include "worker/comm/gloo_communicator.h"
#include "worker/service/group_driver.h"
#include "worker/service/worker_metrics.h"
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

// One rank of a TP=2 group over Gloo (rendezvous under `dir`) and its engine on stories260K.
struct RankParts {
  std::unique_ptr<Communicator> comm;
  std::unique_ptr<Engine> engine;
};
absl::StatusOr<RankParts> ConnectRank(const std::string& dir, const std::string& group, int rank,
                                      std::shared_ptr<const ModelWeights> model) {
  GlooGroupOptions g;
  g.rank = rank;
  g.size = 2;
  g.rendezvous_dir = dir + "/rendezvous";
  g.group_id = group;
  g.timeout = absl::Seconds(60);
  RankParts parts;
  DAPQ_ASSIGN_OR_RETURN(parts.comm, ConnectGlooGroup(g));
  EngineOptions o;
  o.tp = 2;
  DAPQ_ASSIGN_OR_RETURN(
      parts.engine,
      Engine::CreateRank(std::move(model), o, std::make_unique<Borrowed>(parts.comm.get())));
  return parts;
}

TEST(SessionAgreementTest, ASaveThatFailsOnOneRankDropsTheSessionOnEveryRank) {
  const std::string dir = dapq::testing::MakeTempDir("session_agreement");
  auto model = dapq::testing::SharedStories260K();
  const std::vector<dapq::testing::RankOutcome> outcomes =
      dapq::testing::ForkRanks(dir, 2, [&](int rank) -> absl::Status {
        DAPQ_ASSIGN_OR_RETURN(RankParts parts, ConnectRank(dir, "agreement", rank, model));
        std::unique_ptr<Communicator>& comm = parts.comm;
        std::unique_ptr<Engine>& engine = parts.engine;
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

// Three turns of one session on a TP=2 group whose ranks keep idle sessions' KV in their pools up
// to `resident_session_bytes`: rank 0's report of each turn's status and tokens, then every
// rank's session-turn sources and evictions.
std::string RunResidentSessionGroup(const std::string& name, size_t resident_session_bytes) {
  const std::string dir = dapq::testing::MakeTempDir(name);
  auto model = dapq::testing::SharedStories260K();
  const std::vector<dapq::testing::RankOutcome> outcomes =
      dapq::testing::ForkRanks(dir, 2, [&](int rank) -> absl::Status {
        DAPQ_ASSIGN_OR_RETURN(RankParts parts, ConnectRank(dir, name, rank, model));
        std::unique_ptr<Communicator>& comm = parts.comm;
        std::unique_ptr<Engine>& engine = parts.engine;
        kvstore::KvStoreOptions so;
        so.background = false;
        DAPQ_ASSIGN_OR_RETURN(std::unique_ptr<kvstore::KvStore> store, kvstore::KvStore::Open(so));
        prometheus::Registry registry;
        WorkerMetrics metrics(registry, name, rank);
        GroupDriverOptions d;
        d.store = store.get();
        d.group_id = name;
        d.metrics = &metrics;
        d.resident_session_bytes = resident_session_bytes;
        DAPQ_ASSIGN_OR_RETURN(Tokenizer tok, Tokenizer::Load(dapq::testing::Tok512Path(), 512));
        GroupDriver driver(engine.get(), comm.get(), rank == 0 ? &tok : nullptr, d);
        absl::Status run;
        std::string report;
        if (rank == 0) {
          std::thread loop([&] { run = driver.RunDriver(); });
          for (const char* text : {"Once upon a time", " and then", " the end"}) {
            dapq::v1::GenerateRequest r = Turn("s1", text);
            r.set_max_new_tokens(8);
            absl::StatusOr<std::shared_ptr<RequestChannel>> channel = driver.Submit(r);
            if (!channel.ok()) return channel.status();
            StreamEvent event;
            std::string tokens;
            while ((*channel)->Pop(&event, std::chrono::seconds(60)) && !event.done) {
              absl::StrAppend(&tokens, event.token, " ");
            }
            absl::StrAppend(&report, absl::StatusCodeToString(event.status.code()), ": ", tokens,
                            "\n");
          }
          driver.Shutdown();
          loop.join();
        } else {
          run = driver.RunFollower();
        }
        const std::vector<prometheus::MetricFamily> families = registry.Collect();
        for (const char* source : {"pool", "store", "replay"}) {
          absl::StrAppend(&report, "rank ", rank, " ", source, " ",
                          dapq::testing::MetricValue(families, "dapq_worker_session_turns_total",
                                                     {{"source", source}}),
                          "\n");
        }
        absl::StrAppend(&report, "rank ", rank, " evicted ",
                        dapq::testing::MetricValue(families, "dapq_worker_sessions_evicted_total"),
                        "\n");
        const std::string path = absl::StrCat(dir, "/report", rank, ".txt");
        dapq::testing::WriteBytes(path, report.data(), report.size());
        return run;
      });
  for (const auto& o : outcomes) EXPECT_TRUE(o.ok()) << o.DebugString();
  return dapq::testing::ReadBytes(dir + "/report0.txt") +
         dapq::testing::ReadBytes(dir + "/report1.txt");
}

// Rank 0 decides which idle sessions leave the pools and every rank follows (SESSION_EVICT): a
// session kept in the pools continues from there on both ranks, one over the budget comes back
// from the store on both (whose restore agreement would otherwise run on one rank only and
// hang), and both give the same tokens.
TEST(SessionAgreementTest, EveryRankKeepsTheSameIdleSessionsInItsPool) {
  const std::string kept = RunResidentSessionGroup("resident_kept", 64ull << 20);
  const std::string evicted = RunResidentSessionGroup("resident_evicted", 1);
  const std::string turns = kept.substr(0, kept.find("rank 0"));
  size_t ok_turns = 0;
  for (size_t at = turns.find("OK: "); at != std::string::npos; at = turns.find("OK: ", at + 1)) {
    ++ok_turns;
  }
  EXPECT_EQ(ok_turns, 3u) << kept;
  EXPECT_EQ(evicted.substr(0, evicted.find("rank 0")), turns) << evicted;
  for (const char* rank : {"rank 0", "rank 1"}) {
    const std::string r(rank);
    EXPECT_NE(kept.find(r + " pool 2\n" + r + " store 0\n" + r + " replay 0\n" + r + " evicted 0"),
              std::string::npos)
        << kept;
    EXPECT_NE(
        evicted.find(r + " pool 0\n" + r + " store 2\n" + r + " replay 0\n" + r + " evicted 3"),
        std::string::npos)
        << evicted;
  }
}

}  // namespace
}  // namespace dapq::worker::service
