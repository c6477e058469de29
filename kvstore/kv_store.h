// File: kvstore/kv_store.h
// The tiered KV store: encoded blocks (block_codec.h) under string keys, grouped by session,
// living on the fastest tier that has room — device, then host, then disk, then an optional
// remote tier. Blocks enter at the top. When a tier passes its high watermark the spill engine
// moves least-recently-used blocks down, idle sessions' blocks before active ones (priority),
// until the tier is under its low watermark. Get finds a block wherever it is, verifies it
// (lower tiers checksum it) and promotes it back to the top. A failed spill (ENOSPC, I/O
// error, peer gone) leaves the block where it was and reports the error. Spills and PersistAll
// move blocks in batches (up to kMaxBatchBlocks blocks / kMaxBatchBytes bytes) with one
// Tier::PutBatch each: the disk tier writes a batch as one segment file with one fsync. When the
// tier below has no room for a whole spill batch, that batch moves one block at a time as
// before (each making room further down first when needed).
// Spills and prefetches run on a background thread (ScheduleSpill / Prefetch); Flush waits for
// them, so tests never sleep.
// Shared blocks: a block several sessions use (a prompt prefix their sequences shared in the
// block pool) is stored once, content-addressed (SharedKey(ContentIdOf(bytes))), and held by
// each session that uses it (PutShared / ReleaseShared); it leaves the store with its last
// holder (ReleaseShared, EraseSession). Its keys are ".shared-<32 hex>": the part before the
// first '.' (a restart's session of a recovered block) is "", the owner of every shared block,
// which no session id can name. After a restart the holders are unknown: recovered shared blocks
// have none, Sessions() lists "" while any such orphan exists, and EraseSession("") collects
// every shared block. A shared block counts as active (spilled after idle ones) while any of
// its holders is, and Prefetch(session) promotes the shared blocks the session holds too.
// Memory tiers: with use_cuda (CUDA builds, a GPU present) the device tier holds its blocks in
// GPU memory and the host tier in pinned host memory (cuda_tiers.h): each transfer is copied on
// the device tier's own non-blocking CUDA stream, so the copies of a spill or prefetch batch,
// run on the background thread, overlap with compute on the process's other streams. Without
// use_cuda both are plain process memory (MemoryTier), the mode of CPU builds.
// Thread-safety: thread-safe. Ownership: owns its memory and disk tiers; the remote tier, the
// FileEnv and the clock are borrowed.
#ifndef DAPQ_KVSTORE_KV_STORE_H_
#define DAPQ_KVSTORE_KV_STORE_H_

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "common/mutex.h"
#include "kvstore/file_env.h"
#include "kvstore/tier.h"

namespace dapq::kvstore {

// Sees every block transfer between tiers and every failed load (metrics). Called with the
// store's lock held: implementations must be quick and must not call the store.
class KvStoreObserver {
 public:
  virtual ~KvStoreObserver() = default;
  // A block moved from tier `from` to tier `to` (from < to: a spill; from > to: a restore, i.e.
  // a promotion on access or a prefetch). `status` is not OK when the move failed (the block
  // then stayed on `from`).
  virtual void OnTransfer(int from, int to, size_t bytes, double seconds,
                          const absl::Status& status) = 0;
  // Get could not read a block from its tier (DataLoss: failed verification; NotFound: missing;
  // Unavailable: the remote tier is gone).
  virtual void OnFailedLoad(int tier, const absl::Status& status) = 0;
};

struct KvStoreOptions {
  TierOptions device{"device", 64ull << 20, 0.9, 0.7};
  TierOptions host{"host", 256ull << 20, 0.9, 0.7};
  TierOptions disk{"disk", 4ull << 30, 0.95, 0.8};
  std::string disk_dir;                 // empty: no disk tier
  Tier* remote = nullptr;               // optional last tier (gRPC peer or Redis); not owned
  FileEnv* env = nullptr;               // nullptr: POSIX
  bool background = true;               // run spills/prefetches on a background thread
  KvStoreObserver* observer = nullptr;  // optional; not owned
  // Device tier in GPU memory of CUDA device `cuda_device`, host tier in pinned host memory.
  // Open fails with FailedPrecondition naming use_cuda in builds without CUDA
  // (DAPQ_HAVE_CUDA=0) and when the process sees no GPU.
  bool use_cuda = false;
  int cuda_device = 0;
  absl::Status Validate() const;
};

struct TierStats {
  std::string name;
  size_t used_bytes = 0;
  size_t capacity_bytes = 0;
  size_t high_watermark_bytes = 0;
  int blocks = 0;
  int shared_blocks = 0;  // of `blocks`, the shared ones (each stored once, see KvStore)
};

// The 128-bit content hash (XXH3) of a shared block's bytes.
struct ContentId {
  uint64_t high = 0, low = 0;
  bool operator==(const ContentId&) const = default;
};

class KvStore {
 public:
  static constexpr size_t kMaxBatchBlocks = 64;
  static constexpr size_t kMaxBatchBytes = 4ull << 20;

  // The owner ("session") of every shared block, and the prefix of their keys.
  static constexpr char kSharedOwner[] = "";
  static constexpr char kSharedKeyPrefix[] = ".shared-";

  static absl::StatusOr<std::unique_ptr<KvStore>> Open(const KvStoreOptions& options);
  ~KvStore();

  // Content addressing: the hash of `block`'s bytes, and the key of a shared block with that
  // hash (kSharedKeyPrefix, then the hash as 32 hex digits).
  static ContentId ContentIdOf(std::string_view block);
  static std::string SharedKey(const ContentId& id);
  static bool IsSharedKey(std::string_view key);

  // Stores (or replaces) a block of `session` on the top tier, spilling others down to make
  // room. ResourceExhausted when no tier has room; a replaced block is then left as it was.
  // InvalidArgument for a shared block's key (PutShared) or an empty session.
  absl::Status Put(const std::string& session, const std::string& key, std::string block);
  // A shared block used by `holder` (a session). `key` is content-addressed: the caller
  // guarantees that equal keys mean equal bytes (SharedKey(ContentIdOf(block))). When the store
  // already holds `key`, `holder` joins its holders (a no-op if it holds it already), `block` is
  // dropped without any tier write and the block counts as just used; otherwise it is stored as
  // Put stores a block, with `holder` its only holder. InvalidArgument for a key that is not a
  // shared key or an empty holder; ResourceExhausted as for Put.
  absl::Status PutShared(const std::string& holder, const std::string& key, std::string block);
  // `holder` lets go of shared block `key`; the block is erased with its last holder. OK when
  // the block is absent or `holder` does not hold it.
  absl::Status ReleaseShared(const std::string& holder, const std::string& key);
  // The block's bytes from whichever tier holds it (verified there); promoted to the top tier
  // when it fits. NotFound / DataLoss / Unavailable (remote gone).
  absl::StatusOr<std::string> Get(const std::string& key);
  // Erases the blocks of `session` and releases the shared blocks it holds (those it held last
  // are erased). EraseSession(kSharedOwner) erases every shared block, whoever holds it
  // (collecting the orphans a restart leaves; see the file comment).
  absl::Status EraseSession(const std::string& session);
  // Erases one block (OK when absent); a shared block is erased for all its holders.
  absl::Status Erase(const std::string& key);
  // The blocks `session` owns (for kSharedOwner: every shared block); not the shared blocks it
  // holds (SharedKeysOf).
  std::vector<std::string> KeysOf(const std::string& session) const;
  // The shared blocks `holder` holds, sorted.
  std::vector<std::string> SharedKeysOf(const std::string& holder) const;
  // How many sessions hold shared block `key` (0 when absent, or recovered after a restart).
  int SharedHolders(const std::string& key) const;
  // Shared blocks in the store (each counted once, whatever its holders).
  int shared_blocks() const;
  // Every session with a block in the store or a hold on a shared block (recovered ones
  // included), sorted; kSharedOwner while a shared block has no holder (recovered orphans).
  std::vector<std::string> Sessions() const;
  // `session` owns a block or holds a shared one.
  bool HasSession(const std::string& session) const;
  // Blocks of active sessions are spilled after idle ones (shared blocks: when any holder is
  // active).
  void SetActive(const std::string& session, bool active);

  // One synchronous spill pass over every tier above its high watermark.
  absl::Status Spill();
  // Moves every block off the memory tiers onto the disk tier (graceful shutdown: the disk tier
  // survives a restart). FailedPrecondition without a disk tier.
  absl::Status PersistAll();
  // Asks the background thread for a spill pass / to promote a session's blocks to the top.
  void ScheduleSpill();
  void Prefetch(const std::string& session);
  // Waits until background work queued so far is done; returns its first error, if any.
  absl::Status Flush();

  // Index of the tier holding `key` (0 = top), -1 if absent.
  int TierOf(const std::string& key) const;
  std::vector<TierStats> Stats() const;
  int num_tiers() const { return static_cast<int>(tiers_.size()); }
  Tier& tier(int i) { return *tiers_[i]; }

 private:
  struct Entry {
    std::string session;
    int tier = 0;
    uint64_t last_use = 0;
    size_t bytes = 0;  // 0 when unknown (recovered after a restart)
  };
  explicit KvStore(const KvStoreOptions& options) : options_(options) {}
  // Put's body: stores `block` as `key` of `session` on the first tier that can take it.
  absl::Status PutLocked(const std::string& session, const std::string& key, std::string block)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Erases `key` from its tier and the index (and the shared table). `it` is its index entry.
  absl::Status EraseLocked(std::map<std::string, Entry>::iterator it)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Spill priority: the block's session is active, or (a shared block) any of its holders.
  bool ActiveLocked(const std::string& key, const Entry& e) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // `retried_if_full`: a ResourceExhausted answer is not reported to the observer (the caller
  // makes room and retries).
  absl::Status MoveLocked(const std::string& key, Entry& e, int to, bool retried_if_full = false)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Moves `bytes` (read from e's tier) to the top tier if it fits; reports the transfer.
  void PromoteLocked(const std::string& key, Entry& e, const std::string& bytes,
                     std::chrono::steady_clock::time_point start)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Moves `blocks` (keys with the bytes read from tier `from`) to tier `to` with one
  // Tier::PutBatch, then erases them from `from`. All or nothing: on failure every block stays
  // on `from`. The observer is told per block, each with the batch's time split evenly (so the
  // per-block seconds add up to the batch's); `retried_if_full` as for MoveLocked.
  absl::Status MoveBatchLocked(int from, int to,
                               std::vector<std::pair<std::string, std::string>> blocks,
                               bool retried_if_full) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Reads `keys` from tier `t` (a failed read is reported to the observer and returned).
  absl::StatusOr<std::vector<std::pair<std::string, std::string>>> ReadBatchLocked(
      int t, const std::vector<std::string>& keys) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status SpillTierLocked(int tier) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status MakeRoomLocked(int tier, size_t bytes, const std::string& keep)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void PrefetchLocked(const std::string& session) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void BackgroundLoop();

  const KvStoreOptions options_;
  std::vector<std::unique_ptr<Tier>> owned_;
  std::vector<Tier*> tiers_;
  mutable Mutex mu_;
  std::map<std::string, Entry> index_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, bool> active_ ABSL_GUARDED_BY(mu_);
  // Shared block key -> its holders; a key is here exactly when its entry's session is
  // kSharedOwner (recovered ones with no holder).
  std::map<std::string, std::set<std::string>> shared_ ABSL_GUARDED_BY(mu_);
  uint64_t clock_ ABSL_GUARDED_BY(mu_) = 0;
  // Background work.
  std::vector<std::string> pending_ ABSL_GUARDED_BY(mu_);  // "" = spill, else prefetch session
  bool busy_ ABSL_GUARDED_BY(mu_) = false;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status background_error_ ABSL_GUARDED_BY(mu_);
  CondVar changed_;  // pending_, busy_ or stop_ changed
  std::thread worker_;
};

}  // namespace dapq::kvstore

#endif  // DAPQ_KVSTORE_KV_STORE_H_
