// File: worker/comm/gloo_communicator_test.cc
// The Gloo communicator with real processes on loopback (each test forks its ranks first):
// float sums bit-identical to the in-process communicator for groups of 2 and 3 (seeded inputs
// of mixed magnitudes, so that the order of the additions shows), exact int64 sums, broadcast
// from every root, barrier, Abort, a killed peer failing the others fast, a silent peer timing
// out, and option validation.
#include "worker/comm/gloo_communicator.h"

#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "gtest/gtest.h"
#include "tests/util/fork_ranks.h"
#include "tests/util/status_matchers.h"
#include "tests/util/test_paths.h"
#include "worker/comm/in_process_communicator.h"

namespace dapq::worker {
namespace {
using ::dapq::testing::ForkRanks;
using ::dapq::testing::RankOutcome;
using ::dapq::testing::StatusIs;
using ::testing::HasSubstr;

constexpr size_t kCounts[] = {1, 7, 1000, 100003};
constexpr int kRounds = 2;  // the second round reduces the first round's sums

GlooGroupOptions Options(const std::string& dir, int rank, int size) {
  GlooGroupOptions o;
  o.rank = rank;
  o.size = size;
  o.rendezvous_dir = dir + "/rendezvous";
  o.group_id = "test";
  o.timeout = absl::Seconds(60);
  return o;
}

// Values from (seed, rank, i) spanning 2^-12 .. 2^12 with both signs: float sums of these depend
// on the order of the additions.
std::vector<float> FloatInput(uint32_t seed, int rank, size_t count) {
  std::mt19937 gen(seed * 1000003u + static_cast<uint32_t>(rank));
  std::uniform_real_distribution<float> mantissa(-1.0f, 1.0f);
  std::uniform_int_distribution<int> exponent(-12, 12);
  std::vector<float> v(count);
  for (float& x : v) x = std::ldexp(mantissa(gen), exponent(gen));
  return v;
}

std::vector<int64_t> IntInput(int rank, size_t count) {
  std::vector<int64_t> v(count);
  for (size_t i = 0; i < count; ++i) {
    v[i] = (int64_t{1} << 50) * (rank + 1) - static_cast<int64_t>(i * 7919) * (rank % 2 ? 1 : -1);
  }
  return v;
}

std::string OutPath(const std::string& dir, const std::string& what, int rank, size_t count) {
  return absl::StrCat(dir, "/", what, "_r", rank, "_n", count, ".bin");
}

void ExpectAllOk(const std::vector<RankOutcome>& outcomes) {
  for (const RankOutcome& o : outcomes) EXPECT_TRUE(o.ok()) << o.DebugString();
}

// The in-process reference: the same inputs and rounds, ranks as threads.
std::vector<std::vector<float>> InProcessSums(int size, size_t count) {
  auto group = CreateInProcessGroup(size);
  EXPECT_TRUE(group.ok()) << group.status();
  std::vector<std::vector<float>> out(size);
  std::vector<std::thread> threads;
  for (int r = 0; r < size; ++r) {
    threads.emplace_back([&, r] {
      out[r] = FloatInput(7, r, count);
      for (int round = 0; round < kRounds; ++round) {
        EXPECT_TRUE((*group)[r]->AllReduceSum(out[r].data(), count).ok());
      }
    });
  }
  for (auto& t : threads) t.join();
  return out;
}

TEST(GlooCommunicatorTest, AllReduceBitIdenticalToInProcessAndExactInt64) {
  for (int size : {2, 3}) {
    SCOPED_TRACE(::testing::Message() << "size=" << size << " seed=7");
    const std::string dir = dapq::testing::MakeTempDir(absl::StrCat("gloo_allreduce_", size));
    std::vector<std::vector<std::vector<float>>> reference;
    const auto outcomes = ForkRanks(
        dir, size,
        [&](int rank) -> absl::Status {
          DAPQ_ASSIGN_OR_RETURN(auto comm, ConnectGlooGroup(Options(dir, rank, size)));
          if (comm->rank() != rank || comm->size() != size) {
            return absl::InternalError("wrong rank or size");
          }
          for (size_t count : kCounts) {
            std::vector<float> data = FloatInput(7, rank, count);
            std::vector<int64_t> ints = IntInput(rank, count);
            for (int round = 0; round < kRounds; ++round) {
              DAPQ_RETURN_IF_ERROR(comm->AllReduceSum(data.data(), count));
              DAPQ_RETURN_IF_ERROR(comm->AllReduceSum(ints.data(), count));
            }
            dapq::testing::WriteVector(OutPath(dir, "float", rank, count), data);
            dapq::testing::WriteVector(OutPath(dir, "int", rank, count), ints);
          }
          return comm->Barrier();
        },
        [&] {
          for (size_t count : kCounts) reference.push_back(InProcessSums(size, count));
        });
    ExpectAllOk(outcomes);
    for (size_t c = 0; c < std::size(kCounts); ++c) {
      const size_t count = kCounts[c];
      std::vector<int64_t> int_expected(count, 0);
      for (int r = 0; r < size; ++r) {
        const std::vector<int64_t> in = IntInput(r, count);
        for (size_t i = 0; i < count; ++i) int_expected[i] += in[i];
      }
      for (int64_t& x : int_expected) x *= size;  // the second round
      for (int r = 0; r < size; ++r) {
        SCOPED_TRACE(::testing::Message() << "count=" << count << " rank=" << r);
        const auto got = dapq::testing::ReadVector<float>(OutPath(dir, "float", r, count));
        ASSERT_EQ(got.size(), count);
        EXPECT_EQ(std::memcmp(got.data(), reference[c][r].data(), count * sizeof(float)), 0)
            << "not bit-identical to the in-process communicator";
        EXPECT_EQ(dapq::testing::ReadVector<int64_t>(OutPath(dir, "int", r, count)), int_expected);
      }
    }
  }
}

// The order matters for these inputs: a sum in another order differs somewhere (otherwise the
// bitwise comparison above would prove nothing).
TEST(GlooCommunicatorTest, InputsAreOrderSensitive) {
  const size_t count = 1000;
  std::vector<float> a = FloatInput(7, 0, count), b = FloatInput(7, 1, count),
                     c = FloatInput(7, 2, count);
  int differ = 0;
  for (size_t i = 0; i < count; ++i) differ += ((a[i] + b[i]) + c[i]) != ((c[i] + b[i]) + a[i]);
  EXPECT_GT(differ, 0);
}

TEST(GlooCommunicatorTest, BroadcastFromEveryRootBarrierAndAbort) {
  constexpr int kSize = 3;
  const std::string dir = dapq::testing::MakeTempDir("gloo_broadcast");
  auto pattern = [](int root, size_t i) { return static_cast<unsigned char>(root * 31 + i * 7); };
  const auto outcomes = ForkRanks(dir, kSize, [&](int rank) -> absl::Status {
    DAPQ_ASSIGN_OR_RETURN(auto comm, ConnectGlooGroup(Options(dir, rank, kSize)));
    for (int root = 0; root < kSize; ++root) {
      for (size_t bytes : {size_t{1}, size_t{13}, size_t{70001}}) {
        std::vector<unsigned char> buf(bytes, 0xEE);
        if (rank == root) {
          for (size_t i = 0; i < bytes; ++i) buf[i] = pattern(root, i);
        }
        DAPQ_RETURN_IF_ERROR(comm->Broadcast(buf.data(), bytes, root));
        for (size_t i = 0; i < bytes; ++i) {
          if (buf[i] != pattern(root, i)) {
            return absl::InternalError(absl::StrCat("root ", root, " bytes ", bytes, ": byte ", i));
          }
        }
        DAPQ_RETURN_IF_ERROR(comm->Barrier());
      }
    }
    int dummy = 0;
    absl::Status bad_root = comm->Broadcast(&dummy, sizeof(dummy), kSize);
    if (!absl::IsInvalidArgument(bad_root)) {
      return absl::InternalError(absl::StrCat("bad root gave ", bad_root.ToString()));
    }
    comm->Abort();
    float x = 1;
    const absl::Status after = comm->AllReduceSum(&x, 1);
    if (!absl::IsAborted(after) || !absl::IsAborted(comm->Barrier())) {
      return absl::InternalError(absl::StrCat("after Abort: ", after.ToString()));
    }
    return absl::OkStatus();
  });
  ExpectAllOk(outcomes);
}

// A peer whose process is killed closes its sockets: the others' pending or next collective
// fails with Unavailable well before the 60 s timeout, and every later one fails at once.
TEST(GlooCommunicatorTest, KilledPeerFailsTheOthersFast) {
  for (int size : {2, 3}) {
    SCOPED_TRACE(::testing::Message() << "size=" << size);
    const std::string dir = dapq::testing::MakeTempDir(absl::StrCat("gloo_killed_", size));
    const int victim = size - 1;
    const auto outcomes = ForkRanks(dir, size, [&](int rank) -> absl::Status {
      DAPQ_ASSIGN_OR_RETURN(auto comm, ConnectGlooGroup(Options(dir, rank, size)));
      std::vector<float> data = FloatInput(3, rank, 4096);
      DAPQ_RETURN_IF_ERROR(comm->AllReduceSum(data.data(), data.size()));
      if (rank == victim) kill(getpid(), SIGKILL);
      const auto t0 = std::chrono::steady_clock::now();
      absl::Status s;
      for (int i = 0; i < 100 && s.ok(); ++i) s = comm->AllReduceSum(data.data(), data.size());
      const double seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (s.ok()) return absl::InternalError("collectives kept succeeding without the peer");
      if (!absl::IsUnavailable(s)) {
        return absl::InternalError(absl::StrCat("expected Unavailable: ", s.ToString()));
      }
      if (!absl::StrContains(s.message(), absl::StrCat("(rank ", rank, " of ", size, ")"))) {
        return absl::InternalError(absl::StrCat("no rank context: ", s.ToString()));
      }
      if (seconds > 20) return absl::InternalError(absl::StrCat("took ", seconds, " s"));
      int64_t x = 1;
      const absl::Status next = comm->AllReduceSum(&x, 1);
      if (!absl::IsUnavailable(next)) {
        return absl::InternalError(absl::StrCat("next collective: ", next.ToString()));
      }
      return absl::OkStatus();
    });
    for (int r = 0; r < size; ++r) {
      if (r == victim) {
        EXPECT_FALSE(outcomes[r].exited);
        EXPECT_EQ(outcomes[r].signal, SIGKILL);
      } else {
        EXPECT_TRUE(outcomes[r].ok()) << outcomes[r].DebugString();
      }
    }
  }
}

// A peer that is alive but never joins the collective: DeadlineExceeded after the timeout.
TEST(GlooCommunicatorTest, SilentPeerTimesOut) {
  const std::string dir = dapq::testing::MakeTempDir("gloo_timeout");
  int release[2];
  ASSERT_EQ(pipe(release), 0);
  const auto outcomes = ForkRanks(
      dir, 2,
      [&](int rank) -> absl::Status {
        GlooGroupOptions o = Options(dir, rank, 2);
        o.timeout = absl::Milliseconds(500);
        if (rank == 1) close(release[1]);  // rank 0 holds the last write end
        DAPQ_ASSIGN_OR_RETURN(auto comm, ConnectGlooGroup(o));
        if (rank == 1) {
          char c;
          while (read(release[0], &c, 1) > 0) {
          }
          return absl::OkStatus();
        }
        float x = 1;
        const absl::Status s = comm->AllReduceSum(&x, 1);
        close(release[1]);
        if (!absl::IsDeadlineExceeded(s)) {
          return absl::InternalError(absl::StrCat("expected DeadlineExceeded: ", s.ToString()));
        }
        return absl::OkStatus();
      },
      [&] {
        close(release[0]);
        close(release[1]);
      });
  ExpectAllOk(outcomes);
}

TEST(GlooCommunicatorTest, BadOptionsNameTheField) {
  const std::string dir = dapq::testing::MakeTempDir("gloo_options");
  GlooGroupOptions o = Options(dir, 0, 2);
  o.rank = 2;
  EXPECT_THAT(ConnectGlooGroup(o), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("rank")));
  o.rank = -1;
  EXPECT_THAT(ConnectGlooGroup(o), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("rank")));
  o = Options(dir, 0, 0);
  EXPECT_THAT(ConnectGlooGroup(o), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("size")));
  o = Options(dir, 0, 2);
  o.rendezvous_dir.clear();
  EXPECT_THAT(ConnectGlooGroup(o),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("rendezvous_dir")));
  o = Options(dir, 0, 2);
  o.hostname.clear();
  EXPECT_THAT(ConnectGlooGroup(o),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("hostname")));
  o = Options(dir, 0, 2);
  o.timeout = absl::ZeroDuration();
  EXPECT_THAT(ConnectGlooGroup(o),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("timeout")));
}

TEST(GlooCommunicatorTest, GroupOfOneIsLocal) {
  const std::string dir = dapq::testing::MakeTempDir("gloo_one");
  ASSERT_OK_AND_ASSIGN(auto comm, ConnectGlooGroup(Options(dir, 0, 1)));
  std::vector<float> data = FloatInput(1, 0, 10);
  const std::vector<float> before = data;
  ASSERT_THAT(comm->AllReduceSum(data.data(), data.size()), dapq::testing::IsOk());
  EXPECT_EQ(data, before);
  int64_t x = 5;
  ASSERT_THAT(comm->AllReduceSum(&x, 1), dapq::testing::IsOk());
  EXPECT_EQ(x, 5);
  ASSERT_THAT(comm->Broadcast(&x, sizeof(x), 0), dapq::testing::IsOk());
  ASSERT_THAT(comm->Barrier(), dapq::testing::IsOk());
  comm->Abort();
  EXPECT_THAT(comm->Barrier(), StatusIs(absl::StatusCode::kAborted));
}

// Ranks that never arrive: the rendezvous gives up after the timeout. A group_id is for one
// attempt: joining it again as the same rank is refused.
TEST(GlooCommunicatorTest, RendezvousTimesOutAndGroupIdsAreSingleUse) {
  const std::string dir = dapq::testing::MakeTempDir("gloo_rendezvous");
  GlooGroupOptions o = Options(dir, 0, 2);
  o.timeout = absl::Milliseconds(100);
  EXPECT_THAT(ConnectGlooGroup(o), StatusIs(absl::StatusCode::kDeadlineExceeded,
                                            HasSubstr("gloo connect (rank 0 of 2")));
  EXPECT_THAT(ConnectGlooGroup(o),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("group_id")));
}

}  // namespace
}  // namespace dapq::worker
