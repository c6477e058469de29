// File: worker/session_store.h
// Sessions in the tiered KV store: after a request of a session finishes, its (compressed) KV
// is saved as blocks — per rank, layer and KV head, tokens_per_block slots each, with their
// positions, checksummed (kvstore/block_codec.h), in the cache's element type (--kv_dtype; a
// bf16 or fp16 block is half the bytes and restores exactly) — plus a manifest: a header (next
// position, per-slab lengths, which turn records hold the session) and one turn record per save
// (the tokens fed since the previous one and how, and which blocks that save wrote). A full
// block whose pool block is shared when it is saved (a prompt prefix several sequences reuse, a
// fork; or one the store already holds as shared) is written once for every session, as a
// KvStore shared block keyed by the hash of its bytes: the turn record lists those blocks (slab,
// index, content id; manifest version 3, version 2 manifests are still read), the session holds
// them (KvStore::PutShared) and lets go of them when a save replaces them or the session is
// erased; a load checks each one's bytes against its content id. The store spills idle
// sessions down the tiers. The session's next request restores the blocks into a fresh Sequence
// that continues from the right position and generates exactly what a sequence that never left the
// device would. A block that fails verification (or is missing) is never used; the failed-load
// policy decides: kRecompute replays the session's recorded feeds (Engine::Replay: the same caches,
// bit for bit), kFail returns DataLoss naming the block (a missing or corrupt header or turn record
// is DataLoss too: without the history nothing can be replayed). Keys: "<session>.m" (header),
// "<session>.t<turn>" (turn records), "<session>.r<rank>.l<layer>.h<head>.b<index>.t<turn>"
// (global rank; the turn that wrote the block), shared blocks ".shared-<content id>". A
// multi-process engine (Engine::CreateRank) saves and loads only its own rank's blocks: each rank
// of a group has its own store. The failed-load policy then applies per rank; the group driver
// agrees on recomputing across ranks (worker/service/group_driver.h). Session ids:
// api::ValidateSessionId (1-128 characters of [A-Za-z0-9_-]). Thread-safety: as the Engine (one
// call at a time per engine); the store is thread-safe.
#ifndef DAPQ_WORKER_SESSION_STORE_H_
#define DAPQ_WORKER_SESSION_STORE_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kvstore/kv_store.h"
#include "worker/compress/compression_config.h"
#include "worker/engine.h"

namespace dapq::worker {

enum class FailedLoadPolicy { kRecompute, kFail };

struct LoadResult {
  std::unique_ptr<Sequence> sequence;
  bool recomputed = false;  // the stored KV failed to load and the session was replayed
  std::string failure;      // why, when recomputed
};

// What replaying a session needs: every token fed, and how (Engine::Replay).
struct SessionHistory {
  std::vector<int> tokens;
  std::vector<FeedSegment> segments;
};

// Ends one turn of `session` (every caller: `dapq generate --session` and the group driver):
// feeds the turn's last sampled token (the engine samples it without feeding it), so the cache
// holds the whole transcript; with a store, saves the sequence there (SaveSession); returns the
// replay history. The session id must satisfy api::ValidateSessionId.
absl::StatusOr<SessionHistory> EndSessionTurn(Engine& engine, Sequence& seq,
                                              const GenerateResult& result,
                                              const std::string& session, kvstore::KvStore* store);

// Saves `seq` under `session` (replacing an earlier save) and marks the session idle. The blocks
// leave the pool through its copy stream (BlockPool::ReadAsync into pinned memory on a context
// arena, in batches of up to 16 MiB, one wait each: the compute stream is never synchronised),
// then are encoded and stored. When the
// store holds what `seq` last saved or loaded there (Sequence::stored()), the save is
// incremental: it writes only the blocks holding slots that changed since (KvCache::unchanged:
// after appends, the last partial block and the new ones) and a turn record of the history fed
// since, so its cost does not grow with the session's history; after 32 records a save rewrites
// the session as one. New blocks are written under the turn's own keys and the header last, so
// a save that fails midway leaves the previous one loadable; the blocks it replaces are erased
// after the header.
absl::Status SaveSession(const Engine& engine, Sequence& seq, const std::string& session,
                         kvstore::KvStore& store, int tokens_per_block = 16);

// Restores `session` into a new Sequence of `engine` (same model and TP degree); on a context
// arena the rows go into the pool through its copy stream (KvCache::AppendSlotsDeferred,
// BlockPool::WriteAsync: batches of up to 16 MiB of pinned memory, the compute stream ordered
// after them by an event, the host waiting for the copy stream only). `compression`
// is the session's config, used only when recomputing. NotFound for an unknown session.
absl::StatusOr<LoadResult> LoadSession(Engine& engine, const std::string& session,
                                       kvstore::KvStore& store, FailedLoadPolicy policy,
                                       const compress::CompressionConfig& compression);

}  // namespace dapq::worker

#endif  // DAPQ_WORKER_SESSION_STORE_H_
