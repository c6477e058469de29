// File: kvstore/tiers_test.cc
// Block codec and the memory and disk tiers: byte-identical round trips, capacity and
// watermarks, corrupted / truncated / missing block files detected, ENOSPC and short writes
// leaving nothing behind, and recovery after a restart.
#include <filesystem>
#include <fstream>
#include <random>

#include "gtest/gtest.h"
#include "kvstore/block_codec.h"
#include "kvstore/disk_tier.h"
#include "kvstore/memory_tier.h"
#include "tests/util/fault_injection_env.h"
#include "tests/util/status_matchers.h"
#include "tests/util/test_paths.h"

namespace dapq::kvstore {
namespace {
using ::dapq::testing::IsOk;
using ::dapq::testing::StatusIs;
using ::testing::HasSubstr;

std::string MakeBlock(int layer, int tokens, uint64_t seed) {
  BlockMeta meta{Fingerprint("stories260K"), Fingerprint("dapq budget=24"), layer, 0, 2, 8};
  std::vector<int32_t> positions(tokens);
  for (int i = 0; i < tokens; ++i) positions[i] = 3 * i + 1;
  std::mt19937_64 rng(seed);
  std::vector<float> payload(2ull * 2 * tokens * 8);
  for (float& x : payload) x = static_cast<float>(rng() % 1000) / 7.0f;
  auto bytes = EncodeBlock(meta, positions, payload);
  EXPECT_TRUE(bytes.ok()) << bytes.status();
  return *bytes;
}

TEST(BlockCodecTest, RoundTripsAndDetectsDamage) {
  const std::string bytes = MakeBlock(3, 16, 1);
  ASSERT_OK_AND_ASSIGN(DecodedBlock b, DecodeBlock(bytes));
  EXPECT_EQ(b.meta.layer, 3);
  EXPECT_EQ(b.meta.model_fingerprint, Fingerprint("stories260K"));
  EXPECT_EQ(b.positions.size(), 16u);
  EXPECT_EQ(b.positions[5], 16);
  ASSERT_OK_AND_ASSIGN(std::string again, EncodeBlock(b.meta, b.positions, b.payload));
  EXPECT_EQ(again, bytes);  // byte-identical
  std::string flipped = bytes;
  flipped[100] ^= 1;
  EXPECT_THAT(DecodeBlock(flipped), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("checksum")));
  EXPECT_THAT(DecodeBlock(bytes.substr(0, bytes.size() - 5)),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("truncated")));
  EXPECT_THAT(DecodeBlock(bytes + "x"),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("oversized")));
  EXPECT_THAT(DecodeBlock("nonsense"), StatusIs(absl::StatusCode::kDataLoss));
  std::string magic = bytes;
  magic[0] = 'X';
  EXPECT_THAT(DecodeBlock(magic), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("magic")));
  BlockMeta bad{1, 2, 0, 0, 2, 8};
  std::vector<int32_t> pos(3);
  std::vector<float> payload(5);
  EXPECT_THAT(EncodeBlock(bad, pos, payload), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(MemoryTierTest, CapacityAndWatermarks) {
  ASSERT_OK_AND_ASSIGN(auto tier, MemoryTier::Create({"host", 5000, 0.6, 0.3}));
  const std::string b = MakeBlock(0, 16, 2);  // 2164 bytes
  ASSERT_THAT(tier->Put("a", b), IsOk());
  EXPECT_FALSE(tier->AboveHighWatermark());
  ASSERT_THAT(tier->Put("b", b), IsOk());
  EXPECT_TRUE(tier->AboveHighWatermark());
  EXPECT_THAT(tier->Put("c", b), StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("host")));
  EXPECT_FALSE(tier->Contains("c"));
  ASSERT_OK_AND_ASSIGN(std::string got, tier->Get("a"));
  EXPECT_EQ(got, b);
  ASSERT_THAT(tier->Erase("b"), IsOk());
  EXPECT_EQ(tier->used_bytes(), b.size());
  EXPECT_FALSE(tier->BelowLowWatermark());
  EXPECT_THAT(tier->Get("b"), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(MemoryTier::Create({"x", 10, 0.9, 0.95}),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

class DiskTierTest : public ::testing::Test {
 protected:
  std::string dir_ = dapq::testing::MakeTempDir(
      std::string("disk_tier_") + ::testing::UnitTest::GetInstance()->current_test_info()->name());
  dapq::testing::FaultInjectionEnv env_;
  TierOptions options_{"disk", 1 << 20, 0.9, 0.7};
};

TEST_F(DiskTierTest, RoundTripSurvivesRestart) {
  const std::string a = MakeBlock(1, 16, 3), b = MakeBlock(2, 7, 4);
  {
    ASSERT_OK_AND_ASSIGN(auto tier, DiskTier::Open(options_, dir_, &env_));
    ASSERT_THAT(tier->Put("s1.l1.b0", a), IsOk());
    ASSERT_THAT(tier->Put("s1.l2.b0", b), IsOk());
  }
  ASSERT_OK_AND_ASSIGN(auto tier, DiskTier::Open(options_, dir_, &env_));
  EXPECT_EQ(tier->recovery().recovered, 2);
  EXPECT_EQ(tier->used_bytes(), a.size() + b.size());
  ASSERT_OK_AND_ASSIGN(std::string got, tier->Get("s1.l1.b0"));
  EXPECT_EQ(got, a);
  ASSERT_THAT(tier->Erase("s1.l1.b0"), IsOk());
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/s1.l1.b0.blk"));
}

TEST_F(DiskTierTest, CorruptedTruncatedAndMissingFilesAreDetectedOnRead) {
  ASSERT_OK_AND_ASSIGN(auto tier, DiskTier::Open(options_, dir_, &env_));
  for (const char* key : {"corrupt", "truncated", "missing"}) {
    ASSERT_THAT(tier->Put(key, MakeBlock(0, 16, 5)), IsOk());
  }
  env_.corrupt_reads = 1;
  EXPECT_THAT(tier->Get("corrupt"), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("checksum")));
  std::filesystem::resize_file(dir_ + "/truncated.blk", 100);
  EXPECT_THAT(tier->Get("truncated"),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("truncated")));
  std::filesystem::remove(dir_ + "/missing.blk");
  EXPECT_THAT(tier->Get("missing"), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("missing")));
  env_.fail_reads_eio = 1;
  EXPECT_THAT(tier->Get("corrupt"),
              StatusIs(absl::StatusCode::kInternal, HasSubstr("Input/output")));
}

TEST_F(DiskTierTest, EnospcAndShortWritesLeaveNothingBehind) {
  ASSERT_OK_AND_ASSIGN(auto tier, DiskTier::Open(options_, dir_, &env_));
  env_.fail_writes_enospc = 1;
  EXPECT_THAT(tier->Put("k1", MakeBlock(0, 16, 6)),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       ::testing::AllOf(HasSubstr("k1"), HasSubstr("No space left"))));
  env_.short_writes = 1;
  EXPECT_THAT(tier->Put("k2", MakeBlock(0, 16, 7)), StatusIs(absl::StatusCode::kInternal));
  env_.fail_renames = 1;
  EXPECT_THAT(tier->Put("k3", MakeBlock(0, 16, 8)), StatusIs(absl::StatusCode::kInternal));
  EXPECT_TRUE(tier->Keys().empty());
  EXPECT_EQ(tier->used_bytes(), 0u);
  EXPECT_TRUE(std::filesystem::is_empty(dir_));
  EXPECT_THAT(tier->Put("bad/key", "x"), StatusIs(absl::StatusCode::kInvalidArgument));
  TierOptions small = options_;
  small.capacity_bytes = 100;
  ASSERT_OK_AND_ASSIGN(auto tiny, DiskTier::Open(small, dir_ + "/tiny", &env_));
  EXPECT_THAT(tiny->Put("big", MakeBlock(0, 16, 9)),
              StatusIs(absl::StatusCode::kResourceExhausted));
}

TEST_F(DiskTierTest, RestartDiscardsPartialWritesAndCorruptFiles) {
  {
    ASSERT_OK_AND_ASSIGN(auto tier, DiskTier::Open(options_, dir_, &env_));
    ASSERT_THAT(tier->Put("good", MakeBlock(0, 16, 10)), IsOk());
    ASSERT_THAT(tier->Put("bad", MakeBlock(0, 16, 11)), IsOk());
  }
  // A crash mid-spill leaves a temp file; bit rot damages a finished one.
  std::ofstream(dir_ + "/partial.blk.tmp") << "half a block";
  {
    std::fstream f(dir_ + "/bad.blk", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(64);
    f.put('\x7f');
  }
  ASSERT_OK_AND_ASSIGN(auto tier, DiskTier::Open(options_, dir_, &env_));
  EXPECT_EQ(tier->recovery().recovered, 1);
  EXPECT_EQ(tier->recovery().discarded_temp, 1);
  EXPECT_EQ(tier->recovery().discarded_corrupt, 1);
  EXPECT_EQ(tier->Keys(), std::vector<std::string>{"good"});
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/partial.blk.tmp"));
}

}  // namespace
}  // namespace dapq::kvstore
