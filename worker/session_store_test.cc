// File: worker/session_store_test.cc
// Sessions through the tiered store on the real model (TP=2, DapQ-compressed): saved KV spilled
// to the host or the disk tier comes back byte-identical and the session continues with exactly
// the tokens of a session that never left the device; a restart recovers disk-resident sessions;
// corrupted and missing blocks are detected and handled by the failed-load policy.
#include "worker/session_store.h"

#include <filesystem>
#include <fstream>

#include "gtest/gtest.h"
#include "kvstore/block_codec.h"
#include "tests/util/status_matchers.h"
#include "tests/util/test_paths.h"
#include "worker/llama2c_loader.h"
#include "worker/tokenizer.h"

namespace dapq::worker {
namespace {
using ::dapq::testing::IsOk;
using ::dapq::testing::StatusIs;

// Every test runs with the KV cache in fp32, bf16 and fp16: 2-byte caches are stored as they
// are (half the bytes) and restore bit for bit.
class SessionStoreTest : public ::testing::TestWithParam<kernels::DType> {
 protected:
  void SetUp() override {
    auto w = LoadLlama2cModel(dapq::testing::Stories260KPath());
    ASSERT_TRUE(w.ok());
    EngineOptions o;
    o.tp = 2;
    o.kv_dtype = GetParam();
    auto e = Engine::Create(std::make_shared<const ModelWeights>(*std::move(w)), o);
    ASSERT_TRUE(e.ok());
    engine_ = *std::move(e);
    auto tok = Tokenizer::Load(dapq::testing::Tok512Path(), 512);
    ASSERT_TRUE(tok.ok());
    turn1_ = tok->Encode(
        "Once upon a time, there was a little boy named Tim. Tim had a big red ball. He liked to "
        "play with his ball in the park every day. One day, his friend Sue came to the park.",
        true, false);
    turn2_ = tok->Encode("Then Tim said", false, false);
    options_.max_new_tokens = 12;
    options_.compression.method = compress::Method::kDapq;
    options_.compression.budget_tokens = 24;
    // The reference: one sequence that never leaves the device.
    auto ref = engine_->NewSequence();
    ASSERT_TRUE(engine_->Continue(*ref, turn1_, options_).ok());
    GenerateOptions second = options_;
    second.max_new_tokens = 20;
    auto r = engine_->Continue(*ref, turn2_, second);
    ASSERT_TRUE(r.ok());
    reference_tokens_ = r->tokens;
  }

  kvstore::KvStoreOptions StoreOptions(size_t device, size_t host) {
    kvstore::KvStoreOptions o;
    o.device.capacity_bytes = device;
    o.host.capacity_bytes = host;
    o.disk_dir = dir_;
    o.background = false;
    return o;
  }

  // Turn 1 in a fresh sequence, saved under "tim".
  std::unique_ptr<Sequence> SaveTurn1(kvstore::KvStore& store) {
    auto seq = engine_->NewSequence();
    EXPECT_TRUE(engine_->Continue(*seq, turn1_, options_).ok());
    EXPECT_THAT(SaveSession(*engine_, *seq, "tim", store), IsOk());
    EXPECT_THAT(store.Flush(), IsOk());
    EXPECT_THAT(store.Spill(), IsOk());
    return seq;
  }

  std::vector<int> ContinueTurn2(Sequence& seq) {
    GenerateOptions second = options_;
    second.max_new_tokens = 20;
    auto r = engine_->Continue(seq, turn2_, second);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? r->tokens : std::vector<int>{};
  }

  static void ExpectSameCaches(const Sequence& a, const Sequence& b) {
    ASSERT_EQ(a.next_position(), b.next_position());
    for (int r = 0; r < 2; ++r) {
      const KvCache& x = a.cache(r);
      const KvCache& y = b.cache(r);
      for (int l = 0; l < x.n_layers(); ++l) {
        for (int h = 0; h < x.kv_heads(); ++h) {
          ASSERT_TRUE(std::ranges::equal(x.positions(l, h), y.positions(l, h)));
          const int slots = static_cast<int>(x.positions(l, h).size());
          const size_t n = static_cast<size_t>(slots) * x.head_dim();
          std::vector<float> xk(n), xv(n), yk(n), yv(n);
          x.Gather(l, h, 0, slots, xk.data(), xv.data());
          y.Gather(l, h, 0, slots, yk.data(), yv.data());
          ASSERT_EQ(std::memcmp(xk.data(), yk.data(), n * sizeof(float)), 0);
          ASSERT_EQ(std::memcmp(xv.data(), yv.data(), n * sizeof(float)), 0);
        }
      }
    }
  }

  std::string dir_ = dapq::testing::MakeTempDir(
      std::string("sessions_") + ::testing::UnitTest::GetInstance()->current_test_info()->name());
  std::unique_ptr<Engine> engine_;
  std::vector<int> turn1_, turn2_, reference_tokens_;
  GenerateOptions options_;
};

TEST_P(SessionStoreTest, RestoredFromEveryTierContinuesIdentically) {
  struct Case {
    size_t device, host;
    int expect_tier;  // where the session's blocks end up
  };
  for (const Case& c :
       {Case{64 << 20, 64 << 20, 0}, Case{8 << 10, 64 << 20, 1}, Case{8 << 10, 8 << 10, 2}}) {
    SCOPED_TRACE(::testing::Message() << "tier " << c.expect_tier);
    ASSERT_OK_AND_ASSIGN(auto store, kvstore::KvStore::Open(StoreOptions(c.device, c.host)));
    auto saved = SaveTurn1(*store);
    int on_tier = 0;
    for (const std::string& key : store->KeysOf("tim"))
      on_tier += store->TierOf(key) == c.expect_tier;
    EXPECT_GT(on_tier, 0);
    ASSERT_OK_AND_ASSIGN(
        LoadResult loaded,
        LoadSession(*engine_, "tim", *store, FailedLoadPolicy::kFail, options_.compression));
    EXPECT_FALSE(loaded.recomputed);
    ExpectSameCaches(*saved, *loaded.sequence);
    EXPECT_EQ(ContinueTurn2(*loaded.sequence), reference_tokens_);
    ASSERT_THAT(store->EraseSession("tim"), IsOk());
  }
}

TEST_P(SessionStoreTest, DiskResidentSessionSurvivesRestart) {
  {
    ASSERT_OK_AND_ASSIGN(auto store, kvstore::KvStore::Open(StoreOptions(1024, 1024)));
    SaveTurn1(*store);
    ASSERT_THAT(store->PersistAll(), IsOk());  // graceful shutdown
    for (const std::string& key : store->KeysOf("tim")) ASSERT_EQ(store->TierOf(key), 2) << key;
  }
  ASSERT_OK_AND_ASSIGN(auto store, kvstore::KvStore::Open(StoreOptions(1024, 1024)));
  ASSERT_OK_AND_ASSIGN(
      LoadResult loaded,
      LoadSession(*engine_, "tim", *store, FailedLoadPolicy::kFail, options_.compression));
  EXPECT_EQ(ContinueTurn2(*loaded.sequence), reference_tokens_);
}

TEST_P(SessionStoreTest, CorruptedAndMissingBlocksFollowThePolicy) {
  ASSERT_OK_AND_ASSIGN(auto store, kvstore::KvStore::Open(StoreOptions(1024, 1024)));
  auto saved = SaveTurn1(*store);
  ASSERT_THAT(store->PersistAll(), IsOk());
  // Bit rot in one block file, a deleted one for the second round.
  {
    std::fstream f(dir_ + "/tim.r1.l3.h0.b0.t0.blk",
                   std::ios::in | std::ios::out | std::ios::binary);
    ASSERT_TRUE(f.good());
    f.seekp(80);
    f.put('\x55');
  }
  EXPECT_THAT(LoadSession(*engine_, "tim", *store, FailedLoadPolicy::kFail, options_.compression),
              StatusIs(absl::StatusCode::kDataLoss, ::testing::HasSubstr("tim.r1.l3.h0.b0")));
  ASSERT_OK_AND_ASSIGN(
      LoadResult loaded,
      LoadSession(*engine_, "tim", *store, FailedLoadPolicy::kRecompute, options_.compression));
  EXPECT_TRUE(loaded.recomputed);
  EXPECT_THAT(loaded.failure, ::testing::HasSubstr("checksum"));
  ExpectSameCaches(*saved, *loaded.sequence);  // the replay rebuilds the same cache
  EXPECT_EQ(ContinueTurn2(*loaded.sequence), reference_tokens_);

  SaveTurn1(*store);
  ASSERT_THAT(store->PersistAll(), IsOk());
  std::filesystem::remove(dir_ + "/tim.r0.l0.h1.b1.t0.blk");
  EXPECT_THAT(LoadSession(*engine_, "tim", *store, FailedLoadPolicy::kFail, options_.compression),
              StatusIs(absl::StatusCode::kDataLoss, ::testing::HasSubstr("missing")));
  ASSERT_OK_AND_ASSIGN(loaded, LoadSession(*engine_, "tim", *store, FailedLoadPolicy::kRecompute,
                                           options_.compression));
  EXPECT_TRUE(loaded.recomputed);
  EXPECT_EQ(ContinueTurn2(*loaded.sequence), reference_tokens_);
}

// Blocks of session "inc" written by the save of `turn` (their keys end in ".t<turn>").
int BlocksWrittenAt(const kvstore::KvStore& store, int turn) {
  int n = 0;
  for (const std::string& key : store.KeysOf("inc")) {
    n += key.find(".b") != std::string::npos && key.ends_with(absl::StrCat(".t", turn));
  }
  return n;
}

size_t UsedBytes(const kvstore::KvStore& store) {
  size_t used = 0;
  for (const kvstore::TierStats& t : store.Stats()) used += t.used_bytes;
  return used;
}

// Twelve uncompressed turns saved one after the other: each save writes the blocks its turn
// changed (the last partial block and the new ones), not the history; the session loads and
// continues exactly; and a save that runs out of room midway leaves the previous one loadable.
TEST_P(SessionStoreTest, IncrementalSavesWriteOnlyWhatChangedAndFailSafely) {
  ASSERT_OK_AND_ASSIGN(auto store, kvstore::KvStore::Open(StoreOptions(1 << 24, 1 << 24)));
  GenerateOptions plain;
  plain.max_new_tokens = 6;
  plain.stop_at_stop_tokens = false;
  const ModelConfig& c = engine_->config();
  const int slabs = c.n_layers * c.n_kv_heads;  // over both ranks
  auto seq = engine_->NewSequence();
  std::vector<size_t> used;
  for (int turn = 0; turn < 12; ++turn) {
    const std::vector<int> ask(turn1_.begin() + turn, turn1_.begin() + turn + 9);
    ASSERT_OK_AND_ASSIGN(GenerateResult r, engine_->Continue(*seq, ask, plain));
    ASSERT_THAT(EndSessionTurn(*engine_, *seq, r, "inc", store.get()).status(), IsOk());
    used.push_back(UsedBytes(*store));
    if (turn > 0) {
      // 15 new slots per slab reach into at most two 16-slot blocks.
      EXPECT_LE(BlocksWrittenAt(*store, turn), 2 * slabs) << "turn " << turn;
      EXPECT_GE(BlocksWrittenAt(*store, turn), slabs) << "turn " << turn;
    }
  }
  EXPECT_EQ(seq->next_position(), 12 * 15);
  // Nothing superseded is left: one key per block of the cache, the header and the records.
  const int blocks_now = slabs * ((12 * 15 + 15) / 16);
  EXPECT_EQ(static_cast<int>(store->KeysOf("inc").size()), blocks_now + 1 + 12);
  ASSERT_OK_AND_ASSIGN(LoadResult loaded,
                       LoadSession(*engine_, "inc", *store, FailedLoadPolicy::kFail, {}));
  EXPECT_FALSE(loaded.recomputed);
  ExpectSameCaches(*seq, *loaded.sequence);
  ASSERT_OK_AND_ASSIGN(GenerateResult a, engine_->Continue(*seq, turn2_, plain));
  ASSERT_OK_AND_ASSIGN(GenerateResult b, engine_->Continue(*loaded.sequence, turn2_, plain));
  EXPECT_EQ(a.tokens, b.tokens);

  // A store with room for turn 0's save and half of what turn 1's adds.
  const size_t room = used[0] + (used[1] - used[0]) / 2;
  ASSERT_OK_AND_ASSIGN(auto small, kvstore::KvStore::Open(StoreOptions(room, 64)));
  auto again = engine_->NewSequence();
  const std::vector<int> ask0(turn1_.begin(), turn1_.begin() + 9);
  ASSERT_OK_AND_ASSIGN(GenerateResult r0, engine_->Continue(*again, ask0, plain));
  ASSERT_THAT(EndSessionTurn(*engine_, *again, r0, "inc", small.get()).status(), IsOk());
  ASSERT_OK_AND_ASSIGN(LoadResult turn0,
                       LoadSession(*engine_, "inc", *small, FailedLoadPolicy::kFail, {}));
  const std::vector<int> ask1(turn1_.begin() + 1, turn1_.begin() + 10);
  ASSERT_OK_AND_ASSIGN(GenerateResult r1, engine_->Continue(*again, ask1, plain));
  EXPECT_THAT(EndSessionTurn(*engine_, *again, r1, "inc", small.get()).status(),
              StatusIs(absl::StatusCode::kResourceExhausted));
  ASSERT_OK_AND_ASSIGN(LoadResult after,
                       LoadSession(*engine_, "inc", *small, FailedLoadPolicy::kFail, {}));
  ExpectSameCaches(*turn0.sequence, *after.sequence);
}

TEST_P(SessionStoreTest, BadAndUnknownSessions) {
  ASSERT_OK_AND_ASSIGN(auto store, kvstore::KvStore::Open(StoreOptions(1 << 20, 1 << 20)));
  EXPECT_THAT(LoadSession(*engine_, "nobody", *store, FailedLoadPolicy::kFail, {}),
              StatusIs(absl::StatusCode::kNotFound, ::testing::HasSubstr("session_id")));
  auto seq = engine_->NewSequence();
  EXPECT_THAT(SaveSession(*engine_, *seq, "a/b", *store),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("session_id")));
  EXPECT_THAT(SaveSession(*engine_, *seq, "", *store),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(SaveSession(*engine_, *seq, "x", *store, 12),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("power of two")));
}

// Headers and turn records whose counts are negative (cast to size_t they would wrap the size
// checks), whose lengths are negative or whose turns do not follow each other are DataLoss,
// never an out-of-range read.
TEST_P(SessionStoreTest, MalformedManifestCountsAreDataLoss) {
  ASSERT_OK_AND_ASSIGN(auto store, kvstore::KvStore::Open(StoreOptions(1 << 20, 1 << 20)));
  const ModelConfig& c = engine_->config();
  const int tp = engine_->options().tp;
  const int slabs = engine_->local_ranks() * c.n_layers * (c.n_kv_heads / tp);
  const uint64_t model_fp = kvstore::Fingerprint(c.DebugString());
  auto put = [&](const std::string& key, int32_t layer, const std::vector<int32_t>& v) {
    const std::vector<float> payload(2 * v.size(), 0.0f);
    ASSERT_OK_AND_ASSIGN(std::string block,
                         kvstore::EncodeBlock({model_fp, 0, layer, 0, 1, 1}, v, payload));
    ASSERT_THAT(store->Put("evil", key, std::move(block)), IsOk());
  };
  // version, tp, layers, kv_heads, head_dim, tokens_per_block, next_position, compressed,
  // first turn, turns, the count of lengths, then the lengths.
  auto header = [&](int32_t first, int32_t turns, int32_t nl, std::vector<int32_t> lengths) {
    std::vector<int32_t> v = {2,     tp,    c.n_layers, c.n_kv_heads / tp, c.head_dim, 16, 4, 0,
                              first, turns, nl};
    v.insert(v.end(), lengths.begin(), lengths.end());
    return v;
  };
  const std::vector<int32_t> zeros(slabs, 0);
  for (const std::vector<int32_t>& v :
       {header(0, 1, -1, {}), header(0, 1, 2, {0}), header(0, 1, 1, {-5}), header(-1, 1, 0, {}),
        header(3, 3, 0, {}), header(0, 1 << 20, 0, {})}) {
    put("evil.m", -1, v);
    EXPECT_THAT(LoadSession(*engine_, "evil", *store, FailedLoadPolicy::kRecompute, {}),
                StatusIs(absl::StatusCode::kDataLoss, ::testing::HasSubstr("malformed")));
  }
  // A valid header; then turn records: version, turn, tokens_from, the count of tokens,
  // segments_from, the count of segments, the count of slabs, then tokens, (kind, length)
  // pairs and (length, first block) pairs.
  put("evil.m", -1, header(0, 1, slabs, zeros));
  auto record = [&](std::vector<int32_t> v) {
    put("evil.t0", -2, v);
    return LoadSession(*engine_, "evil", *store, FailedLoadPolicy::kRecompute, {});
  };
  EXPECT_THAT(LoadSession(*engine_, "evil", *store, FailedLoadPolicy::kRecompute, {}),
              StatusIs(absl::StatusCode::kDataLoss, ::testing::HasSubstr("evil.t0 is missing")));
  for (const std::vector<int32_t>& v : {std::vector<int32_t>{2, 0, 0, -2, 0, 1, 0, 0, 4},
                                        {2, 0, 0, 0, 0, -1, 2, 0, 0, 0, 0},
                                        {2, 0, 0, 1, 0, 0, 0},
                                        {2, 0, 0, 0, 0, 1, 0, 9, 4},
                                        {2, 0, 0, 0, 0, 1, 0, 0, -3},
                                        {2, 1, 0, 0, 0, 0, 0}}) {
    EXPECT_THAT(record(v),
                StatusIs(absl::StatusCode::kDataLoss, ::testing::HasSubstr("malformed")));
  }
  // Well formed, but not what the header says: a history that starts mid-way, other slabs.
  EXPECT_THAT(record({2, 0, 5, 0, 0, 0, 0}),
              StatusIs(absl::StatusCode::kDataLoss, ::testing::HasSubstr("does not follow")));
}

// Found by tests/fuzz/session_manifest_fuzzer (in the first manifest format): a slab length near
// INT32_MAX plus a large tokens_per_block overflowed the block count (an int). Lengths past the
// model's context are now DataLoss before any block count is formed.
TEST_P(SessionStoreTest, HugeManifestLengthsAreReadNotWrapped) {
  ASSERT_OK_AND_ASSIGN(auto store, kvstore::KvStore::Open(StoreOptions(1 << 20, 1 << 20)));
  const ModelConfig& c = engine_->config();
  const int tp = engine_->options().tp;
  const int kv_heads = c.n_kv_heads / tp;
  const int slabs = tp * c.n_layers * kv_heads;
  const uint64_t model_fp = kvstore::Fingerprint(c.DebugString());
  auto put = [&](const std::string& key, int32_t layer, const std::vector<int32_t>& v) {
    const std::vector<float> payload(2 * v.size(), 0.0f);
    ASSERT_OK_AND_ASSIGN(std::string block,
                         kvstore::EncodeBlock({model_fp, 0, layer, 0, 1, 1}, v, payload));
    ASSERT_THAT(store->Put("huge", key, std::move(block)), IsOk());
  };
  std::vector<int32_t> header = {2, tp, c.n_layers, kv_heads, c.head_dim, 1 << 30,
                                 4, 0,  0,          1,        slabs};
  header.push_back(INT32_MAX);
  header.resize(header.size() + slabs - 1, 0);
  put("huge.m", -1, header);
  std::vector<int32_t> record = {2, 0, 0, 0, 0, 0, slabs, INT32_MAX, 0};
  for (int i = 1; i < slabs; ++i) record.insert(record.end(), {0, 0});
  put("huge.t0", -2, record);
  EXPECT_THAT(LoadSession(*engine_, "huge", *store, FailedLoadPolicy::kFail, {}),
              StatusIs(absl::StatusCode::kDataLoss, ::testing::HasSubstr("past the context")));
}

INSTANTIATE_TEST_SUITE_P(KvDtypes, SessionStoreTest,
                         ::testing::Values(kernels::DType::kF32, kernels::DType::kBF16,
                                           kernels::DType::kF16),
                         [](const ::testing::TestParamInfo<kernels::DType>& info) {
                           return std::string(kernels::DTypeName(info.param));
                         });

}  // namespace
}  // namespace dapq::worker
