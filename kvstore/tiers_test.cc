// File: kvstore/tiers_test.cc
// Block codec and the memory and disk tiers: byte-identical round trips, capacity and
// watermarks, corrupted / truncated / missing block files detected, ENOSPC and short writes
// leaving nothing behind, and recovery after a restart; the disk tier's batch segments
// (PutBatch): round trip, restart, partial / corrupted segments, ENOSPC, deletion with the last
// live block.
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

// A crafted block whose header sizes multiply past 2^64 so that the wrapped total equals its
// real length, with a valid checksum: DataLoss, never a multi-gigabyte allocation or copy.
TEST(BlockCodecTest, HeaderSizesThatOverflowAreCorruptNotACrash) {
  const std::string real = MakeBlock(0, 1, 1);
  // 4 * n * (2 * kv_heads * head_dim + 1) = 2^64 + 4 * 115860 for these values (the header's own
  // bounds allow them): the wrapped total is 44 + 4 * 115860 + 8 bytes.
  const int32_t kv_heads = 16420, head_dim = 65508, num_tokens = 2143691284;
  std::string bytes = real.substr(0, 24);  // magic, version, fingerprints
  auto put = [&bytes](int32_t v) { bytes.append(reinterpret_cast<const char*>(&v), 4); };
  put(0);  // layer
  put(0);  // kv_head_begin
  put(kv_heads);
  put(head_dim);
  put(num_tokens);
  bytes.append(4 * 115860, '\0');
  const uint64_t sum = Fingerprint(bytes);  // the codec's checksum: xxh64 with its seed
  bytes.append(reinterpret_cast<const char*>(&sum), 8);
  EXPECT_THAT(DecodeBlock(bytes), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("2^64")));
  EXPECT_THAT(VerifyBlock(bytes), StatusIs(absl::StatusCode::kDataLoss));
}

// A block with no tokens (found by tests/fuzz/session_manifest_fuzzer: its decoder passed the
// null data() of the empty vectors to memcpy, undefined behaviour that UBSan reports) round
// trips in every element type.
TEST(BlockCodecTest, EmptyBlocksRoundTrip) {
  for (kernels::DType dtype : {kernels::DType::kF32, kernels::DType::kBF16, kernels::DType::kF16}) {
    SCOPED_TRACE(kernels::DTypeName(dtype));
    const BlockMeta meta{1, 2, -1, 0, 1, 1, dtype};
    ASSERT_OK_AND_ASSIGN(std::string bytes,
                         EncodeBlock(meta, std::span<const int32_t>(), std::span<const float>()));
    EXPECT_THAT(VerifyBlock(bytes), IsOk());
    ASSERT_OK_AND_ASSIGN(DecodedBlock b, DecodeBlock(bytes));
    EXPECT_EQ(b.meta, meta);
    EXPECT_TRUE(b.positions.empty());
    EXPECT_TRUE(b.payload.empty());
  }
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

// A bf16 or fp16 block stores half the payload bytes, decodes to the rounded values, and
// re-encodes byte-identically (rounding an already rounded value changes nothing); an unknown
// element type is DataLoss.
TEST(BlockCodecTest, TwoByteBlocksHalveThePayloadAndRoundTrip) {
  const std::string fp32 = MakeBlock(1, 16, 2);
  ASSERT_OK_AND_ASSIGN(DecodedBlock wide, DecodeBlock(fp32));
  const size_t payload_bytes = wide.payload.size() * sizeof(float);
  for (kernels::DType dtype : {kernels::DType::kBF16, kernels::DType::kF16}) {
    SCOPED_TRACE(kernels::DTypeName(dtype));
    BlockMeta meta = wide.meta;
    meta.dtype = dtype;
    ASSERT_OK_AND_ASSIGN(std::string bytes, EncodeBlock(meta, wide.positions, wide.payload));
    EXPECT_EQ(bytes.size(), fp32.size() - payload_bytes / 2);
    ASSERT_OK_AND_ASSIGN(DecodedBlock b, DecodeBlock(bytes));
    EXPECT_EQ(b.meta, meta);
    EXPECT_EQ(b.positions, wide.positions);
    ASSERT_EQ(b.payload.size(), wide.payload.size());
    for (size_t i = 0; i < b.payload.size(); ++i) {
      const float x = wide.payload[i];
      const float want = dtype == kernels::DType::kBF16
                             ? kernels::Bf16ToFloat(kernels::FloatToBf16(x))
                             : kernels::F16ToFloat(kernels::FloatToF16(x));
      ASSERT_EQ(b.payload[i], want) << i;
    }
    ASSERT_OK_AND_ASSIGN(std::string again, EncodeBlock(b.meta, b.positions, b.payload));
    EXPECT_EQ(again, bytes);
    std::string unknown = bytes;
    unknown[6] = 9;  // the element-type field
    EXPECT_THAT(DecodeBlock(unknown),
                StatusIs(absl::StatusCode::kDataLoss, HasSubstr("unknown element type 9")));
  }
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

std::vector<std::pair<std::string, std::string>> Batch(const std::string& prefix, int n,
                                                       uint64_t seed) {
  std::vector<std::pair<std::string, std::string>> blocks;
  for (int i = 0; i < n; ++i) {
    blocks.emplace_back(prefix + std::to_string(i), MakeBlock(i, 5 + i, seed + i));
  }
  return blocks;
}

int CountFiles(const std::string& dir, const std::string& suffix) {
  int n = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    n += name.size() >= suffix.size() &&
         name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
  }
  return n;
}

TEST_F(DiskTierTest, PutBatchWritesOneSegmentAndRoundTripsByteIdentical) {
  ASSERT_OK_AND_ASSIGN(auto tier, DiskTier::Open(options_, dir_, &env_));
  const auto blocks = Batch("s.b", 5, 20);
  size_t total = 0;
  for (const auto& [k, b] : blocks) total += b.size();
  ASSERT_THAT(tier->PutBatch(blocks), IsOk());
  EXPECT_EQ(CountFiles(dir_, ".seg"), 1);
  EXPECT_EQ(CountFiles(dir_, ".blk"), 0);
  EXPECT_EQ(tier->used_bytes(), total);
  EXPECT_EQ(tier->Keys().size(), 5u);
  for (const auto& [k, b] : blocks) {
    ASSERT_OK_AND_ASSIGN(std::string got, tier->Get(k));
    EXPECT_EQ(got, b) << k;
    EXPECT_NE(tier->SegmentPathOf(k), "");
  }
  // Distinct keys only; an empty batch is a no-op.
  EXPECT_THAT(tier->PutBatch({{"x", "1"}, {"x", "2"}}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("twice")));
  EXPECT_THAT(tier->PutBatch({}), IsOk());
  // A single Put of a key held in a segment replaces it there (block file wins).
  const std::string replacement = MakeBlock(9, 9, 99);
  ASSERT_THAT(tier->Put("s.b0", replacement), IsOk());
  EXPECT_EQ(tier->SegmentPathOf("s.b0"), "");
  ASSERT_OK_AND_ASSIGN(std::string got, tier->Get("s.b0"));
  EXPECT_EQ(got, replacement);
  // ... and a batch replaces a block file (which is then unlinked).
  ASSERT_THAT(tier->PutBatch({{"s.b0", blocks[0].second}}), IsOk());
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/s.b0.blk"));
  ASSERT_OK_AND_ASSIGN(got, tier->Get("s.b0"));
  EXPECT_EQ(got, blocks[0].second);
}

TEST_F(DiskTierTest, SegmentsSurviveRestartWithoutErasedOrReplacedBlocks) {
  const auto blocks = Batch("s.b", 4, 30);
  {
    ASSERT_OK_AND_ASSIGN(auto tier, DiskTier::Open(options_, dir_, &env_));
    ASSERT_THAT(tier->PutBatch(blocks), IsOk());
    ASSERT_THAT(tier->Put("single", MakeBlock(0, 3, 1)), IsOk());
    ASSERT_THAT(tier->Erase("s.b1"), IsOk());  // erased: must not come back
    ASSERT_THAT(tier->PutBatch({{"s.b2", MakeBlock(7, 7, 77)}}), IsOk());  // replaced
  }
  ASSERT_OK_AND_ASSIGN(auto tier, DiskTier::Open(options_, dir_, &env_));
  EXPECT_EQ(tier->recovery().recovered, 4);  // s.b0, s.b2 (new), s.b3, single
  EXPECT_EQ(tier->recovery().segments, 2);
  EXPECT_EQ(tier->recovery().discarded_corrupt, 0);
  EXPECT_FALSE(tier->Contains("s.b1"));
  ASSERT_OK_AND_ASSIGN(std::string got, tier->Get("s.b2"));
  EXPECT_EQ(got, MakeBlock(7, 7, 77));
  ASSERT_OK_AND_ASSIGN(got, tier->Get("s.b3"));
  EXPECT_EQ(got, blocks[3].second);
  // New segments after a restart do not reuse a live segment's number.
  ASSERT_THAT(tier->PutBatch(Batch("t.b", 2, 40)), IsOk());
  EXPECT_EQ(CountFiles(dir_, ".seg"), 3);
  ASSERT_OK_AND_ASSIGN(got, tier->Get("s.b0"));
  EXPECT_EQ(got, blocks[0].second);
}

TEST_F(DiskTierTest, RestartDiscardsPartialSegmentsAndKeepsWhatVerifies) {
  const auto blocks = Batch("s.b", 3, 50);
  std::string seg;
  {
    ASSERT_OK_AND_ASSIGN(auto tier, DiskTier::Open(options_, dir_, &env_));
    ASSERT_THAT(tier->PutBatch(blocks), IsOk());
    seg = tier->SegmentPathOf("s.b0");
  }
  // A crash mid-spill leaves a temp segment; a torn tail cuts the last block short.
  std::ofstream(dir_ + "/seg-9.seg.tmp") << "half a segment";
  std::filesystem::resize_file(seg, std::filesystem::file_size(seg) - 10);
  ASSERT_OK_AND_ASSIGN(auto tier, DiskTier::Open(options_, dir_, &env_));
  EXPECT_EQ(tier->recovery().discarded_temp, 1);
  EXPECT_EQ(tier->recovery().discarded_corrupt, 1);
  EXPECT_EQ(tier->recovery().recovered, 2);
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/seg-9.seg.tmp"));
  EXPECT_EQ(tier->Keys(), (std::vector<std::string>{"s.b0", "s.b1"}));
  ASSERT_OK_AND_ASSIGN(std::string got, tier->Get("s.b1"));
  EXPECT_EQ(got, blocks[1].second);
  // A segment with nothing valid left is deleted.
  std::filesystem::resize_file(seg, 12);
  ASSERT_OK_AND_ASSIGN(auto again, DiskTier::Open(options_, dir_, &env_));
  EXPECT_TRUE(again->Keys().empty());
  EXPECT_FALSE(std::filesystem::exists(seg));
}

TEST_F(DiskTierTest, CorruptedSegmentByteFailsOnlyThatBlock) {
  ASSERT_OK_AND_ASSIGN(auto tier, DiskTier::Open(options_, dir_, &env_));
  const auto blocks = Batch("s.b", 3, 60);
  ASSERT_THAT(tier->PutBatch(blocks), IsOk());
  const std::string seg = tier->SegmentPathOf("s.b1");
  // Bit rot in the middle of block s.b1's bytes on disk.
  const size_t header = 16, entry = 16;
  const size_t b1 = header + entry + blocks[0].first.size() + blocks[0].second.size() + entry +
                    blocks[1].first.size();
  {
    std::fstream f(seg, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(b1 + blocks[1].second.size() / 2));
    f.put('\x7f');
  }
  EXPECT_THAT(tier->Get("s.b1"), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("s.b1")));
  for (int i : {0, 2}) {
    ASSERT_OK_AND_ASSIGN(std::string got, tier->Get(blocks[i].first));
    EXPECT_EQ(got, blocks[i].second);
  }
  // Read faults through the range read as well.
  env_.corrupt_reads = 1;
  EXPECT_THAT(tier->Get("s.b0"), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("checksum")));
  env_.fail_reads_eio = 1;
  EXPECT_THAT(tier->Get("s.b0"), StatusIs(absl::StatusCode::kInternal, HasSubstr("Input/output")));
  std::filesystem::remove(seg);
  EXPECT_THAT(tier->Get("s.b2"), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("missing")));
}

TEST_F(DiskTierTest, FailedBatchStoresNothing) {
  ASSERT_OK_AND_ASSIGN(auto tier, DiskTier::Open(options_, dir_, &env_));
  ASSERT_THAT(tier->Put("kept", MakeBlock(0, 4, 70)), IsOk());
  const size_t used = tier->used_bytes();
  env_.fail_writes_enospc = 1;
  EXPECT_THAT(tier->PutBatch(Batch("a.b", 3, 71)),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       ::testing::AllOf(HasSubstr("batch of 3 blocks"), HasSubstr("a.b0"),
                                        HasSubstr("No space left"))));
  env_.short_writes = 1;
  EXPECT_THAT(tier->PutBatch(Batch("b.b", 3, 72)), StatusIs(absl::StatusCode::kInternal));
  env_.fail_renames = 1;
  EXPECT_THAT(tier->PutBatch(Batch("c.b", 3, 73)), StatusIs(absl::StatusCode::kInternal));
  // Over capacity: refused before any write.
  TierOptions small = options_;
  small.capacity_bytes = MakeBlock(0, 5, 1).size() + MakeBlock(1, 6, 1).size();
  ASSERT_OK_AND_ASSIGN(auto tiny, DiskTier::Open(small, dir_ + "/tiny", &env_));
  EXPECT_THAT(tiny->PutBatch(Batch("d.b", 3, 1)), StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_TRUE(tiny->Keys().empty());
  EXPECT_EQ(tiny->used_bytes(), 0u);
  EXPECT_EQ(tier->Keys(), std::vector<std::string>{"kept"});
  EXPECT_EQ(tier->used_bytes(), used);
  EXPECT_EQ(CountFiles(dir_, ".seg"), 0);
  EXPECT_EQ(CountFiles(dir_, ".tmp"), 0);
}

TEST_F(DiskTierTest, ErasingEveryBlockDeletesTheSegment) {
  ASSERT_OK_AND_ASSIGN(auto tier, DiskTier::Open(options_, dir_, &env_));
  const auto blocks = Batch("s.b", 3, 80);
  ASSERT_THAT(tier->PutBatch(blocks), IsOk());
  const std::string seg = tier->SegmentPathOf("s.b0");
  ASSERT_THAT(tier->Erase("s.b0"), IsOk());
  ASSERT_THAT(tier->Erase("s.b2"), IsOk());
  EXPECT_TRUE(std::filesystem::exists(seg));
  ASSERT_OK_AND_ASSIGN(std::string got, tier->Get("s.b1"));
  EXPECT_EQ(got, blocks[1].second);
  ASSERT_THAT(tier->Erase("s.b1"), IsOk());
  EXPECT_FALSE(std::filesystem::exists(seg));
  EXPECT_TRUE(std::filesystem::is_empty(dir_));  // the .dead list went with it
  EXPECT_EQ(tier->used_bytes(), 0u);
  EXPECT_THAT(tier->Erase("s.b1"), StatusIs(absl::StatusCode::kNotFound));
}

}  // namespace
}  // namespace dapq::kvstore
