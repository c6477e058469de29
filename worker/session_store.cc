// File: worker/session_store.cc
// Session save/restore through the KV store, with the manifest and the failed-load policy.
#include "worker/session_store.h"

#include <algorithm>
#include <map>
#include <set>
#include <span>
#include <utility>

#include "absl/strings/str_cat.h"
#include "api/request_rules.h"
#include "common/status_macros.h"
#include "kernels/convert.h"
#include "kvstore/block_codec.h"

namespace dapq::worker {
namespace {

// 3: turn records list their shared blocks. Version 2 (a header and turn records, no shared
// blocks) is still read: its records are version 3's without the shared list.
constexpr int32_t kManifestVersion = 3;
constexpr int32_t kPlainManifestVersion = 2;
constexpr int32_t kManifestLayer = -1;
constexpr int32_t kRecordLayer = -2;
constexpr int kHeaderWords = 11;
constexpr int kRecordWords = 8;       // version 2: 7 (no shared count)
constexpr int kSharedBlockWords = 6;  // slab, block, content id (4 words, high first)
// A save after this many turn records rewrites the session as one (loads read every record).
constexpr int kMaxTurnRecords = 32;

std::string ManifestKey(const std::string& session) { return session + ".m"; }
std::string RecordKey(const std::string& session, int turn) {
  return absl::StrCat(session, ".t", turn);
}
std::string BlockKey(const std::string& session, int rank, int layer, int head, int index,
                     int turn) {
  return absl::StrCat(session, ".r", rank, ".l", layer, ".h", head, ".b", index, ".t", turn);
}

uint64_t ModelFingerprint(const ModelConfig& c) { return kvstore::Fingerprint(c.DebugString()); }

bool KnownVersion(int32_t version) {
  return version == kManifestVersion || version == kPlainManifestVersion;
}

// Which turn's record wrote a block, as StoredSession::block_turns and ReadRecords hold it:
// t >= 0 for the session's own block "<...>.b<index>.t<t>", -1 - t for a shared block (its key
// comes from record t's shared list).
int32_t SharedTurn(int turn) { return -1 - turn; }
bool IsSharedTurn(int32_t v) { return v < 0; }
int TurnOf(int32_t v) { return v < 0 ? -1 - v : v; }

// A shared block a turn wrote: slab (in record order: [local rank][layer][KV head]), block
// index, and the content id naming it in the store (KvStore::SharedKey).
struct SharedBlock {
  int32_t slab = 0, block = 0;
  kvstore::ContentId id;
};

// Per slab: block index -> content id of each shared block.
using SharedIds = std::vector<std::map<int32_t, kvstore::ContentId>>;

// A block a save writes, planned before its rows are copied out of the pool: slots [b0, b0 +
// count) of (layer, head), block `index` of its slab, whose turn goes to (*turns)[index].
struct PendingBlock {
  int layer = 0, head = 0;
  int32_t record_slab = 0, index = 0;
  int b0 = 0, count = 0;
  std::vector<int32_t>* turns = nullptr;
};

// Host memory for a save's rows in flight: pinned through the pool's context on a context arena
// (the copy stream's transfers are then asynchronous), plain memory on a host arena.
class CopyStaging {
 public:
  absl::Status Reserve(const kvstore::BlockPool& pool, size_t bytes) {
    if (bytes <= capacity_) return absl::OkStatus();
    if (pool.context() != nullptr) {
      DAPQ_ASSIGN_OR_RETURN(pinned_,
                            pool.context()->Allocate(bytes, kernels::MemoryKind::kPinnedHost));
      data_ = static_cast<std::byte*>(pinned_.data());
    } else {
      plain_.resize(bytes);
      data_ = plain_.data();
    }
    capacity_ = bytes;
    return absl::OkStatus();
  }
  std::byte* data() const { return data_; }

 private:
  kernels::DeviceMemory pinned_;
  std::vector<std::byte> plain_;
  std::byte* data_ = nullptr;
  size_t capacity_ = 0;
};

// Rows copied out of the pool at once, at most (a save copies in batches of this size).
constexpr size_t kMaxStagingBytes = size_t{16} << 20;

// "<session>.m": the shape, where the next token goes, and which turn records [first_turn,
// turns) describe the session; written last by every save (the commit point).
struct Header {
  int tp = 0, n_layers = 0, kv_heads = 0, head_dim = 0, tokens_per_block = 0;
  int next_position = 0;
  bool compressed = false;
  int first_turn = 0, turns = 0;
  std::vector<int32_t> lengths;  // [local rank][layer][KV head of the rank]
};

// "<session>.t<turn>": what one save added. The tokens fed since the previous record, the
// segments from `segments_from` on (the last one may have grown), and per slab its length and
// the first block this turn wrote (blocks [first_block, ceil(length / tokens_per_block)) are
// "<...>.b<index>.t<turn>"; the ones before it come from earlier records).
struct TurnRecord {
  int turn = 0;
  int tokens_from = 0;
  std::vector<int> tokens;
  int segments_from = 0;
  std::vector<FeedSegment> segments;
  std::vector<int32_t> lengths, first_block;
  std::vector<SharedBlock> shared;  // ascending (slab, block); blocks this turn wrote
};

absl::StatusOr<std::string> EncodeWords(const std::vector<int32_t>& v, int32_t layer,
                                        uint64_t model_fp) {
  const std::vector<float> payload(2 * v.size(), 0.0f);
  return kvstore::EncodeBlock({model_fp, 0, layer, 0, 1, 1}, v, payload);
}

absl::StatusOr<std::string> EncodeHeader(const Header& m, uint64_t model_fp) {
  std::vector<int32_t> v = {kManifestVersion,
                            m.tp,
                            m.n_layers,
                            m.kv_heads,
                            m.head_dim,
                            m.tokens_per_block,
                            m.next_position,
                            m.compressed ? 1 : 0,
                            m.first_turn,
                            m.turns,
                            static_cast<int32_t>(m.lengths.size())};
  v.insert(v.end(), m.lengths.begin(), m.lengths.end());
  return EncodeWords(v, kManifestLayer, model_fp);
}

absl::StatusOr<Header> DecodeHeader(const kvstore::DecodedBlock& b) {
  const std::vector<int32_t>& v = b.positions;
  auto bad = [] { return absl::DataLossError("session manifest: malformed"); };
  if (b.meta.layer != kManifestLayer || v.size() < kHeaderWords || !KnownVersion(v[0])) {
    return bad();
  }
  Header m;
  m.tp = v[1];
  m.n_layers = v[2];
  m.kv_heads = v[3];
  m.head_dim = v[4];
  m.tokens_per_block = v[5];
  m.next_position = v[6];
  m.compressed = v[7] != 0;
  m.first_turn = v[8];
  m.turns = v[9];
  // Counts are checked as signed 64-bit values before any use: a negative count cast to size_t
  // would wrap the size check below.
  if (v[10] < 0 || m.next_position < 0 || m.tokens_per_block <= 0 || m.first_turn < 0 ||
      m.turns <= m.first_turn || m.turns - m.first_turn > kMaxTurnRecords + 1) {
    return bad();
  }
  if (static_cast<int64_t>(v.size()) != kHeaderWords + int64_t{v[10]}) return bad();
  m.lengths.assign(v.begin() + kHeaderWords, v.end());
  for (int32_t length : m.lengths) {
    if (length < 0) return bad();
  }
  return m;
}

absl::StatusOr<std::string> EncodeRecord(const TurnRecord& r, uint64_t model_fp) {
  std::vector<int32_t> v = {kManifestVersion,
                            r.turn,
                            r.tokens_from,
                            static_cast<int32_t>(r.tokens.size()),
                            r.segments_from,
                            static_cast<int32_t>(r.segments.size()),
                            static_cast<int32_t>(r.lengths.size()),
                            static_cast<int32_t>(r.shared.size())};
  v.insert(v.end(), r.tokens.begin(), r.tokens.end());
  for (const FeedSegment& s : r.segments) {
    v.push_back(static_cast<int32_t>(s.kind));
    v.push_back(s.length);
  }
  for (size_t i = 0; i < r.lengths.size(); ++i) {
    v.push_back(r.lengths[i]);
    v.push_back(r.first_block[i]);
  }
  for (const SharedBlock& s : r.shared) {
    v.push_back(s.slab);
    v.push_back(s.block);
    for (const uint64_t half : {s.id.high, s.id.low}) {
      v.push_back(static_cast<int32_t>(static_cast<uint32_t>(half >> 32)));
      v.push_back(static_cast<int32_t>(static_cast<uint32_t>(half)));
    }
  }
  return EncodeWords(v, kRecordLayer, model_fp);
}

absl::StatusOr<TurnRecord> DecodeRecord(const kvstore::DecodedBlock& b, int turn) {
  const std::vector<int32_t>& v = b.positions;
  auto bad = [&] {
    return absl::DataLossError(absl::StrCat("session turn record ", turn, ": malformed"));
  };
  const int words = !v.empty() && v[0] == kPlainManifestVersion ? kRecordWords - 1 : kRecordWords;
  if (b.meta.layer != kRecordLayer || v.size() < static_cast<size_t>(words) ||
      !KnownVersion(v[0]) || v[1] != turn || v[2] < 0 || v[3] < 0 || v[4] < 0 || v[5] < 0 ||
      v[6] < 0 || (words == kRecordWords && v[7] < 0)) {
    return bad();
  }
  const int64_t shared = words == kRecordWords ? v[7] : 0;
  const int64_t want =
      words + int64_t{v[3]} + 2 * int64_t{v[5]} + 2 * int64_t{v[6]} + kSharedBlockWords * shared;
  if (static_cast<int64_t>(v.size()) != want) return bad();
  TurnRecord r;
  r.turn = turn;
  r.tokens_from = v[2];
  r.segments_from = v[4];
  const size_t nt = v[3], ns = v[5], nl = v[6];
  size_t at = words;
  r.tokens.assign(v.begin() + at, v.begin() + at + nt);
  at += nt;
  for (size_t i = 0; i < ns; ++i, at += 2) {
    if (v[at] < 0 || v[at] > static_cast<int32_t>(FeedSegment::Kind::kDecode) || v[at + 1] < 0) {
      return bad();
    }
    r.segments.push_back({static_cast<FeedSegment::Kind>(v[at]), v[at + 1]});
  }
  for (size_t i = 0; i < nl; ++i, at += 2) {
    if (v[at] < 0 || v[at + 1] < 0) return bad();
    r.lengths.push_back(v[at]);
    r.first_block.push_back(v[at + 1]);
  }
  // Shared blocks: in strictly ascending (slab, block) order, each among the blocks this turn
  // wrote (ReadRecords checks them against the slab's length).
  for (int64_t i = 0; i < shared; ++i, at += kSharedBlockWords) {
    SharedBlock s;
    s.slab = v[at];
    s.block = v[at + 1];
    auto word = [&](size_t k) { return uint64_t{static_cast<uint32_t>(v[at + k])}; };
    s.id = {word(2) << 32 | word(3), word(4) << 32 | word(5)};
    if (s.slab < 0 || static_cast<size_t>(s.slab) >= nl || s.block < r.first_block[s.slab] ||
        (!r.shared.empty() &&
         std::pair(s.slab, s.block) <= std::pair(r.shared.back().slab, r.shared.back().block))) {
      return bad();
    }
    r.shared.push_back(s);
  }
  return r;
}

// `id`: a shared block's content id, which its bytes must hash to.
absl::StatusOr<kvstore::DecodedBlock> GetBlock(kvstore::KvStore& store, const std::string& key,
                                               const std::string& what,
                                               const kvstore::ContentId* id = nullptr) {
  absl::StatusOr<std::string> bytes = store.Get(key);
  if (absl::IsNotFound(bytes.status())) {
    return absl::DataLossError(absl::StrCat(what, " ", key, " is missing"));
  }
  DAPQ_RETURN_IF_ERROR(bytes.status());
  if (id != nullptr && kvstore::KvStore::ContentIdOf(*bytes) != *id) {
    return absl::DataLossError(absl::StrCat(what, " ", key, " does not match its content hash"));
  }
  absl::StatusOr<kvstore::DecodedBlock> block = kvstore::DecodeBlock(*bytes);
  if (!block.ok()) {
    return absl::DataLossError(absl::StrCat(what, " ", key, ": ", block.status().message()));
  }
  return block;
}

int64_t BlocksOf(int64_t length, int tokens_per_block) {
  return (length + tokens_per_block - 1) / tokens_per_block;
}

absl::StatusOr<TurnRecord> ReadRecord(kvstore::KvStore& store, const std::string& session, int t,
                                      uint64_t model_fp) {
  DAPQ_ASSIGN_OR_RETURN(kvstore::DecodedBlock block,
                        GetBlock(store, RecordKey(session, t), "turn record"));
  if (block.meta.model_fingerprint != model_fp) {
    return absl::DataLossError(absl::StrCat("turn record ", t, " belongs to another model"));
  }
  return DecodeRecord(block, t);
}

// Every turn record of the header, applied in order: the history and, per slab, which turn
// wrote each block (block_turns' encoding) and the content ids of the shared ones.
absl::Status ReadRecords(const std::string& session, const Header& m, int max_length,
                         kvstore::KvStore& store, uint64_t model_fp, std::vector<int>& tokens,
                         std::vector<FeedSegment>& segments,
                         std::vector<std::vector<int32_t>>& block_turns, SharedIds& shared_ids) {
  block_turns.assign(m.lengths.size(), {});
  shared_ids.assign(m.lengths.size(), {});
  for (int t = m.first_turn; t < m.turns; ++t) {
    DAPQ_ASSIGN_OR_RETURN(TurnRecord r, ReadRecord(store, session, t, model_fp));
    const bool first = t == m.first_turn;
    if (r.tokens_from != static_cast<int>(tokens.size()) ||
        r.segments_from > static_cast<int>(segments.size()) ||
        r.lengths.size() != m.lengths.size() ||
        (first && (r.tokens_from != 0 || r.segments_from != 0))) {
      return absl::DataLossError(
          absl::StrCat("turn record ", t, " does not follow the records before it"));
    }
    tokens.insert(tokens.end(), r.tokens.begin(), r.tokens.end());
    segments.resize(r.segments_from);
    segments.insert(segments.end(), r.segments.begin(), r.segments.end());
    for (size_t slab = 0; slab < m.lengths.size(); ++slab) {
      std::vector<int32_t>& turns = block_turns[slab];
      if (r.lengths[slab] > max_length) {
        return absl::DataLossError(absl::StrCat("turn record ", t, ": slab ", slab, " holds ",
                                                r.lengths[slab], " slots, past the context ",
                                                max_length));
      }
      const int64_t blocks = BlocksOf(r.lengths[slab], m.tokens_per_block);
      if (r.first_block[slab] > blocks ||
          r.first_block[slab] > static_cast<int64_t>(turns.size()) ||
          (first && r.first_block[slab] != 0)) {
        return absl::DataLossError(
            absl::StrCat("turn record ", t, ": slab ", slab, " starts past the blocks before it"));
      }
      turns.resize(blocks);
      std::fill(turns.begin() + r.first_block[slab], turns.end(), t);
      shared_ids[slab].erase(shared_ids[slab].lower_bound(r.first_block[slab]),
                             shared_ids[slab].end());
    }
    for (const SharedBlock& s : r.shared) {
      std::vector<int32_t>& turns = block_turns[s.slab];
      if (s.block >= static_cast<int64_t>(turns.size())) {
        return absl::DataLossError(absl::StrCat("turn record ", t, ": shared block ", s.block,
                                                " of slab ", s.slab, " is past its length"));
      }
      turns[s.block] = SharedTurn(t);
      shared_ids[s.slab][s.block] = s.id;
    }
    if (t + 1 == m.turns && r.lengths != m.lengths) {
      return absl::DataLossError("session manifest: lengths differ from the last turn record");
    }
  }
  return absl::OkStatus();
}

// Reads every block of the session into a fresh sequence.
absl::Status ReadBlocks(Engine& engine, const std::string& session, const Header& m,
                        const std::vector<std::vector<int32_t>>& block_turns,
                        const SharedIds& shared_ids, kvstore::KvStore& store, uint64_t model_fp,
                        Sequence& seq) {
  size_t slab = 0;
  // On a context arena the rows go into the pool in batches through its copy stream
  // (KvCache::AppendSlotsDeferred, one wait per batch); a host arena takes them at once.
  CopyStaging staging;
  std::vector<kvstore::BlockPool::HostCopy> copies;
  for (int r = 0; r < seq.local_ranks(); ++r) {
    const int rank = engine.first_rank() + r;  // keys carry the global rank
    KvCache& cache = seq.cache(r);
    const bool staged = cache.pool().context_arena();
    const size_t slot_bytes = cache.slot_bytes();
    size_t rank_bytes = 0;  // lengths were checked against the context (ReadRecords)
    for (size_t s = slab; s < slab + static_cast<size_t>(m.n_layers) * m.kv_heads; ++s) {
      rank_bytes += static_cast<size_t>(m.lengths[s]) * slot_bytes;
    }
    const size_t capacity =
        std::min(rank_bytes,
                 std::max(kMaxStagingBytes, static_cast<size_t>(m.tokens_per_block) * slot_bytes));
    if (staged) DAPQ_RETURN_IF_ERROR(staging.Reserve(cache.pool(), capacity));
    size_t used = 0;
    for (int l = 0; l < m.n_layers; ++l) {
      for (int h = 0; h < m.kv_heads; ++h, ++slab) {
        const std::vector<int32_t>& turns = block_turns[slab];
        for (size_t b = 0; b < turns.size(); ++b) {
          const kvstore::ContentId* id = nullptr;
          std::string key;
          if (IsSharedTurn(turns[b])) {
            auto it = shared_ids[slab].find(static_cast<int32_t>(b));
            if (it == shared_ids[slab].end()) {
              return absl::DataLossError(absl::StrCat("session ", session, ": shared block ", b,
                                                      " of slab ", slab, " has no content id"));
            }
            id = &it->second;
            key = kvstore::KvStore::SharedKey(*id);
          } else {
            key = BlockKey(session, rank, l, h, static_cast<int>(b), turns[b]);
          }
          DAPQ_ASSIGN_OR_RETURN(kvstore::DecodedBlock block, GetBlock(store, key, "block", id));
          const int count = static_cast<int>(block.positions.size());
          if (block.meta.model_fingerprint != model_fp || block.meta.layer != l ||
              block.meta.kv_head_begin != rank * m.kv_heads + h ||
              block.meta.head_dim != m.head_dim || count > m.tokens_per_block) {
            return absl::DataLossError(absl::StrCat("block ", key, " does not belong here"));
          }
          const size_t bytes = staged ? static_cast<size_t>(count) * slot_bytes : 0;
          if (used + bytes > capacity) {
            DAPQ_RETURN_IF_ERROR(cache.WriteDeferred(copies));
            used = 0;
          }
          if (bytes > capacity) {
            return absl::DataLossError(absl::StrCat("session ", session, ": block ", key,
                                                    " holds more slots than the manifest's"));
          }
          const float* k = block.payload.data();
          const float* v = k + static_cast<size_t>(count) * m.head_dim;
          DAPQ_RETURN_IF_ERROR(cache.AppendSlotsDeferred(
              l, h, block.positions, k, v, staged ? staging.data() + used : nullptr, copies));
          used += bytes;
        }
        if (cache.length(l, h) != m.lengths[slab]) {
          return absl::DataLossError(absl::StrCat("session ", session, ": slab ", slab, " holds ",
                                                  cache.length(l, h), " slots, expected ",
                                                  m.lengths[slab]));
        }
      }
    }
    DAPQ_RETURN_IF_ERROR(cache.WriteDeferred(copies));
  }
  return absl::OkStatus();
}

// Whether every pool block holding slots [begin, begin + count) of (layer, head) is shared at
// this moment: held by another sequence (a fork, a reused prompt prefix) or the pool's prefix
// index too (a held block in the index has a reference count of at least 2).
bool PoolShared(const KvCache& cache, int layer, int head, int begin, int count) {
  const std::span<const kvstore::BlockId> ids = cache.block_ids(layer, head);
  const int per_block = cache.tokens_per_block();
  for (int i = begin / per_block; i <= (begin + count - 1) / per_block; ++i) {
    if (i >= static_cast<int>(ids.size()) || cache.pool().RefCount(ids[i]) < 2) return false;
  }
  return true;
}

// Records in `seq` what the store holds of it as `session` after a save or a load (what the
// next save builds on), and marks its caches saved.
void RememberStored(Sequence& seq, const std::string& session, const Header& m,
                    std::vector<std::vector<std::vector<int32_t>>> block_turns) {
  Sequence::StoredSession& stored = seq.stored();
  stored.id = session;
  stored.first_turn = m.first_turn;
  stored.turns = m.turns;
  stored.tokens = seq.tokens().size();
  stored.segments = seq.segments().size();
  stored.tokens_per_block = m.tokens_per_block;
  stored.block_turns = std::move(block_turns);
  for (int r = 0; r < seq.local_ranks(); ++r) seq.cache(r).MarkSaved();
}

}  // namespace

absl::StatusOr<SessionHistory> EndSessionTurn(Engine& engine, Sequence& seq,
                                              const GenerateResult& result,
                                              const std::string& session, kvstore::KvStore* store) {
  DAPQ_RETURN_IF_ERROR(api::ValidateSessionId(session));
  if (!result.tokens.empty()) {
    // The engine samples the last token but does not feed it: feed it, so that the next turn
    // follows the whole transcript.
    const int last = result.tokens.back();
    const int32_t pos = seq.next_position();
    DAPQ_RETURN_IF_ERROR(
        engine.Forward(seq, std::span<const int>(&last, 1), std::span(&pos, 1), nullptr));
  }
  if (store != nullptr) DAPQ_RETURN_IF_ERROR(SaveSession(engine, seq, session, *store));
  return SessionHistory{seq.tokens(), seq.segments()};
}

absl::Status SaveSession(const Engine& engine, Sequence& seq, const std::string& session,
                         kvstore::KvStore& store, int tokens_per_block) {
  DAPQ_RETURN_IF_ERROR(api::ValidateSessionId(session));
  if (tokens_per_block <= 0 || (tokens_per_block & (tokens_per_block - 1)) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("tokens_per_block=", tokens_per_block, " must be a power of two"));
  }
  const ModelConfig& c = engine.config();
  const uint64_t model_fp = ModelFingerprint(c);
  const int tp = engine.options().tp;
  const int kv_heads = c.n_kv_heads / tp;
  const size_t slabs = static_cast<size_t>(c.n_layers) * kv_heads;
  Sequence::StoredSession& stored = seq.stored();
  // Incremental when the store still holds what this sequence last saved or loaded there;
  // otherwise (a first save, another session's history, too many records) a whole rewrite as
  // one record.
  bool incremental = stored.id == session && stored.tokens_per_block == tokens_per_block &&
                     stored.turns - stored.first_turn < kMaxTurnRecords &&
                     stored.block_turns.size() == static_cast<size_t>(seq.local_ranks());
  if (incremental) {
    absl::StatusOr<std::string> bytes = store.Get(ManifestKey(session));
    absl::StatusOr<kvstore::DecodedBlock> block =
        bytes.ok() ? kvstore::DecodeBlock(*bytes)
                   : absl::StatusOr<kvstore::DecodedBlock>(bytes.status());
    absl::StatusOr<Header> header =
        block.ok() ? DecodeHeader(*block) : absl::StatusOr<Header>(block.status());
    incremental =
        header.ok() && header->turns == stored.turns && header->first_turn == stored.first_turn;
  }
  const int turn = incremental ? stored.turns : stored.id == session ? stored.turns : 0;
  Header m;
  m.tp = tp;
  m.n_layers = c.n_layers;
  m.kv_heads = kv_heads;
  m.head_dim = c.head_dim;
  m.tokens_per_block = tokens_per_block;
  m.next_position = seq.next_position();
  m.compressed = seq.compressed();
  m.first_turn = incremental ? stored.first_turn : turn;
  m.turns = turn + 1;
  TurnRecord record;
  record.turn = turn;
  record.tokens_from = incremental ? static_cast<int>(stored.tokens) : 0;
  record.tokens.assign(seq.tokens().begin() + record.tokens_from, seq.tokens().end());
  record.segments_from = incremental ? static_cast<int>(std::max<size_t>(stored.segments, 1) - 1)
                                     : 0;  // the last saved segment may have grown since
  record.segments.assign(seq.segments().begin() + record.segments_from, seq.segments().end());
  // The blocks that changed: from the one holding each slab's first changed slot on.
  std::vector<std::vector<std::vector<int32_t>>> block_turns(seq.local_ranks());
  std::vector<std::string> superseded;  // older blocks this save replaces, erased after it
  // Older shared blocks this save replaces, by the turn whose record names them: (record slab,
  // block) pairs, released after it.
  std::map<int, std::vector<std::pair<int32_t, int32_t>>> superseded_shared;
  std::set<std::string> shared_written;  // the shared blocks this save holds
  // The blocks of one rank are planned first, then copied out of its pool in batches (one wait
  // per batch, on the pool's copy stream: the compute stream is never synchronised), encoded and
  // stored.
  std::vector<PendingBlock> pending;
  std::vector<kvstore::BlockPool::HostCopy> copies;
  std::vector<float> payload;
  CopyStaging staging;
  const auto write_block = [&](const KvCache& cache, int rank, const PendingBlock& p,
                               const std::byte* rows) -> absl::Status {
    const kvstore::BlockPool& pool = cache.pool();
    const size_t elems = static_cast<size_t>(p.count) * c.head_dim;
    payload.resize(2 * elems);
    kernels::ConvertToFloat(pool.dtype(), rows, payload.data(), static_cast<long>(elems));
    kernels::ConvertToFloat(pool.dtype(), rows + elems * pool.element_bytes(),
                            payload.data() + elems, static_cast<long>(elems));
    const kvstore::BlockMeta meta{model_fp, 0,          p.layer,     rank * kv_heads + p.head,
                                  1,        c.head_dim, pool.dtype()};
    const std::span<const int32_t> pos = cache.positions(p.layer, p.head).subspan(p.b0, p.count);
    DAPQ_ASSIGN_OR_RETURN(std::string block, kvstore::EncodeBlock(meta, pos, payload));
    // A full block shared in the pool (or already shared in the store: another sequence saved
    // the same prefix) is stored once for every session, by content.
    if (p.count == tokens_per_block) {
      const kvstore::ContentId id = kvstore::KvStore::ContentIdOf(block);
      std::string key = kvstore::KvStore::SharedKey(id);
      if (PoolShared(cache, p.layer, p.head, p.b0, p.count) || store.SharedHolders(key) > 0) {
        DAPQ_RETURN_IF_ERROR(store.PutShared(session, key, std::move(block)));
        shared_written.insert(std::move(key));
        record.shared.push_back({p.record_slab, p.index, id});
        (*p.turns)[p.index] = SharedTurn(turn);
        return absl::OkStatus();
      }
    }
    DAPQ_RETURN_IF_ERROR(store.Put(session, BlockKey(session, rank, p.layer, p.head, p.index, turn),
                                   std::move(block)));
    (*p.turns)[p.index] = turn;
    return absl::OkStatus();
  };
  const auto write_pending = [&](const KvCache& cache, int rank) -> absl::Status {
    const kvstore::BlockPool& pool = cache.pool();
    const size_t row_bytes = cache.slot_bytes() / 2;
    size_t total = 0;
    for (const PendingBlock& p : pending) total += 2 * p.count * row_bytes;
    DAPQ_RETURN_IF_ERROR(staging.Reserve(
        pool, std::min(total, std::max(kMaxStagingBytes, 2 * tokens_per_block * row_bytes))));
    for (size_t first = 0; first < pending.size();) {
      // One batch: the blocks that fit the staging memory, copied out with one wait.
      copies.clear();
      std::vector<size_t> offsets;
      size_t used = 0, end = first;
      for (; end < pending.size(); ++end) {
        const PendingBlock& p = pending[end];
        const size_t bytes = 2 * p.count * row_bytes;
        if (end > first && used + bytes > kMaxStagingBytes) break;
        std::byte* k = staging.data() + used;
        cache.SlotCopies(p.layer, p.head, p.b0, p.count, k, k + bytes / 2, copies);
        offsets.push_back(used);
        used += bytes;
      }
      DAPQ_RETURN_IF_ERROR(pool.ReadAsync(copies).status());
      DAPQ_RETURN_IF_ERROR(pool.WaitCopies());
      for (size_t i = first; i < end; ++i) {
        DAPQ_RETURN_IF_ERROR(
            write_block(cache, rank, pending[i], staging.data() + offsets[i - first]));
      }
      first = end;
    }
    pending.clear();
    return absl::OkStatus();
  };
  for (int r = 0; r < seq.local_ranks(); ++r) {
    const int rank = engine.first_rank() + r;
    const KvCache& cache = seq.cache(r);
    block_turns[r].resize(slabs);
    for (int l = 0; l < c.n_layers; ++l) {
      for (int h = 0; h < kv_heads; ++h) {
        const size_t slab = static_cast<size_t>(l) * kv_heads + h;
        const std::span<const int32_t> pos = cache.positions(l, h);
        const int64_t blocks = BlocksOf(static_cast<int64_t>(pos.size()), tokens_per_block);
        std::vector<int32_t>& turns = block_turns[r][slab];
        if (incremental) turns = stored.block_turns[r][slab];
        const int first =
            incremental
                ? static_cast<int>(std::min<int64_t>({cache.unchanged(l, h) / tokens_per_block,
                                                      static_cast<int64_t>(turns.size()), blocks}))
                : 0;
        const int32_t record_slab = static_cast<int32_t>(record.lengths.size());
        for (size_t b = first; b < turns.size(); ++b) {
          if (IsSharedTurn(turns[b])) {
            superseded_shared[TurnOf(turns[b])].emplace_back(record_slab, static_cast<int32_t>(b));
          } else {
            superseded.push_back(BlockKey(session, rank, l, h, static_cast<int>(b), turns[b]));
          }
        }
        turns.resize(blocks);
        m.lengths.push_back(static_cast<int32_t>(pos.size()));
        record.lengths.push_back(static_cast<int32_t>(pos.size()));
        record.first_block.push_back(first);
        for (int64_t b = first; b < blocks; ++b) {
          const int b0 = static_cast<int>(b) * tokens_per_block;
          const int count = std::min<int>(tokens_per_block, static_cast<int>(pos.size()) - b0);
          pending.push_back({l, h, record_slab, static_cast<int32_t>(b), b0, count, &turns});
        }
      }
    }
    DAPQ_RETURN_IF_ERROR(write_pending(cache, rank));
  }
  DAPQ_ASSIGN_OR_RETURN(std::string record_block, EncodeRecord(record, model_fp));
  DAPQ_RETURN_IF_ERROR(store.Put(session, RecordKey(session, turn), std::move(record_block)));
  // The commit point: until the header names this turn, a load reads the previous save.
  DAPQ_ASSIGN_OR_RETURN(std::string header, EncodeHeader(m, model_fp));
  DAPQ_RETURN_IF_ERROR(store.Put(session, ManifestKey(session), std::move(header)));
  if (incremental) {
    for (const std::string& key : superseded) store.Erase(key).IgnoreError();
    // The replaced shared blocks: their ids are in the records that wrote them. One that cannot
    // be read stays held until the session's next rewrite or its erasure.
    for (const auto& [old_turn, blocks] : superseded_shared) {
      absl::StatusOr<TurnRecord> old = ReadRecord(store, session, old_turn, model_fp);
      if (!old.ok()) continue;
      for (const SharedBlock& s : old->shared) {
        const std::string key = kvstore::KvStore::SharedKey(s.id);
        if (std::binary_search(blocks.begin(), blocks.end(), std::pair(s.slab, s.block)) &&
            !shared_written.contains(key)) {
          store.ReleaseShared(session, key).IgnoreError();
        }
      }
    }
  } else {
    // A rewrite: everything else the session held (an earlier save's records and blocks).
    std::set<std::string> keep = {ManifestKey(session), RecordKey(session, turn)};
    for (int r = 0; r < seq.local_ranks(); ++r) {
      for (int l = 0; l < c.n_layers; ++l) {
        for (int h = 0; h < kv_heads; ++h) {
          const auto& turns = block_turns[r][static_cast<size_t>(l) * kv_heads + h];
          for (size_t b = 0; b < turns.size(); ++b) {
            if (IsSharedTurn(turns[b])) continue;
            keep.insert(
                BlockKey(session, engine.first_rank() + r, l, h, static_cast<int>(b), turns[b]));
          }
        }
      }
    }
    for (const std::string& key : store.KeysOf(session)) {
      if (!keep.contains(key)) store.Erase(key).IgnoreError();
    }
    for (const std::string& key : store.SharedKeysOf(session)) {
      if (!shared_written.contains(key)) store.ReleaseShared(session, key).IgnoreError();
    }
  }
  RememberStored(seq, session, m, std::move(block_turns));
  store.SetActive(session, false);
  store.ScheduleSpill();
  return absl::OkStatus();
}

absl::StatusOr<LoadResult> LoadSession(Engine& engine, const std::string& session,
                                       kvstore::KvStore& store, FailedLoadPolicy policy,
                                       const compress::CompressionConfig& compression) {
  DAPQ_RETURN_IF_ERROR(api::ValidateSessionId(session));
  store.SetActive(session, true);
  store.Prefetch(session);  // promote the session's blocks towards the device tier
  // Errors of earlier background spills are not this load's; reads below report their own.
  store.Flush().IgnoreError();
  absl::StatusOr<std::string> bytes = store.Get(ManifestKey(session));
  if (absl::IsNotFound(bytes.status())) {
    return absl::NotFoundError(absl::StrCat("session_id: unknown session '", session, "'"));
  }
  DAPQ_RETURN_IF_ERROR(bytes.status());
  absl::StatusOr<kvstore::DecodedBlock> block = kvstore::DecodeBlock(*bytes);
  if (!block.ok()) {
    return absl::DataLossError(absl::StrCat("session ", session, ": manifest failed verification (",
                                            block.status().message(), "); cannot recompute"));
  }
  DAPQ_ASSIGN_OR_RETURN(Header m, DecodeHeader(*block));
  const ModelConfig& c = engine.config();
  const uint64_t model_fp = ModelFingerprint(c);
  if (block->meta.model_fingerprint != model_fp || m.tp != engine.options().tp ||
      m.n_layers != c.n_layers || m.head_dim != c.head_dim ||
      m.lengths.size() != static_cast<size_t>(engine.local_ranks()) * m.n_layers * m.kv_heads) {
    return absl::FailedPreconditionError(absl::StrCat(
        "session ", session, " was saved by a different model or TP degree (tp=", m.tp, ")"));
  }
  // The history: without it nothing can be recomputed either.
  std::vector<int> tokens;
  std::vector<FeedSegment> segments;
  std::vector<std::vector<int32_t>> block_turns;
  SharedIds shared_ids;
  if (absl::Status s = ReadRecords(session, m, c.max_seq_len, store, model_fp, tokens, segments,
                                   block_turns, shared_ids);
      !s.ok()) {
    return absl::Status(s.code(),
                        absl::StrCat("session ", session, ": ", s.message(), "; cannot recompute"));
  }
  LoadResult result;
  result.sequence = engine.NewSequence();
  absl::Status read =
      ReadBlocks(engine, session, m, block_turns, shared_ids, store, model_fp, *result.sequence);
  if (read.ok()) {
    Sequence& seq = *result.sequence;
    seq.RestoreState(m.next_position, m.compressed, tokens, segments);
    const size_t slabs = static_cast<size_t>(m.n_layers) * m.kv_heads;
    std::vector<std::vector<std::vector<int32_t>>> per_rank(seq.local_ranks());
    for (int r = 0; r < seq.local_ranks(); ++r) {
      per_rank[r].assign(block_turns.begin() + r * slabs, block_turns.begin() + (r + 1) * slabs);
    }
    RememberStored(seq, session, m, std::move(per_rank));
    return result;
  }
  if (policy == FailedLoadPolicy::kFail || !absl::IsDataLoss(read)) {
    return absl::Status(read.code(),
                        absl::StrCat("session ", session, ": failed load: ", read.message()));
  }
  result.recomputed = true;
  result.failure = std::string(read.message());
  result.sequence = engine.NewSequence();
  DAPQ_RETURN_IF_ERROR(engine.Replay(*result.sequence, tokens, segments, compression));
  return result;
}

}  // namespace dapq::worker
