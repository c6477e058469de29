// File: worker/session_store_test.cc
// Sessions through the tiered store on the real model (TP=2, DapQ-compressed): saved KV spilled
// to the host or the disk tier comes back byte-identical and the session continues with exactly
// the tokens of a session that never left the device; a restart recovers disk-resident sessions;
// corrupted and missing blocks are detected and handled by the failed-load policy; all of it
// with the pool in a host arena and in a context arena (blocks saved through the pool's copy
// stream, restored through its copies). Sequences
// sharing a prompt prefix in the pool share its blocks in the store too (held once, refcounted
// by their sessions); version 2 manifests still load.
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

// The KV cache's element type, and whether its pool is a context arena (the device path's: the
// host reaches blocks only through the pool's copies, and saves copy blocks out on its copy
// stream) or a host arena.
struct KvLayout {
  kernels::DType dtype = kernels::DType::kF32;
  bool context_arena = false;
};
std::string KvLayoutName(const ::testing::TestParamInfo<KvLayout>& info) {
  return std::string(kernels::DTypeName(info.param.dtype)) +
         (info.param.context_arena ? "_context" : "");
}

// Every test runs with the KV cache in fp32, bf16 and fp16 (2-byte caches are stored as they are,
// half the bytes, and restore bit for bit), in a host arena and in a context arena.
class SessionStoreTest : public ::testing::TestWithParam<KvLayout> {
 protected:
  void SetUp() override {
    auto w = LoadLlama2cModel(dapq::testing::Stories260KPath());
    ASSERT_TRUE(w.ok());
    EngineOptions o;
    o.tp = 2;
    o.kv_dtype = GetParam().dtype;
    if (GetParam().context_arena) {
      o.placement = WeightPlacement::kUpload;
      o.kv_max_blocks = 4096;
    }
    auto e = Engine::Create(std::make_shared<const ModelWeights>(*std::move(w)), o);
    ASSERT_TRUE(e.ok());
    engine_ = *std::move(e);
    ASSERT_EQ(engine_->kv_pool(0).context_arena(), GetParam().context_arena);
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
          ASSERT_THAT(x.Gather(l, h, 0, slots, xk.data(), xv.data()), IsOk());
          ASSERT_THAT(y.Gather(l, h, 0, slots, yk.data(), yv.data()), IsOk());
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

// Sessions whose sequences share a prompt prefix in the block pool (the engine's prefix cache:
// several questions over one document) store each full prefix block once, held by all of them.
class SharedPrefixTest : public SessionStoreTest {
 protected:
  static constexpr int kSessions = 4;

  void SetUp() override {
    SessionStoreTest::SetUp();
    plain_.max_new_tokens = 6;
    plain_.stop_at_stop_tokens = false;
    // The document: turn 1 twice (about 90 tokens, five full 16-slot blocks), then a question.
    document_ = turn1_;
    document_.insert(document_.end(), turn1_.begin() + 1, turn1_.end());
    for (int i = 0; i < kSessions; ++i) {
      std::vector<int> prompt = document_;
      prompt.insert(prompt.end(), turn2_.begin() + i % turn2_.size(), turn2_.end());
      prompt.push_back(300 + i);
      prompts_.push_back(std::move(prompt));
    }
  }

  // Blocks of the document every session shares: full blocks, every slab of both ranks.
  int CommonBlocks() const {
    const ModelConfig& c = engine_->config();
    return c.n_layers * c.n_kv_heads * (static_cast<int>(document_.size()) / 16);
  }

  // Sessions "doc0" and "doc1": a turn each over prompts_[0] and prompts_[1] (the same document),
  // saved in `store`; their sequences in `seqs`.
  void SaveTwoSessions(kvstore::KvStore& store, std::vector<std::unique_ptr<Sequence>>& seqs) {
    for (int i = 0; i < 2; ++i) {
      seqs.push_back(engine_->NewSequence());
      ASSERT_OK_AND_ASSIGN(GenerateResult r, engine_->Continue(*seqs[i], prompts_[i], plain_));
      ASSERT_THAT(EndSessionTurn(*engine_, *seqs[i], r, absl::StrCat("doc", i), &store).status(),
                  IsOk());
    }
  }

  // Shared blocks of `store` held by exactly `holders` sessions.
  static int HeldBy(const kvstore::KvStore& store, const std::string& session, int holders) {
    int n = 0;
    for (const std::string& key : store.SharedKeysOf(session)) {
      n += store.SharedHolders(key) == holders;
    }
    return n;
  }

  GenerateOptions plain_;
  std::vector<int> document_;
  std::vector<std::vector<int>> prompts_;
};

TEST_P(SharedPrefixTest, EachPrefixBlockStoredOnceAndSessionsLoadIdentically) {
  ASSERT_OK_AND_ASSIGN(auto store, kvstore::KvStore::Open(StoreOptions(1 << 24, 1 << 24)));
  std::vector<std::unique_ptr<Sequence>> seqs;
  std::vector<std::string> ids;
  for (int i = 0; i < kSessions; ++i) {
    seqs.push_back(engine_->NewSequence());
    ASSERT_OK_AND_ASSIGN(GenerateResult r, engine_->Continue(*seqs[i], prompts_[i], plain_));
    if (i > 0) {
      EXPECT_GT(seqs[i]->reused_tokens(), 0);  // the prefix came from the pool
    }
    ids.push_back(absl::StrCat("doc", i));
    ASSERT_THAT(EndSessionTurn(*engine_, *seqs[i], r, ids[i], store.get()).status(), IsOk());
  }
  ASSERT_THAT(store->Flush(), IsOk());
  // Every document block once, held by every session; no session owns a copy of one.
  EXPECT_EQ(HeldBy(*store, "doc0", kSessions), CommonBlocks());
  int blocks = 0;
  for (const kvstore::TierStats& t : store->Stats()) blocks += t.blocks;
  int owned = 0;
  for (const std::string& id : ids) {
    owned += static_cast<int>(store->KeysOf(id).size());
    for (const std::string& key : store->KeysOf(id)) {
      for (int b = 0; b < static_cast<int>(document_.size()) / 16; ++b) {
        EXPECT_EQ(key.find(absl::StrCat(".b", b, ".")), std::string::npos) << key;
      }
    }
  }
  EXPECT_EQ(blocks, owned + store->shared_blocks());
  size_t shared_bytes = 0;
  for (const std::string& key : store->SharedKeysOf("doc1")) {
    if (store->SharedHolders(key) != kSessions) continue;
    ASSERT_OK_AND_ASSIGN(std::string bytes, store->Get(key));
    shared_bytes += bytes.size();
  }
  // The same sessions saved one per store hold the document kSessions times.
  size_t alone = 0;
  for (int i = 0; i < kSessions; ++i) {
    ASSERT_OK_AND_ASSIGN(auto own, kvstore::KvStore::Open(StoreOptions(1 << 24, 1 << 24)));
    ASSERT_THAT(SaveSession(*engine_, *seqs[i], ids[i], *own), IsOk());
    alone += UsedBytes(*own);
  }
  EXPECT_EQ(UsedBytes(*store) + (kSessions - 1) * shared_bytes, alone);

  // Each loads bit for bit and continues as the sequence that never left.
  for (int i = 0; i < kSessions; ++i) {
    SCOPED_TRACE(ids[i]);
    ASSERT_OK_AND_ASSIGN(LoadResult loaded,
                         LoadSession(*engine_, ids[i], *store, FailedLoadPolicy::kFail, {}));
    EXPECT_FALSE(loaded.recomputed);
    ExpectSameCaches(*seqs[i], *loaded.sequence);
    ASSERT_OK_AND_ASSIGN(GenerateResult a, engine_->Continue(*seqs[i], turn2_, plain_));
    ASSERT_OK_AND_ASSIGN(GenerateResult b, engine_->Continue(*loaded.sequence, turn2_, plain_));
    EXPECT_EQ(a.tokens, b.tokens);
  }
  // Erasing one session leaves the others whole; the last one takes the document with it.
  ASSERT_THAT(store->EraseSession("doc0"), IsOk());
  EXPECT_EQ(HeldBy(*store, "doc1", kSessions - 1), CommonBlocks());
  for (int i = 1; i < kSessions; ++i) {
    ASSERT_OK_AND_ASSIGN(LoadResult loaded,
                         LoadSession(*engine_, ids[i], *store, FailedLoadPolicy::kFail, {}));
    EXPECT_FALSE(loaded.recomputed);
    ASSERT_THAT(store->EraseSession(ids[i]), IsOk());
  }
  EXPECT_TRUE(store->Sessions().empty());
  EXPECT_EQ(store->shared_blocks(), 0);
  EXPECT_EQ(UsedBytes(*store), 0u);
}

// Saves after a shared save: an append keeps the shared blocks; a compaction replaces them
// (released, not erased: the other session still uses them); both load bit for bit.
TEST_P(SharedPrefixTest, IncrementalSavesKeepOrReleaseSharedBlocks) {
  ASSERT_OK_AND_ASSIGN(auto store, kvstore::KvStore::Open(StoreOptions(1 << 24, 1 << 24)));
  std::vector<std::unique_ptr<Sequence>> seqs;
  ASSERT_NO_FATAL_FAILURE(SaveTwoSessions(*store, seqs));
  ASSERT_EQ(HeldBy(*store, "doc0", 2), CommonBlocks());
  // An append: the document blocks stay as they are.
  ASSERT_OK_AND_ASSIGN(GenerateResult r, engine_->Continue(*seqs[1], turn2_, plain_));
  ASSERT_THAT(EndSessionTurn(*engine_, *seqs[1], r, "doc1", store.get()).status(), IsOk());
  EXPECT_EQ(HeldBy(*store, "doc1", 2), CommonBlocks());
  ASSERT_OK_AND_ASSIGN(LoadResult loaded,
                       LoadSession(*engine_, "doc1", *store, FailedLoadPolicy::kFail, {}));
  ExpectSameCaches(*seqs[1], *loaded.sequence);
  // A cache cut back to 20 slots (as a compaction lowers KvCache::unchanged): every block from
  // the second one on is replaced, so doc1 keeps only the first document block of each slab;
  // the others stay, held by doc0 alone.
  const int slabs = CommonBlocks() / (static_cast<int>(document_.size()) / 16);
  for (int rank = 0; rank < seqs[1]->local_ranks(); ++rank) {
    ASSERT_THAT(seqs[1]->cache(rank).DropLast(seqs[1]->cache(rank).max_length() - 20), IsOk());
  }
  ASSERT_THAT(SaveSession(*engine_, *seqs[1], "doc1", *store), IsOk());
  EXPECT_EQ(static_cast<int>(store->SharedKeysOf("doc1").size()), slabs);
  EXPECT_EQ(HeldBy(*store, "doc0", 2), slabs);
  EXPECT_EQ(HeldBy(*store, "doc0", 1),
            static_cast<int>(store->SharedKeysOf("doc0").size()) - slabs);
  EXPECT_GE(HeldBy(*store, "doc0", 1), CommonBlocks() - slabs);
  for (int i = 0; i < 2; ++i) {
    ASSERT_OK_AND_ASSIGN(
        loaded, LoadSession(*engine_, absl::StrCat("doc", i), *store, FailedLoadPolicy::kFail, {}));
    EXPECT_FALSE(loaded.recomputed);
    ExpectSameCaches(*seqs[i], *loaded.sequence);
  }
  // The loaded doc1 saved over doc0 (a rewrite: doc0's holds it does not write again are
  // released); nothing is left once both are gone.
  ASSERT_OK_AND_ASSIGN(r, engine_->Continue(*loaded.sequence, turn2_, plain_));
  ASSERT_THAT(EndSessionTurn(*engine_, *loaded.sequence, r, "doc0", store.get()).status(), IsOk());
  ASSERT_THAT(store->EraseSession("doc0"), IsOk());
  ASSERT_THAT(store->EraseSession("doc1"), IsOk());
  EXPECT_TRUE(store->Sessions().empty());
  EXPECT_EQ(UsedBytes(*store), 0u);
}

// A shared block that is missing or whose bytes do not hash to its key follows the failed-load
// policy; a malformed shared-block list in a turn record is DataLoss.
TEST_P(SharedPrefixTest, BadSharedBlocksFollowThePolicyAndBadListsAreDataLoss) {
  ASSERT_OK_AND_ASSIGN(auto store, kvstore::KvStore::Open(StoreOptions(1 << 24, 1 << 24)));
  std::vector<std::unique_ptr<Sequence>> seqs;
  ASSERT_NO_FATAL_FAILURE(SaveTwoSessions(*store, seqs));
  std::vector<std::string> shared;  // held by both
  for (const std::string& key : store->SharedKeysOf("doc1")) {
    if (store->SharedHolders(key) == 2) shared.push_back(key);
  }
  ASSERT_GE(shared.size(), 2u);
  // Other valid bytes under a shared key: not what the key names.
  const int tier = store->TierOf(shared[0]);
  ASSERT_OK_AND_ASSIGN(std::string original, store->Get(shared[0]));
  ASSERT_OK_AND_ASSIGN(std::string other, store->Get(store->KeysOf("doc1")[0]));
  ASSERT_THAT(store->tier(tier).Erase(shared[0]), IsOk());
  ASSERT_THAT(store->tier(tier).Put(shared[0], other), IsOk());
  EXPECT_THAT(LoadSession(*engine_, "doc1", *store, FailedLoadPolicy::kFail, {}),
              StatusIs(absl::StatusCode::kDataLoss, ::testing::HasSubstr("content hash")));
  ASSERT_OK_AND_ASSIGN(LoadResult loaded,
                       LoadSession(*engine_, "doc1", *store, FailedLoadPolicy::kRecompute, {}));
  EXPECT_TRUE(loaded.recomputed);
  // The replay prefills the reused prefix itself: the same greedy tokens.
  ASSERT_OK_AND_ASSIGN(GenerateResult a, engine_->Continue(*seqs[1], turn2_, plain_));
  ASSERT_OK_AND_ASSIGN(GenerateResult b, engine_->Continue(*loaded.sequence, turn2_, plain_));
  EXPECT_EQ(a.tokens, b.tokens);
  // Missing (the first one put right again).
  ASSERT_THAT(store->tier(tier).Erase(shared[0]), IsOk());
  ASSERT_THAT(store->tier(tier).Put(shared[0], original), IsOk());
  ASSERT_THAT(store->Erase(shared[1]), IsOk());
  EXPECT_THAT(LoadSession(*engine_, "doc0", *store, FailedLoadPolicy::kFail, {}),
              StatusIs(absl::StatusCode::kDataLoss, ::testing::HasSubstr("missing")));
  ASSERT_OK_AND_ASSIGN(loaded,
                       LoadSession(*engine_, "doc0", *store, FailedLoadPolicy::kRecompute, {}));
  EXPECT_TRUE(loaded.recomputed);
  ASSERT_OK_AND_ASSIGN(a, engine_->Continue(*seqs[0], turn2_, plain_));
  ASSERT_OK_AND_ASSIGN(b, engine_->Continue(*loaded.sequence, turn2_, plain_));
  EXPECT_EQ(a.tokens, b.tokens);

  // doc0's turn record, with its shared list edited. Layout (version 3): version, turn,
  // tokens_from, the counts of tokens, segments_from, the count of segments, the count of slabs,
  // the count of shared blocks; tokens, (kind, length) pairs, (length, first block) pairs, then
  // per shared block: slab, block, 4 words of content id.
  ASSERT_OK_AND_ASSIGN(std::string bytes, store->Get("doc0.t0"));
  ASSERT_OK_AND_ASSIGN(kvstore::DecodedBlock record, kvstore::DecodeBlock(bytes));
  const std::vector<int32_t> words = record.positions;
  ASSERT_EQ(words[0], 3);
  const int32_t n_shared = words[7];
  ASSERT_GE(n_shared, 2);
  const size_t list = words.size() - 6 * static_cast<size_t>(n_shared);
  auto load_with = [&](const std::vector<int32_t>& v) -> absl::StatusOr<LoadResult> {
    const std::vector<float> payload(2 * v.size(), 0.0f);
    absl::StatusOr<std::string> block = kvstore::EncodeBlock(record.meta, v, payload);
    if (!block.ok()) return block.status();
    if (absl::Status put = store->Put("doc0", "doc0.t0", *std::move(block)); !put.ok()) return put;
    return LoadSession(*engine_, "doc0", *store, FailedLoadPolicy::kRecompute, {});
  };
  std::vector<std::vector<int32_t>> bad;
  bad.push_back(words);
  bad.back()[7] = n_shared + 1;  // the count disagrees with the words
  bad.push_back(words);
  bad.back()[7] = -1;
  bad.push_back(words);
  bad.back()[list] = words[6];  // slab out of range
  bad.push_back(words);
  bad.back()[list] = -1;
  bad.push_back(words);
  std::swap_ranges(bad.back().begin() + list, bad.back().begin() + list + 6,
                   bad.back().begin() + list + 6);  // not ascending
  bad.push_back(words);
  bad.back()[list + 1] = -1;  // before the slab's first block
  for (const std::vector<int32_t>& v : bad) {
    EXPECT_THAT(load_with(v),
                StatusIs(absl::StatusCode::kDataLoss, ::testing::HasSubstr("malformed")));
  }
  std::vector<int32_t> past = words;
  past[list + 6 * (n_shared - 1) + 1] = 1 << 20;  // the last one, past its slab's length
  EXPECT_THAT(load_with(past),
              StatusIs(absl::StatusCode::kDataLoss, ::testing::HasSubstr("past its length")));
}

// A session saved in the previous manifest format (version 2: no shared blocks) still loads.
TEST_P(SessionStoreTest, Version2ManifestStillLoads) {
  ASSERT_OK_AND_ASSIGN(auto store, kvstore::KvStore::Open(StoreOptions(1 << 24, 1 << 24)));
  GenerateOptions plain;
  plain.max_new_tokens = 30;
  plain.stop_at_stop_tokens = false;
  auto seq = engine_->NewSequence();
  const std::vector<int> ask(turn1_.begin(), turn1_.begin() + 9);  // no full prompt block
  ASSERT_OK_AND_ASSIGN(GenerateResult r, engine_->Continue(*seq, ask, plain));
  ASSERT_THAT(EndSessionTurn(*engine_, *seq, r, "old", store.get()).status(), IsOk());
  ASSERT_EQ(store->SharedKeysOf("old").size(), 0u);
  // Rewrite the header and the record as version 2 wrote them.
  for (const char* key : {"old.m", "old.t0"}) {
    ASSERT_OK_AND_ASSIGN(std::string bytes, store->Get(key));
    ASSERT_OK_AND_ASSIGN(kvstore::DecodedBlock block, kvstore::DecodeBlock(bytes));
    std::vector<int32_t> v = block.positions;
    ASSERT_EQ(v[0], 3);
    v[0] = 2;
    if (std::string(key) == "old.t0") {
      ASSERT_EQ(v[7], 0);  // no shared blocks
      v.erase(v.begin() + 7);
    }
    const std::vector<float> payload(2 * v.size(), 0.0f);
    ASSERT_OK_AND_ASSIGN(std::string old, kvstore::EncodeBlock(block.meta, v, payload));
    ASSERT_THAT(store->Put("old", key, std::move(old)), IsOk());
  }
  ASSERT_OK_AND_ASSIGN(LoadResult loaded,
                       LoadSession(*engine_, "old", *store, FailedLoadPolicy::kFail, {}));
  EXPECT_FALSE(loaded.recomputed);
  ExpectSameCaches(*seq, *loaded.sequence);
  // The next save builds on it (incremental, a version 3 record after a version 2 one).
  ASSERT_OK_AND_ASSIGN(r, engine_->Continue(*loaded.sequence, turn2_, plain));
  ASSERT_THAT(EndSessionTurn(*engine_, *loaded.sequence, r, "old", store.get()).status(), IsOk());
  EXPECT_EQ(store->TierOf("old.t1"), 0);
  ASSERT_OK_AND_ASSIGN(LoadResult again,
                       LoadSession(*engine_, "old", *store, FailedLoadPolicy::kFail, {}));
  ExpectSameCaches(*loaded.sequence, *again.sequence);
}

INSTANTIATE_TEST_SUITE_P(KvDtypes, SessionStoreTest,
                         ::testing::Values(KvLayout{kernels::DType::kF32, false},
                                           KvLayout{kernels::DType::kBF16, false},
                                           KvLayout{kernels::DType::kF16, false},
                                           KvLayout{kernels::DType::kF32, true},
                                           KvLayout{kernels::DType::kBF16, true}),
                         KvLayoutName);
INSTANTIATE_TEST_SUITE_P(KvDtypes, SharedPrefixTest,
                         ::testing::Values(KvLayout{kernels::DType::kF32, false},
                                           KvLayout{kernels::DType::kBF16, false},
                                           KvLayout{kernels::DType::kF32, true}),
                         KvLayoutName);

}  // namespace
}  // namespace dapq::worker
