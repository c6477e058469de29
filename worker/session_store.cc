// File: worker/session_store.cc
// Session save/restore through the KV store, with the manifest and the failed-load policy.
#include "worker/session_store.h"

#include "absl/strings/str_cat.h"
#include "api/request_rules.h"
#include "common/status_macros.h"
#include "kvstore/block_codec.h"

namespace dapq::worker {
namespace {

constexpr int32_t kManifestVersion = 1;
constexpr int32_t kManifestLayer = -1;

std::string ManifestKey(const std::string& session) { return session + ".m"; }
std::string BlockKey(const std::string& session, int rank, int layer, int head, int index) {
  return absl::StrCat(session, ".r", rank, ".l", layer, ".h", head, ".b", index);
}

uint64_t ModelFingerprint(const ModelConfig& c) { return kvstore::Fingerprint(c.DebugString()); }

struct Manifest {
  int tp = 0, n_layers = 0, kv_heads = 0, head_dim = 0, tokens_per_block = 0;
  int next_position = 0;
  bool compressed = false;
  std::vector<int> tokens;
  std::vector<FeedSegment> segments;
  std::vector<int32_t> lengths;  // [local rank][layer][KV head of the rank]
};

absl::StatusOr<std::string> EncodeManifest(const Manifest& m, uint64_t model_fp) {
  std::vector<int32_t> v = {kManifestVersion,
                            m.tp,
                            m.n_layers,
                            m.kv_heads,
                            m.head_dim,
                            m.tokens_per_block,
                            m.next_position,
                            m.compressed ? 1 : 0,
                            static_cast<int32_t>(m.tokens.size()),
                            static_cast<int32_t>(m.segments.size()),
                            static_cast<int32_t>(m.lengths.size())};
  v.insert(v.end(), m.tokens.begin(), m.tokens.end());
  for (const FeedSegment& s : m.segments) {
    v.push_back(static_cast<int32_t>(s.kind));
    v.push_back(s.length);
  }
  v.insert(v.end(), m.lengths.begin(), m.lengths.end());
  const std::vector<float> payload(2 * v.size(), 0.0f);
  return kvstore::EncodeBlock({model_fp, 0, kManifestLayer, 0, 1, 1}, v, payload);
}

absl::StatusOr<Manifest> DecodeManifest(const kvstore::DecodedBlock& b) {
  const std::vector<int32_t>& v = b.positions;
  auto bad = [] { return absl::DataLossError("session manifest: malformed"); };
  if (b.meta.layer != kManifestLayer || v.size() < 11 || v[0] != kManifestVersion) return bad();
  Manifest m;
  m.tp = v[1];
  m.n_layers = v[2];
  m.kv_heads = v[3];
  m.head_dim = v[4];
  m.tokens_per_block = v[5];
  m.next_position = v[6];
  m.compressed = v[7] != 0;
  // Counts are checked as signed 64-bit values before any use: a negative count cast to size_t
  // would wrap the size check below.
  if (v[8] < 0 || v[9] < 0 || v[10] < 0 || m.next_position < 0 || m.tokens_per_block <= 0) {
    return bad();
  }
  const int64_t want = 11 + int64_t{v[8]} + 2 * int64_t{v[9]} + int64_t{v[10]};
  if (static_cast<int64_t>(v.size()) != want) return bad();
  const size_t nt = v[8], ns = v[9];
  m.tokens.assign(v.begin() + 11, v.begin() + 11 + nt);
  for (size_t i = 0; i < ns; ++i) {
    const int32_t kind = v[11 + nt + 2 * i];
    if (kind < 0 || kind > static_cast<int32_t>(FeedSegment::Kind::kDecode)) return bad();
    if (v[12 + nt + 2 * i] < 0) return bad();
    m.segments.push_back({static_cast<FeedSegment::Kind>(kind), v[12 + nt + 2 * i]});
  }
  m.lengths.assign(v.begin() + 11 + nt + 2 * ns, v.end());
  for (int32_t length : m.lengths) {
    if (length < 0) return bad();
  }
  return m;
}

// Reads every block of the session into a fresh sequence.
absl::Status ReadBlocks(Engine& engine, const std::string& session, const Manifest& m,
                        kvstore::KvStore& store, uint64_t model_fp, Sequence& seq) {
  size_t slab = 0;
  for (int r = 0; r < seq.local_ranks(); ++r) {
    const int rank = engine.first_rank() + r;  // keys carry the global rank
    for (int l = 0; l < m.n_layers; ++l) {
      for (int h = 0; h < m.kv_heads; ++h, ++slab) {
        // In 64 bits: a manifest's length near INT_MAX plus tokens_per_block overflowed an int.
        const int64_t length = m.lengths[slab];
        const int64_t blocks = (length + m.tokens_per_block - 1) / m.tokens_per_block;
        for (int64_t b = 0; b < blocks; ++b) {
          const std::string key = BlockKey(session, rank, l, h, static_cast<int>(b));
          absl::StatusOr<std::string> bytes = store.Get(key);
          if (absl::IsNotFound(bytes.status())) {
            return absl::DataLossError(absl::StrCat("block ", key, " is missing"));
          }
          DAPQ_RETURN_IF_ERROR(bytes.status());
          absl::StatusOr<kvstore::DecodedBlock> block = kvstore::DecodeBlock(*bytes);
          if (!block.ok()) {
            return absl::DataLossError(absl::StrCat("block ", key, ": ", block.status().message()));
          }
          const int count = static_cast<int>(block->positions.size());
          if (block->meta.model_fingerprint != model_fp || block->meta.layer != l ||
              block->meta.head_dim != m.head_dim || count > m.tokens_per_block) {
            return absl::DataLossError(absl::StrCat("block ", key, " does not belong here"));
          }
          const float* k = block->payload.data();
          const float* v = k + static_cast<size_t>(count) * m.head_dim;
          DAPQ_RETURN_IF_ERROR(seq.cache(r).AppendSlots(l, h, block->positions, k, v));
        }
      }
    }
  }
  return absl::OkStatus();
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

absl::Status SaveSession(const Engine& engine, const Sequence& seq, const std::string& session,
                         kvstore::KvStore& store, int tokens_per_block) {
  DAPQ_RETURN_IF_ERROR(api::ValidateSessionId(session));
  if (tokens_per_block <= 0 || (tokens_per_block & (tokens_per_block - 1)) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("tokens_per_block=", tokens_per_block, " must be a power of two"));
  }
  const ModelConfig& c = engine.config();
  const uint64_t model_fp = ModelFingerprint(c);
  const int tp = engine.options().tp;
  Manifest m;
  m.tp = tp;
  m.n_layers = c.n_layers;
  m.kv_heads = c.n_kv_heads / tp;
  m.head_dim = c.head_dim;
  m.tokens_per_block = tokens_per_block;
  m.next_position = seq.next_position();
  m.compressed = seq.compressed();
  m.tokens = seq.tokens();
  m.segments = seq.segments();
  DAPQ_RETURN_IF_ERROR(store.EraseSession(session));
  std::vector<float> payload;
  // This process's ranks (all of them in-process; one in a multi-process group, whose other
  // ranks save theirs in their own stores).
  for (int r = 0; r < seq.local_ranks(); ++r) {
    const int rank = engine.first_rank() + r;
    const KvCache& cache = seq.cache(r);
    for (int l = 0; l < c.n_layers; ++l) {
      for (int h = 0; h < m.kv_heads; ++h) {
        const std::span<const int32_t> pos = cache.positions(l, h);
        m.lengths.push_back(static_cast<int32_t>(pos.size()));
        for (size_t b0 = 0, index = 0; b0 < pos.size(); b0 += tokens_per_block, ++index) {
          const size_t count = std::min<size_t>(tokens_per_block, pos.size() - b0);
          const size_t elems = count * c.head_dim;
          payload.resize(2 * elems);
          cache.Gather(l, h, static_cast<int>(b0), static_cast<int>(count), payload.data(),
                       payload.data() + elems);
          const kvstore::BlockMeta meta{
              model_fp, 0, l, rank * m.kv_heads + h, 1, c.head_dim, cache.pool().dtype()};
          DAPQ_ASSIGN_OR_RETURN(std::string block,
                                kvstore::EncodeBlock(meta, pos.subspan(b0, count), payload));
          DAPQ_RETURN_IF_ERROR(store.Put(
              session, BlockKey(session, rank, l, h, static_cast<int>(index)), std::move(block)));
        }
      }
    }
  }
  DAPQ_ASSIGN_OR_RETURN(std::string manifest, EncodeManifest(m, model_fp));
  DAPQ_RETURN_IF_ERROR(store.Put(session, ManifestKey(session), std::move(manifest)));
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
  DAPQ_ASSIGN_OR_RETURN(Manifest m, DecodeManifest(*block));
  const ModelConfig& c = engine.config();
  const uint64_t model_fp = ModelFingerprint(c);
  if (block->meta.model_fingerprint != model_fp || m.tp != engine.options().tp ||
      m.n_layers != c.n_layers || m.head_dim != c.head_dim ||
      m.lengths.size() != static_cast<size_t>(engine.local_ranks()) * m.n_layers * m.kv_heads) {
    return absl::FailedPreconditionError(absl::StrCat(
        "session ", session, " was saved by a different model or TP degree (tp=", m.tp, ")"));
  }
  LoadResult result;
  result.sequence = engine.NewSequence();
  absl::Status read = ReadBlocks(engine, session, m, store, model_fp, *result.sequence);
  if (read.ok()) {
    result.sequence->RestoreState(m.next_position, m.compressed, m.tokens, m.segments);
    return result;
  }
  if (policy == FailedLoadPolicy::kFail || !absl::IsDataLoss(read)) {
    return absl::Status(read.code(),
                        absl::StrCat("session ", session, ": failed load: ", read.message()));
  }
  result.recomputed = true;
  result.failure = std::string(read.message());
  result.sequence = engine.NewSequence();
  DAPQ_RETURN_IF_ERROR(engine.Replay(*result.sequence, m.tokens, m.segments, compression));
  return result;
}

}  // namespace dapq::worker
