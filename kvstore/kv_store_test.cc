// File: kvstore/kv_store_test.cc
// The tiered store: blocks spill device -> host -> disk under watermarks (idle sessions first,
// then LRU), come back byte-identical and promoted, survive a restart on disk, a failed spill
// (ENOSPC) leaves the block on its upper tier with a clear error, and many sessions spill and
// restore concurrently (run under ThreadSanitizer in CI). Spills to disk go in batches: one
// segment file per batch, the observer still told per block, a failed batch leaving every one
// of its blocks above. Shared blocks are stored once for all their holders, leave with the last
// one, spill and verify like any block, and are collected as orphans after a restart.
#include "kvstore/kv_store.h"

#include <filesystem>
#include <map>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kvstore/block_codec.h"
#include "tests/util/fault_injection_env.h"
#include "tests/util/kv_blocks.h"
#include "tests/util/status_matchers.h"
#include "tests/util/test_paths.h"

namespace dapq::kvstore {
namespace {
using ::dapq::testing::IsOk;
using ::dapq::testing::StatusIs;

std::string Block(uint64_t seed) { return dapq::testing::TestBlock(seed); }

KvStoreOptions SmallOptions(const std::string& dir, FileEnv* env = nullptr) {
  KvStoreOptions o;
  const size_t b = Block(0).size();
  o.device = {"device", 4 * b, 0.76, 0.5};  // spill above 3 blocks, down to 2
  o.host = {"host", 4 * b, 0.76, 0.5};
  o.disk = {"disk", 100 * b, 0.95, 0.9};
  o.disk_dir = dir;
  o.env = env;
  o.background = false;
  return o;
}

TEST(KvStoreTest, SpillsDownTheTiersAndRestoresByteIdentical) {
  const std::string dir = dapq::testing::MakeTempDir("kv_store_spill");
  ASSERT_OK_AND_ASSIGN(auto store, KvStore::Open(SmallOptions(dir)));
  for (int i = 0; i < 10; ++i) {
    ASSERT_THAT(store->Put(absl::StrCat("s", i % 2), absl::StrCat("s", i % 2, ".b", i), Block(i)),
                IsOk());
  }
  ASSERT_THAT(store->Spill(), IsOk());
  const auto stats = store->Stats();
  ASSERT_EQ(stats.size(), 3u);
  EXPECT_LE(stats[0].blocks, 2);
  EXPECT_GT(stats[2].blocks, 0);  // some reached the disk
  EXPECT_EQ(stats[0].blocks + stats[1].blocks + stats[2].blocks, 10);
  for (int i = 0; i < 10; ++i) {
    const std::string key = absl::StrCat("s", i % 2, ".b", i);
    ASSERT_OK_AND_ASSIGN(std::string got, store->Get(key));
    EXPECT_EQ(got, Block(i)) << key;
    EXPECT_EQ(store->TierOf(key), 0);  // promoted on access
  }
}

TEST(KvStoreTest, UseCudaNeedsACudaBuildAndAGpu) {
  KvStoreOptions o = SmallOptions("");
  o.use_cuda = true;
  absl::StatusOr<std::unique_ptr<KvStore>> store = KvStore::Open(o);
  // CUDA builds with a GPU open (cuda/cuda_tiers_test.cc covers them); every other build and
  // machine is told which option cannot be honoured.
  if (!DAPQ_HAVE_CUDA || !store.ok()) {
    EXPECT_THAT(store.status(),
                StatusIs(absl::StatusCode::kFailedPrecondition, ::testing::HasSubstr("use_cuda")));
  }
  if (!DAPQ_HAVE_CUDA) {
    EXPECT_THAT(store.status(), StatusIs(absl::StatusCode::kFailedPrecondition,
                                         ::testing::HasSubstr("DAPQ_HAVE_CUDA=0")));
  }
  o.cuda_device = -1;
  EXPECT_THAT(KvStore::Open(o),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("cuda_device")));
}

TEST(KvStoreTest, IdleSessionsSpillBeforeActiveOnes) {
  KvStoreOptions o = SmallOptions("");
  ASSERT_OK_AND_ASSIGN(auto store, KvStore::Open(o));
  store->SetActive("live", true);
  ASSERT_THAT(store->Put("live", "live.b0", Block(1)), IsOk());
  ASSERT_THAT(store->Put("idle", "idle.b0", Block(2)), IsOk());
  ASSERT_THAT(store->Put("idle", "idle.b1", Block(3)), IsOk());
  ASSERT_THAT(store->Put("live", "live.b1", Block(4)), IsOk());
  ASSERT_THAT(store->Spill(), IsOk());
  EXPECT_EQ(store->TierOf("live.b0"), 0);  // older, but active
  EXPECT_EQ(store->TierOf("live.b1"), 0);
  EXPECT_EQ(store->TierOf("idle.b0"), 1);
  EXPECT_EQ(store->TierOf("idle.b1"), 1);
}

TEST(KvStoreTest, FullStoreIsResourceExhausted) {
  KvStoreOptions o = SmallOptions("");
  ASSERT_OK_AND_ASSIGN(auto store, KvStore::Open(o));
  for (int i = 0; i < 8; ++i) ASSERT_THAT(store->Put("s", absl::StrCat("s.", i), Block(i)), IsOk());
  EXPECT_THAT(store->Put("s", "s.8", Block(8)), StatusIs(absl::StatusCode::kResourceExhausted));
}

TEST(KvStoreTest, EnospcDuringSpillKeepsTheBlockAbove) {
  const std::string dir = dapq::testing::MakeTempDir("kv_store_enospc");
  dapq::testing::FaultInjectionEnv env;
  ASSERT_OK_AND_ASSIGN(auto store, KvStore::Open(SmallOptions(dir, &env)));
  for (int i = 0; i < 8; ++i) ASSERT_THAT(store->Put("s", absl::StrCat("s.", i), Block(i)), IsOk());
  env.fail_writes_enospc = 100;
  EXPECT_THAT(store->Spill(), StatusIs(absl::StatusCode::kResourceExhausted,
                                       ::testing::HasSubstr("No space left on device")));
  int found = 0;
  for (int i = 0; i < 8; ++i) {
    const int t = store->TierOf(absl::StrCat("s.", i));
    EXPECT_TRUE(t == 0 || t == 1);
    ASSERT_OK_AND_ASSIGN(std::string got, store->Get(absl::StrCat("s.", i)));
    found += got == Block(i);
  }
  EXPECT_EQ(found, 8);  // nothing lost
}

TEST(KvStoreTest, DiskBlocksSurviveARestart) {
  const std::string dir = dapq::testing::MakeTempDir("kv_store_restart");
  {
    ASSERT_OK_AND_ASSIGN(auto store, KvStore::Open(SmallOptions(dir)));
    for (int i = 0; i < 10; ++i)
      ASSERT_THAT(store->Put("sess", absl::StrCat("sess.", i), Block(i)), IsOk());
    ASSERT_THAT(store->Spill(), IsOk());
  }
  ASSERT_OK_AND_ASSIGN(auto store, KvStore::Open(SmallOptions(dir)));
  const std::vector<std::string> keys = store->KeysOf("sess");
  EXPECT_FALSE(keys.empty());
  for (const std::string& k : keys) {
    ASSERT_OK_AND_ASSIGN(std::string got, store->Get(k));
    EXPECT_EQ(got, Block(std::stoi(k.substr(5))));
  }
}

TEST(KvStoreTest, SessionsListsRecoveredSessionsSoOrphansCanBeCollected) {
  const std::string dir = dapq::testing::MakeTempDir("kv_store_sessions");
  {
    ASSERT_OK_AND_ASSIGN(auto store, KvStore::Open(SmallOptions(dir)));
    EXPECT_TRUE(store->Sessions().empty());
    for (const char* s : {"b", "a"}) {
      for (int i = 0; i < 4; ++i) {
        ASSERT_THAT(store->Put(s, absl::StrCat(s, ".", i), Block(i)), IsOk());
      }
    }
    EXPECT_EQ(store->Sessions(), (std::vector<std::string>{"a", "b"}));
    ASSERT_THAT(store->Spill(), IsOk());
    ASSERT_THAT(store->PersistAll(), IsOk());
  }
  // A restarted worker finds both on disk and collects them (worker_main does this).
  ASSERT_OK_AND_ASSIGN(auto store, KvStore::Open(SmallOptions(dir)));
  ASSERT_EQ(store->Sessions(), (std::vector<std::string>{"a", "b"}));
  for (const std::string& s : store->Sessions()) ASSERT_THAT(store->EraseSession(s), IsOk());
  EXPECT_TRUE(store->Sessions().empty());
  for (const TierStats& t : store->Stats()) EXPECT_EQ(t.blocks, 0) << t.name;
}

// Shared blocks (content-addressed, refcounted by their holders).
std::string SharedKeyOf(const std::string& block) {
  return KvStore::SharedKey(KvStore::ContentIdOf(block));
}

size_t UsedBytes(const KvStore& store) {
  size_t used = 0;
  for (const TierStats& t : store.Stats()) used += t.used_bytes;
  return used;
}

TEST(KvStoreSharedTest, OneCopyForEveryHolderErasedWithTheLast) {
  ASSERT_OK_AND_ASSIGN(auto store, KvStore::Open(SmallOptions("")));
  const std::string block = Block(1);
  const std::string key = SharedKeyOf(block);
  EXPECT_TRUE(KvStore::IsSharedKey(key));
  EXPECT_EQ(key.size(), std::string(KvStore::kSharedKeyPrefix).size() + 32);
  EXPECT_NE(SharedKeyOf(Block(2)), key);
  ASSERT_THAT(store->PutShared("a", key, block), IsOk());
  ASSERT_THAT(store->PutShared("b", key, block), IsOk());
  ASSERT_THAT(store->PutShared("a", key, block), IsOk());  // idempotent
  EXPECT_EQ(store->SharedHolders(key), 2);
  EXPECT_EQ(store->shared_blocks(), 1);
  EXPECT_EQ(UsedBytes(*store), block.size());  // one copy on the tiers
  EXPECT_EQ(store->Stats()[0].blocks, 1);
  EXPECT_EQ(store->Stats()[0].shared_blocks, 1);
  EXPECT_EQ(store->Sessions(), (std::vector<std::string>{"a", "b"}));
  EXPECT_TRUE(store->HasSession("a"));
  EXPECT_TRUE(store->KeysOf("a").empty());  // held, not owned
  EXPECT_EQ(store->SharedKeysOf("b"), std::vector<std::string>{key});
  ASSERT_OK_AND_ASSIGN(std::string got, store->Get(key));
  EXPECT_EQ(got, block);

  // Misuse: a session's Put of a shared key, PutShared of a session key or without a holder.
  EXPECT_THAT(store->Put("a", key, block), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(store->Put("", "x.b0", block), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(store->PutShared("a", "a.b0", block), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(store->PutShared("", key, block), StatusIs(absl::StatusCode::kInvalidArgument));

  ASSERT_THAT(store->ReleaseShared("a", key), IsOk());
  ASSERT_THAT(store->ReleaseShared("a", key), IsOk());  // not held any more: a no-op
  EXPECT_EQ(store->SharedHolders(key), 1);
  EXPECT_EQ(store->Sessions(), std::vector<std::string>{"b"});
  ASSERT_OK_AND_ASSIGN(got, store->Get(key));
  EXPECT_EQ(got, block);
  ASSERT_THAT(store->ReleaseShared("b", key), IsOk());
  EXPECT_EQ(store->TierOf(key), -1);
  EXPECT_EQ(store->SharedHolders(key), 0);
  EXPECT_EQ(store->shared_blocks(), 0);
  EXPECT_EQ(UsedBytes(*store), 0u);
  EXPECT_TRUE(store->Sessions().empty());
  EXPECT_THAT(store->ReleaseShared("b", key), IsOk());  // absent
  EXPECT_THAT(store->Get(key), StatusIs(absl::StatusCode::kNotFound));
}

TEST(KvStoreSharedTest, EraseSessionReleasesItsHoldsOnly) {
  ASSERT_OK_AND_ASSIGN(auto store, KvStore::Open(SmallOptions("")));
  const std::string k1 = SharedKeyOf(Block(1)), k2 = SharedKeyOf(Block(2));
  ASSERT_THAT(store->Put("a", "a.m", Block(3)), IsOk());
  ASSERT_THAT(store->PutShared("a", k1, Block(1)), IsOk());
  ASSERT_THAT(store->PutShared("a", k2, Block(2)), IsOk());
  ASSERT_THAT(store->PutShared("b", k2, Block(2)), IsOk());
  ASSERT_THAT(store->EraseSession("a"), IsOk());
  EXPECT_EQ(store->TierOf("a.m"), -1);
  EXPECT_EQ(store->TierOf(k1), -1);  // a held it alone
  EXPECT_EQ(store->SharedHolders(k2), 1);
  ASSERT_OK_AND_ASSIGN(std::string got, store->Get(k2));
  EXPECT_EQ(got, Block(2));
  EXPECT_EQ(store->Sessions(), std::vector<std::string>{"b"});
  ASSERT_THAT(store->EraseSession("b"), IsOk());
  EXPECT_EQ(store->shared_blocks(), 0);
  EXPECT_EQ(UsedBytes(*store), 0u);
  EXPECT_TRUE(store->Sessions().empty());
}

TEST(KvStoreSharedTest, ActiveWhileAnyHolderIsActive) {
  ASSERT_OK_AND_ASSIGN(auto store, KvStore::Open(SmallOptions("")));
  const std::string shared = SharedKeyOf(Block(1));
  store->SetActive("live", true);
  ASSERT_THAT(store->PutShared("idle", shared, Block(1)), IsOk());  // the oldest block
  ASSERT_THAT(store->PutShared("live", shared, Block(1)), IsOk());
  for (int i = 0; i < 3; ++i) {
    ASSERT_THAT(store->Put("idle", absl::StrCat("idle.b", i), Block(10 + i)), IsOk());
  }
  ASSERT_THAT(store->Spill(), IsOk());
  EXPECT_EQ(store->TierOf(shared), 0);  // held by an active session
  EXPECT_EQ(store->TierOf("idle.b0"), 1);
  EXPECT_EQ(store->TierOf("idle.b1"), 1);
  // Without an active holder it is the least recently used block: the next to go.
  store->SetActive("live", false);
  ASSERT_THAT(store->Put("idle", "idle.b3", Block(13)), IsOk());
  ASSERT_THAT(store->Put("idle", "idle.b4", Block(14)), IsOk());
  ASSERT_THAT(store->Spill(), IsOk());
  EXPECT_EQ(store->TierOf(shared), 1);
}

TEST(KvStoreSharedTest, SpillToDiskVerifiedAndOrphansCollectedAfterARestart) {
  const std::string dir = dapq::testing::MakeTempDir("kv_store_shared");
  std::vector<std::string> keys;
  {
    ASSERT_OK_AND_ASSIGN(auto store, KvStore::Open(SmallOptions(dir)));
    for (int i = 0; i < 12; ++i) {
      const std::string key = SharedKeyOf(Block(i));
      keys.push_back(key);
      for (const char* holder : {"a", "b", "c"}) {
        ASSERT_THAT(store->PutShared(holder, key, Block(i)), IsOk());
      }
      ASSERT_THAT(store->Put("a", absl::StrCat("a.b", i), Block(100 + i)), IsOk());
    }
    ASSERT_THAT(store->Spill(), IsOk());
    int on_disk = 0;
    for (const std::string& key : keys) on_disk += store->TierOf(key) == 2;
    EXPECT_GT(on_disk, 0);
    EXPECT_EQ(store->Stats()[2].shared_blocks, on_disk);
    EXPECT_EQ(store->shared_blocks(), 12);
    EXPECT_EQ(UsedBytes(*store), 12 * Block(0).size() + 12 * Block(100).size());
    // Read back (the disk tier checksums each block) and promoted.
    for (int i = 0; i < 12; ++i) {
      if (store->TierOf(keys[i]) != 2) continue;
      ASSERT_OK_AND_ASSIGN(std::string got, store->Get(keys[i]));
      EXPECT_EQ(got, Block(i));
      EXPECT_EQ(store->TierOf(keys[i]), 0);
      break;
    }
    // A holder's prefetch promotes the shared blocks it holds.
    ASSERT_THAT(store->PersistAll(), IsOk());
    ASSERT_THAT(store->ReleaseShared("b", keys[0]), IsOk());
    ASSERT_THAT(store->ReleaseShared("c", keys[0]), IsOk());
    store->Prefetch("b");
    ASSERT_THAT(store->Flush(), IsOk());
    EXPECT_EQ(store->TierOf(keys[0]), 2);  // b let go of it
    int promoted = 0;
    for (size_t i = 1; i < keys.size(); ++i) promoted += store->TierOf(keys[i]) < 2;
    EXPECT_GT(promoted, 0);
    EXPECT_EQ(store->TierOf("a.b1"), 2);  // a's own blocks stay
    ASSERT_THAT(store->PersistAll(), IsOk());
  }
  // After a restart nobody holds them: listed under the shared owner and collected with it, as
  // worker_main collects every session it finds.
  ASSERT_OK_AND_ASSIGN(auto store, KvStore::Open(SmallOptions(dir)));
  EXPECT_EQ(store->shared_blocks(), 12);
  EXPECT_EQ(store->SharedHolders(keys[3]), 0);
  ASSERT_EQ(store->Sessions(), (std::vector<std::string>{KvStore::kSharedOwner, "a"}));
  ASSERT_OK_AND_ASSIGN(std::string got, store->Get(keys[5]));
  EXPECT_EQ(got, Block(5));
  for (const std::string& s : store->Sessions()) ASSERT_THAT(store->EraseSession(s), IsOk());
  EXPECT_TRUE(store->Sessions().empty());
  EXPECT_EQ(store->shared_blocks(), 0);
  for (const TierStats& t : store->Stats()) EXPECT_EQ(t.blocks, 0) << t.name;
  EXPECT_EQ(UsedBytes(*store), 0u);
}

struct Transfer {
  int from, to;
  size_t bytes;
  double seconds;
  absl::Status status;
};

class RecordingObserver : public KvStoreObserver {
 public:
  void OnTransfer(int from, int to, size_t bytes, double seconds,
                  const absl::Status& status) override {
    transfers.push_back({from, to, bytes, seconds, status});
  }
  void OnFailedLoad(int, const absl::Status&) override { ++failed_loads; }
  std::vector<Transfer> transfers;
  int failed_loads = 0;
};

int SegmentFiles(const std::string& dir) {
  int n = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    n += e.path().extension() == ".seg";
  }
  return n;
}

TEST(KvStoreTest, PersistAllWritesOneSegmentPerBatchAndReportsEachBlock) {
  const std::string dir = dapq::testing::MakeTempDir("kv_store_batch");
  RecordingObserver observer;
  KvStoreOptions o = SmallOptions(dir);
  o.observer = &observer;
  {
    ASSERT_OK_AND_ASSIGN(auto store, KvStore::Open(o));
    for (int i = 0; i < 6; ++i) {
      ASSERT_THAT(store->Put("s", absl::StrCat("s.", i), Block(i)), IsOk());
    }
    observer.transfers.clear();
    ASSERT_THAT(store->PersistAll(), IsOk());
    for (int i = 0; i < 6; ++i) EXPECT_EQ(store->TierOf(absl::StrCat("s.", i)), 2);
    // One segment per source tier (device, host): two fsyncs for six blocks.
    EXPECT_EQ(SegmentFiles(dir), 2);
    int to_disk = 0;
    for (const Transfer& t : observer.transfers) {
      EXPECT_THAT(t.status, IsOk());
      EXPECT_EQ(t.bytes, Block(0).size());
      EXPECT_GE(t.seconds, 0.0);
      to_disk += t.to == 2;
    }
    EXPECT_EQ(to_disk, 6);
  }
  ASSERT_OK_AND_ASSIGN(auto store, KvStore::Open(SmallOptions(dir)));
  for (int i = 0; i < 6; ++i) {
    ASSERT_OK_AND_ASSIGN(std::string got, store->Get(absl::StrCat("s.", i)));
    EXPECT_EQ(got, Block(i));
  }
  // Every block promoted off the disk: the segments are gone.
  EXPECT_EQ(SegmentFiles(dir), 0);
}

TEST(KvStoreTest, FailedBatchSpillLeavesEveryBlockAbove) {
  const std::string dir = dapq::testing::MakeTempDir("kv_store_batch_enospc");
  dapq::testing::FaultInjectionEnv env;
  RecordingObserver observer;
  KvStoreOptions o = SmallOptions(dir, &env);
  o.observer = &observer;
  ASSERT_OK_AND_ASSIGN(auto store, KvStore::Open(o));
  for (int i = 0; i < 3; ++i) ASSERT_THAT(store->Put("s", absl::StrCat("s.", i), Block(i)), IsOk());
  observer.transfers.clear();
  env.fail_writes_enospc = 1;
  EXPECT_THAT(store->PersistAll(),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       ::testing::AllOf(::testing::HasSubstr("batch of 3 blocks"),
                                        ::testing::HasSubstr("No space left on device"))));
  ASSERT_EQ(observer.transfers.size(), 3u);  // one failed transfer per block of the batch
  for (const Transfer& t : observer.transfers) {
    EXPECT_EQ(t.from, 0);
    EXPECT_EQ(t.to, 2);
    EXPECT_THAT(t.status, StatusIs(absl::StatusCode::kResourceExhausted));
  }
  for (int i = 0; i < 3; ++i) EXPECT_EQ(store->TierOf(absl::StrCat("s.", i)), 0);
  EXPECT_EQ(store->tier(2).used_bytes(), 0u);
  env.short_writes = 1;
  EXPECT_THAT(store->PersistAll(), StatusIs(absl::StatusCode::kInternal));
  for (int i = 0; i < 3; ++i) EXPECT_EQ(store->TierOf(absl::StrCat("s.", i)), 0);
  EXPECT_EQ(SegmentFiles(dir), 0);
  ASSERT_THAT(store->PersistAll(), IsOk());  // the disk has room again
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(store->TierOf(absl::StrCat("s.", i)), 2);
    ASSERT_OK_AND_ASSIGN(std::string got, store->Get(absl::StrCat("s.", i)));
    EXPECT_EQ(got, Block(i));
  }
}

TEST(KvStoreTest, PersistAllFillsADiskTooSmallForAWholeBatch) {
  const std::string dir = dapq::testing::MakeTempDir("kv_store_batch_partial");
  KvStoreOptions o = SmallOptions(dir);
  o.disk.capacity_bytes = 5 * Block(0).size();
  o.disk.high_watermark = o.disk.low_watermark = 1.0;
  ASSERT_OK_AND_ASSIGN(auto store, KvStore::Open(o));
  for (int i = 0; i < 6; ++i) ASSERT_THAT(store->Put("s", absl::StrCat("s.", i), Block(i)), IsOk());
  EXPECT_THAT(store->PersistAll(), StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_EQ(store->Stats()[2].blocks, 5);  // as many as fit, the rest stays above
  for (int i = 0; i < 6; ++i) {
    ASSERT_OK_AND_ASSIGN(std::string got, store->Get(absl::StrCat("s.", i)));
    EXPECT_EQ(got, Block(i));
  }
}

TEST(KvStoreTest, BackgroundSpillAndPrefetchWithFlush) {
  const std::string dir = dapq::testing::MakeTempDir("kv_store_background");
  KvStoreOptions o = SmallOptions(dir);
  o.background = true;
  ASSERT_OK_AND_ASSIGN(auto store, KvStore::Open(o));
  for (int i = 0; i < 6; ++i) ASSERT_THAT(store->Put("a", absl::StrCat("a.", i), Block(i)), IsOk());
  store->ScheduleSpill();
  ASSERT_THAT(store->Flush(), IsOk());
  EXPECT_LE(store->Stats()[0].blocks, 2);
  store->Prefetch("a");
  ASSERT_THAT(store->Flush(), IsOk());
  EXPECT_GE(store->Stats()[0].blocks, 3);
}

TEST(KvStoreTest, ManySessionsConcurrently) {
  const std::string dir = dapq::testing::MakeTempDir("kv_store_concurrent");
  KvStoreOptions o = SmallOptions(dir);
  o.background = true;
  o.disk.capacity_bytes = 1000 * Block(0).size();
  ASSERT_OK_AND_ASSIGN(auto store, KvStore::Open(o));
  std::vector<std::thread> threads;
  std::atomic<int> mismatches{0}, errors{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 25; ++i) {
        const std::string session = absl::StrCat("t", t);
        const std::string key = absl::StrCat(session, ".", i);
        if (!store->Put(session, key, Block(t * 100 + i)).ok()) ++errors;
        if (i % 5 == 0) store->ScheduleSpill();
        if (i % 7 == 0) store->Prefetch(session);
        auto got = store->Get(absl::StrCat(session, ".", i / 2));
        if (!got.ok()) {
          ++errors;
        } else if (*got != Block(t * 100 + i / 2)) {
          ++mismatches;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_THAT(store->Flush(), IsOk());
  EXPECT_EQ(errors.load(), 0);
  EXPECT_EQ(mismatches.load(), 0);
  int total = 0;
  for (const TierStats& s : store->Stats()) total += s.blocks;
  EXPECT_EQ(total, 100);
}

}  // namespace
}  // namespace dapq::kvstore

namespace dapq::kvstore {
namespace {

// Random puts, gets, erases, spills, activity changes and restarts against a model (key ->
// bytes): every stored block is found byte-identical; no tier exceeds its capacity; after a
// spill pass no tier is above its high watermark unless the tiers below are full; a full store
// answers ResourceExhausted and keeps everything it had.
TEST(KvStorePropertyTest, RandomOperationsMatchModel) {
  for (uint64_t seed : {11u, 12u, 13u}) {
    SCOPED_TRACE(::testing::Message() << "seed=" << seed);
    const std::string dir = dapq::testing::MakeTempDir(absl::StrCat("kv_store_property_", seed));
    std::mt19937_64 rng(seed);
    KvStoreOptions o = SmallOptions(dir);
    o.disk.capacity_bytes = 12 * Block(0).size();
    auto store_or = KvStore::Open(o);
    ASSERT_TRUE(store_or.ok());
    std::unique_ptr<KvStore> store = *std::move(store_or);
    std::map<std::string, int> model;  // key -> block seed
    int exhausted = 0;
    for (int step = 0; step < 400; ++step) {
      const int op = static_cast<int>(rng() % 10);
      const std::string session = absl::StrCat("s", rng() % 4);
      if (op < 4) {
        const std::string key = absl::StrCat(session, ".", rng() % 8);
        const int value = static_cast<int>(rng() % 1000);
        const absl::Status s = store->Put(session, key, Block(value));
        if (absl::IsResourceExhausted(s)) {
          ++exhausted;  // the model keeps the old value, if any: the store must too
        } else {
          ASSERT_THAT(s, IsOk());
          model[key] = value;
        }
      } else if (op < 7 && !model.empty()) {
        auto it = model.begin();
        std::advance(it, rng() % model.size());
        ASSERT_OK_AND_ASSIGN(std::string got, store->Get(it->first));
        ASSERT_EQ(got, Block(it->second)) << it->first;
      } else if (op == 7) {
        ASSERT_THAT(store->EraseSession(session), IsOk());
        for (auto it = model.begin(); it != model.end();) {
          it = it->first.rfind(session + ".", 0) == 0 ? model.erase(it) : std::next(it);
        }
      } else if (op == 8) {
        store->SetActive(session, rng() % 2);
        const absl::Status s = store->Spill();
        ASSERT_TRUE(s.ok() || absl::IsResourceExhausted(s)) << s;
      } else {
        // Graceful restart: memory tiers persist to disk when it has room.
        if (store->PersistAll().ok()) {
          store.reset();
          ASSERT_OK_AND_ASSIGN(store, KvStore::Open(o));
        }
      }
      const std::vector<TierStats> stats = store->Stats();
      int blocks = 0;
      for (const TierStats& t : stats) {
        ASSERT_LE(t.used_bytes, t.capacity_bytes) << t.name;
        blocks += t.blocks;
      }
      ASSERT_EQ(blocks, static_cast<int>(model.size()));
    }
    for (const auto& [key, value] : model) {
      ASSERT_OK_AND_ASSIGN(std::string got, store->Get(key));
      ASSERT_EQ(got, Block(value));
    }
    EXPECT_GT(exhausted, 0);
  }
}

}  // namespace
}  // namespace dapq::kvstore
