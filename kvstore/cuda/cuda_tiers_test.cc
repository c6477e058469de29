// File: kvstore/cuda/cuda_tiers_test.cc
// GPU tests (label gpu; skipped without a CUDA device): the device and pinned host tiers pass
// the tier contract of the CPU tiers (kvstore/internal/tier_contract.h); bad devices and
// impossible capacities are clear errors; blocks larger than the staging buffer round-trip; the
// caller's current device is left alone; a KvStore with use_cuda spills device -> host -> disk
// and restores byte-identical blocks, in the foreground, in the background and after a restart.
#include "kvstore/cuda_tiers.h"

#include <cuda_runtime.h>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kvstore/internal/tier_contract.h"
#include "kvstore/kv_store.h"
#include "tests/util/cuda_test_util.h"
#include "tests/util/kv_blocks.h"
#include "tests/util/status_matchers.h"
#include "tests/util/test_paths.h"

namespace dapq::kvstore {
namespace {
using ::dapq::testing::IsOk;
using ::dapq::testing::StatusIs;
using internal::ContractBytes;
using ::testing::HasSubstr;

absl::StatusOr<std::unique_ptr<Tier>> MakeDeviceTier(const TierOptions& options) {
  return NewDeviceTier(options, 0);
}

absl::StatusOr<std::unique_ptr<Tier>> MakePinnedTier(const TierOptions& options) {
  return NewPinnedHostTier(options, 0);
}

TEST(CudaTiersTest, DeviceTierKeepsTheTierContract) {
  DAPQ_SKIP_IF_NO_CUDA();
  internal::ExpectTierContract(MakeDeviceTier);
}

TEST(CudaTiersTest, PinnedHostTierKeepsTheTierContract) {
  DAPQ_SKIP_IF_NO_CUDA();
  internal::ExpectTierContract(MakePinnedTier);
}

TEST(CudaTiersTest, BadDevicesAndImpossibleCapacitiesAreClearErrors) {
  DAPQ_SKIP_IF_NO_CUDA();
  const TierOptions options{"device", 1 << 20, 0.9, 0.7};
  EXPECT_THAT(NewDeviceTier(options, 4096),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("out of range")));
  EXPECT_THAT(NewDeviceTier(options, -1), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(NewPinnedHostTier(options, 4096), StatusIs(absl::StatusCode::kInvalidArgument));
  // 1 PiB of GPU memory: no device has it; the error names the tier and the CUDA call.
  EXPECT_THAT(NewDeviceTier({"device", 1ull << 50, 0.9, 0.7}, 0),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       ::testing::AllOf(HasSubstr("tier device"), HasSubstr("cudaMalloc"))));
  // The failed allocation left the context usable.
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Tier> tier, NewDeviceTier(options, 0));
  ASSERT_THAT(tier->Put("k", "bytes"), IsOk());
  ASSERT_OK_AND_ASSIGN(std::string got, tier->Get("k"));
  EXPECT_EQ(got, "bytes");
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
}

TEST(CudaTiersTest, BlocksLargerThanTheStagingBufferRoundTrip) {
  DAPQ_SKIP_IF_NO_CUDA();
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Tier> tier,
                       NewDeviceTier({"device", 16 << 20, 0.9, 0.7}, 0));
  const std::string big = ContractBytes((3 << 20) + 5, 1);  // staging starts at 1 MiB
  ASSERT_THAT(tier->Put("big", big), IsOk());
  ASSERT_THAT(tier->Put("small", ContractBytes(10, 2)), IsOk());
  ASSERT_OK_AND_ASSIGN(std::string got, tier->Get("big"));
  EXPECT_EQ(got, big);
  const std::string bigger = ContractBytes(9 << 20, 3);
  ASSERT_THAT(tier->Put("big", bigger), IsOk());
  ASSERT_OK_AND_ASSIGN(got, tier->Get("big"));
  EXPECT_EQ(got, bigger);
  ASSERT_OK_AND_ASSIGN(got, tier->Get("small"));
  EXPECT_EQ(got, ContractBytes(10, 2));
}

TEST(CudaTiersTest, CallersCurrentDeviceIsRestored) {
  DAPQ_SKIP_IF_NO_CUDA();
  int count = 0;
  ASSERT_EQ(cudaGetDeviceCount(&count), cudaSuccess);
  const int mine = count - 1;  // the tier works on device 0, the caller on the last one
  ASSERT_EQ(cudaSetDevice(mine), cudaSuccess);
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Tier> tier, NewDeviceTier({"device", 1 << 20, 0.9, 0.7}, 0));
  ASSERT_THAT(tier->Put("k", ContractBytes(1000, 1)), IsOk());
  ASSERT_OK_AND_ASSIGN(std::string got, tier->Get("k"));
  EXPECT_EQ(got, ContractBytes(1000, 1));
  int current = -1;
  ASSERT_EQ(cudaGetDevice(&current), cudaSuccess);
  EXPECT_EQ(current, mine);
  ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
}

std::string Block(uint64_t seed) { return dapq::testing::TestBlock(seed); }

KvStoreOptions CudaOptions(const std::string& dir) {
  KvStoreOptions o;
  const size_t b = Block(0).size();
  o.device = {"device", 4 * b, 0.76, 0.5};  // spill above 3 blocks, down to 2
  o.host = {"host", 4 * b, 0.76, 0.5};
  o.disk = {"disk", 100 * b, 0.95, 0.9};
  o.disk_dir = dir;
  o.background = false;
  o.use_cuda = true;
  o.cuda_device = 0;
  return o;
}

TEST(CudaKvStoreTest, SpillsDeviceToHostToDiskAndRestoresByteIdentical) {
  DAPQ_SKIP_IF_NO_CUDA();
  const std::string dir = dapq::testing::MakeTempDir("cuda_kv_store_spill");
  ASSERT_OK_AND_ASSIGN(auto store, KvStore::Open(CudaOptions(dir)));
  for (int i = 0; i < 10; ++i) {
    ASSERT_THAT(store->Put(absl::StrCat("s", i % 2), absl::StrCat("s", i % 2, ".b", i), Block(i)),
                IsOk());
  }
  ASSERT_THAT(store->Spill(), IsOk());
  const auto stats = store->Stats();
  ASSERT_EQ(stats.size(), 3u);
  EXPECT_EQ(stats[0].name, "device");
  EXPECT_LE(stats[0].blocks, 2);
  EXPECT_GT(stats[1].blocks, 0);  // some on the pinned host tier
  EXPECT_GT(stats[2].blocks, 0);  // some reached the disk
  EXPECT_EQ(stats[0].blocks + stats[1].blocks + stats[2].blocks, 10);
  for (int i = 0; i < 10; ++i) {
    const std::string key = absl::StrCat("s", i % 2, ".b", i);
    ASSERT_OK_AND_ASSIGN(std::string got, store->Get(key));
    EXPECT_EQ(got, Block(i)) << key;
    EXPECT_EQ(store->TierOf(key), 0);  // promoted to the GPU on access
  }
}

TEST(CudaKvStoreTest, BackgroundSpillPrefetchAndRestart) {
  DAPQ_SKIP_IF_NO_CUDA();
  const std::string dir = dapq::testing::MakeTempDir("cuda_kv_store_background");
  {
    KvStoreOptions o = CudaOptions(dir);
    o.background = true;
    ASSERT_OK_AND_ASSIGN(auto store, KvStore::Open(o));
    for (int i = 0; i < 8; ++i) {
      ASSERT_THAT(store->Put("a", absl::StrCat("a.", i), Block(i)), IsOk());
      store->ScheduleSpill();
    }
    ASSERT_THAT(store->Flush(), IsOk());
    EXPECT_LE(store->Stats()[0].blocks, 3);
    store->Prefetch("a");
    ASSERT_THAT(store->Flush(), IsOk());
    for (int i = 0; i < 8; ++i) {
      ASSERT_OK_AND_ASSIGN(std::string got, store->Get(absl::StrCat("a.", i)));
      EXPECT_EQ(got, Block(i)) << i;
    }
    ASSERT_THAT(store->PersistAll(), IsOk());
  }
  ASSERT_OK_AND_ASSIGN(auto store, KvStore::Open(CudaOptions(dir)));
  for (int i = 0; i < 8; ++i) {
    ASSERT_OK_AND_ASSIGN(std::string got, store->Get(absl::StrCat("a.", i)));
    EXPECT_EQ(got, Block(i)) << i;
  }
}

TEST(CudaKvStoreTest, BadCudaDeviceNamesTheOption) {
  DAPQ_SKIP_IF_NO_CUDA();
  KvStoreOptions o = CudaOptions("");
  o.cuda_device = 4096;
  EXPECT_THAT(KvStore::Open(o),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       ::testing::AllOf(HasSubstr("use_cuda"), HasSubstr("out of range"))));
}

}  // namespace
}  // namespace dapq::kvstore
