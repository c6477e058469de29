// File: worker/comm/in_process_communicator_test.cc
// In-process collectives: sums computed from (seed, rank) as nccl-tests does, bit-identical on
// every rank, broadcast, abort releasing waiting ranks.
#include "worker/comm/in_process_communicator.h"

#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "tests/util/status_matchers.h"
#include "tests/util/tolerance.h"

namespace dapq::worker {
namespace {
using ::dapq::testing::StatusIs;

void RunRanks(int size, const std::function<void(Communicator&)>& fn) {
  auto group = CreateInProcessGroup(size);
  ASSERT_TRUE(group.ok());
  std::vector<std::thread> threads;
  for (auto& c : *group) threads.emplace_back([&fn, &c] { fn(*c); });
  for (auto& t : threads) t.join();
}

float Value(int rank, int i) {
  return 0.1f * static_cast<float>((rank * 7919 + i * 104729) % 1000);
}

TEST(InProcessCommunicatorTest, AllReduceSumsIdenticallyOnEveryRank) {
  for (int size : {1, 2, 3, 4}) {
    constexpr int kCount = 1001;
    std::vector<std::vector<float>> results(size);
    std::vector<std::vector<int64_t>> int_results(size);
    RunRanks(size, [&](Communicator& c) {
      std::vector<float> data(kCount);
      std::vector<int64_t> ints(kCount);
      for (int i = 0; i < kCount; ++i) {
        data[i] = Value(c.rank(), i);
        ints[i] = (int64_t{1} << 40) * (c.rank() + 1) + i;
      }
      for (int round = 0; round < 3; ++round) {
        EXPECT_TRUE(c.AllReduceSum(data.data(), data.size()).ok());
        EXPECT_TRUE(c.AllReduceSum(ints.data(), ints.size()).ok());
      }
      results[c.rank()] = data;
      int_results[c.rank()] = ints;
    });
    for (int i = 0; i < kCount; ++i) {
      float expected = Value(0, i);
      for (int r = 1; r < size; ++r) expected += Value(r, i);
      // Three rounds: each multiplies by `size` (exactly for these small sums of 0.1 multiples is
      // not guaranteed, so compare against the first rank bitwise and the value approximately:
      // size^3 non-negative terms, tests/util/tolerance.h).
      for (int r = 0; r < size; ++r) EXPECT_EQ(results[r][i], results[0][i]);
      const double want = static_cast<double>(expected) * size * size;
      EXPECT_NEAR(results[0][i], want, dapq::testing::Fp32Tolerance(want, size * size * size));
      int64_t isum = 0;
      for (int r = 0; r < size; ++r) isum += (int64_t{1} << 40) * (r + 1) + i;
      for (int r = 0; r < size; ++r) EXPECT_EQ(int_results[r][i], isum * size * size);
    }
  }
}

TEST(InProcessCommunicatorTest, BroadcastCopiesRootBuffer) {
  RunRanks(3, [](Communicator& c) {
    int value = c.rank() == 2 ? 42 : -1;
    EXPECT_TRUE(c.Broadcast(&value, sizeof(value), 2).ok());
    EXPECT_EQ(value, 42);
    EXPECT_THAT(c.Broadcast(&value, sizeof(value), 5),
                dapq::testing::StatusIs(absl::StatusCode::kInvalidArgument));
  });
}

TEST(InProcessCommunicatorTest, AbortReleasesWaitingRanks) {
  RunRanks(2, [](Communicator& c) {
    if (c.rank() == 1) {
      c.Abort();  // rank 1 failed and will not join the collective
      return;
    }
    float x = 1.0f;
    EXPECT_THAT(c.AllReduceSum(&x, 1), StatusIs(absl::StatusCode::kAborted));
  });
}

TEST(InProcessCommunicatorTest, SizeMustBePositive) {
  EXPECT_THAT(CreateInProcessGroup(0), StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace dapq::worker
