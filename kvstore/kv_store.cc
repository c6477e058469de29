// File: kvstore/kv_store.cc
// Tier index, LRU-with-priority spilling, promotion, shared blocks and the background worker.
#include "kvstore/kv_store.h"

#include <xxhash.h>

#include <algorithm>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "kvstore/cuda_tiers.h"
#include "kvstore/disk_tier.h"
#include "kvstore/memory_tier.h"

namespace dapq::kvstore {

absl::Status KvStoreOptions::Validate() const {
  DAPQ_RETURN_IF_ERROR(device.Validate());
  DAPQ_RETURN_IF_ERROR(host.Validate());
  if (!disk_dir.empty()) DAPQ_RETURN_IF_ERROR(disk.Validate());
  if (use_cuda && cuda_device < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("kv store: cuda_device must be >= 0, got ", cuda_device));
  }
  return absl::OkStatus();
}

namespace {

// The device and host tiers: GPU and pinned host memory with use_cuda, else process memory.
absl::Status OpenMemoryTiers(const KvStoreOptions& options,
                             std::vector<std::unique_ptr<Tier>>& tiers) {
  if (!options.use_cuda) {
    DAPQ_ASSIGN_OR_RETURN(std::unique_ptr<MemoryTier> device, MemoryTier::Create(options.device));
    DAPQ_ASSIGN_OR_RETURN(std::unique_ptr<MemoryTier> host, MemoryTier::Create(options.host));
    tiers.push_back(std::move(device));
    tiers.push_back(std::move(host));
    return absl::OkStatus();
  }
  // A build without CUDA answers Unimplemented: for this option that is a precondition.
  auto named = [&options](const absl::Status& s) {
    const absl::StatusCode code =
        absl::IsUnimplemented(s) ? absl::StatusCode::kFailedPrecondition : s.code();
    return absl::Status(code, absl::StrCat("kv store: use_cuda=true (cuda_device ",
                                           options.cuda_device, "): ", s.message()));
  };
  absl::StatusOr<std::unique_ptr<Tier>> device = NewDeviceTier(options.device, options.cuda_device);
  if (!device.ok()) return named(device.status());
  absl::StatusOr<std::unique_ptr<Tier>> host = NewPinnedHostTier(options.host, options.cuda_device);
  if (!host.ok()) return named(host.status());
  tiers.push_back(*std::move(device));
  tiers.push_back(*std::move(host));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<KvStore>> KvStore::Open(const KvStoreOptions& options) {
  DAPQ_RETURN_IF_ERROR(options.Validate());
  std::unique_ptr<KvStore> store(new KvStore(options));
  DAPQ_RETURN_IF_ERROR(OpenMemoryTiers(options, store->owned_));
  if (!options.disk_dir.empty()) {
    DAPQ_ASSIGN_OR_RETURN(std::unique_ptr<DiskTier> disk,
                          DiskTier::Open(options.disk, options.disk_dir, options.env));
    store->owned_.push_back(std::move(disk));
  }
  for (auto& t : store->owned_) store->tiers_.push_back(t.get());
  if (options.remote != nullptr) store->tiers_.push_back(options.remote);
  {
    // Blocks that survived a restart on the persistent tiers. Their session is the key's prefix
    // up to the first '.', the naming convention of session blocks.
    MutexLock lock(&store->mu_);
    for (int t = 2; t < static_cast<int>(store->tiers_.size()); ++t) {
      for (const std::string& key : store->tiers_[t]->Keys()) {
        const Entry& e = store->index_[key] = Entry{key.substr(0, key.find('.')), t, 0};
        // A shared block: its holders went with the previous run.
        if (e.session == kSharedOwner) store->shared_[key];
      }
    }
  }
  if (options.background) store->worker_ = std::thread([s = store.get()] { s->BackgroundLoop(); });
  return store;
}

ContentId KvStore::ContentIdOf(std::string_view block) {
  const XXH128_hash_t h = XXH3_128bits(block.data(), block.size());
  return ContentId{h.high64, h.low64};
}

std::string KvStore::SharedKey(const ContentId& id) {
  std::string key = kSharedKeyPrefix;
  for (const uint64_t half : {id.high, id.low}) {
    for (int shift = 60; shift >= 0; shift -= 4) key += "0123456789abcdef"[(half >> shift) & 0xf];
  }
  return key;
}

bool KvStore::IsSharedKey(std::string_view key) {
  return absl::StartsWith(absl::string_view(key.data(), key.size()), kSharedKeyPrefix);
}

KvStore::~KvStore() {
  {
    MutexLock lock(&mu_);
    stop_ = true;
    changed_.SignalAll();
  }
  if (worker_.joinable()) worker_.join();
}

absl::Status KvStore::MoveLocked(const std::string& key, Entry& e, int to, bool retried_if_full) {
  const auto start = std::chrono::steady_clock::now();
  Tier& from = *tiers_[e.tier];
  absl::StatusOr<std::string> bytes = from.Get(key);
  if (!bytes.ok()) {
    if (options_.observer) options_.observer->OnFailedLoad(e.tier, bytes.status());
    return bytes.status();
  }
  const size_t size = bytes->size();
  absl::Status s = tiers_[to]->Put(key, *std::move(bytes));  // on failure: stays put
  if (s.ok()) s = from.Erase(key);
  // A full target that the caller makes room in and retries is not a failure (yet).
  if (options_.observer && !(retried_if_full && absl::IsResourceExhausted(s))) {
    options_.observer->OnTransfer(
        e.tier, to, size,
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), s);
  }
  DAPQ_RETURN_IF_ERROR(s);
  e.tier = to;
  return absl::OkStatus();
}

void KvStore::PromoteLocked(const std::string& key, Entry& e, const std::string& bytes,
                            std::chrono::steady_clock::time_point start) {
  if (e.tier == 0 || !MakeRoomLocked(0, bytes.size(), key).ok()) return;
  const absl::Status s = tiers_[0]->Put(key, bytes);
  if (options_.observer) {
    options_.observer->OnTransfer(
        e.tier, 0, bytes.size(),
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), s);
  }
  if (!s.ok()) return;
  tiers_[e.tier]->Erase(key).IgnoreError();
  e.tier = 0;
  e.bytes = bytes.size();
}

absl::StatusOr<std::vector<std::pair<std::string, std::string>>> KvStore::ReadBatchLocked(
    int t, const std::vector<std::string>& keys) {
  std::vector<std::pair<std::string, std::string>> blocks;
  blocks.reserve(keys.size());
  for (const std::string& key : keys) {
    absl::StatusOr<std::string> bytes = tiers_[t]->Get(key);
    if (!bytes.ok()) {
      if (options_.observer) options_.observer->OnFailedLoad(t, bytes.status());
      return absl::Status(bytes.status().code(),
                          absl::StrCat("reading ", key, ": ", bytes.status().message()));
    }
    blocks.emplace_back(key, *std::move(bytes));
  }
  return blocks;
}

absl::Status KvStore::MoveBatchLocked(int from, int to,
                                      std::vector<std::pair<std::string, std::string>> blocks,
                                      bool retried_if_full) {
  const auto start = std::chrono::steady_clock::now();
  std::vector<std::pair<std::string, size_t>> moved;  // key, bytes
  moved.reserve(blocks.size());
  for (const auto& [key, bytes] : blocks) moved.emplace_back(key, bytes.size());
  const absl::Status put = tiers_[to]->PutBatch(std::move(blocks));  // on failure: all stay
  std::vector<absl::Status> statuses(moved.size(), put);
  absl::Status first = put;
  if (put.ok()) {
    for (size_t i = 0; i < moved.size(); ++i) {
      statuses[i] = tiers_[from]->Erase(moved[i].first);
      if (statuses[i].ok()) {
        index_[moved[i].first].tier = to;
      } else if (first.ok()) {
        first = statuses[i];
      }
    }
  }
  if (options_.observer && !(retried_if_full && absl::IsResourceExhausted(put))) {
    const double each =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() /
        static_cast<double>(std::max<size_t>(1, moved.size()));
    for (size_t i = 0; i < moved.size(); ++i) {
      options_.observer->OnTransfer(from, to, moved[i].second, each, statuses[i]);
    }
  }
  return first;
}

absl::Status KvStore::SpillTierLocked(int t) {
  if (t + 1 >= static_cast<int>(tiers_.size())) return absl::OkStatus();
  Tier& tier = *tiers_[t];
  if (!tier.AboveHighWatermark()) return absl::OkStatus();
  // Victims: idle sessions first, then least recently used.
  std::vector<std::pair<std::tuple<bool, uint64_t, std::string>, std::string>> victims;
  for (const auto& [key, e] : index_) {
    if (e.tier != t) continue;
    victims.push_back({{ActiveLocked(key, e), e.last_use, key}, key});
  }
  std::sort(victims.begin(), victims.end());
  const double low = tier.options().low_watermark * static_cast<double>(tier.capacity_bytes());
  auto named = [&](const std::vector<std::string>& keys, const absl::Status& s) {
    return absl::Status(
        s.code(),
        absl::StrCat(
            "spilling ",
            keys.size() == 1 ? keys[0] : absl::StrCat(keys.size(), " blocks (", keys[0], ", ...)"),
            " from ", tier.options().name, " to ", tiers_[t + 1]->options().name, ": ",
            s.message()));
  };
  size_t next = 0;
  while (next < victims.size() && !tier.BelowLowWatermark()) {
    // The next batch: just enough victims to reach the low watermark, within the batch limits.
    std::vector<std::pair<std::string, std::string>> batch;
    std::vector<std::string> keys;
    double projected = static_cast<double>(tier.used_bytes());
    size_t batch_bytes = 0;
    while (next < victims.size() && projected > low && batch.size() < kMaxBatchBlocks &&
           batch_bytes < kMaxBatchBytes) {
      const std::string& key = victims[next++].second;
      absl::StatusOr<std::vector<std::pair<std::string, std::string>>> one =
          ReadBatchLocked(t, {key});
      if (!one.ok()) return named({key}, one.status());
      const size_t size = (*one)[0].second.size();
      projected -= static_cast<double>(size);
      batch_bytes += size;
      keys.push_back(key);
      batch.push_back(std::move((*one)[0]));
    }
    absl::Status s = MoveBatchLocked(t, t + 1, std::move(batch), /*retried_if_full=*/true);
    if (absl::IsResourceExhausted(s)) {
      // The next tier has no room for the whole batch: one block at a time as before, each
      // making room below first (then retried once) when the next tier is full.
      for (const std::string& key : keys) {
        if (tier.BelowLowWatermark()) break;
        Entry& e = index_[key];
        s = MoveLocked(key, e, t + 1, /*retried_if_full=*/true);
        if (absl::IsResourceExhausted(s)) {
          DAPQ_RETURN_IF_ERROR(SpillTierLocked(t + 1));
          s = MoveLocked(key, e, t + 1);
        }
        if (!s.ok()) return named({key}, s);
      }
    }
    if (!s.ok()) return named(keys, s);
  }
  return SpillTierLocked(t + 1);
}

absl::Status KvStore::MakeRoomLocked(int t, size_t bytes, const std::string& keep) {
  Tier& tier = *tiers_[t];
  if (tier.used_bytes() + bytes <= tier.capacity_bytes()) return absl::OkStatus();
  if (t + 1 >= static_cast<int>(tiers_.size())) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "kv store: no room for ", bytes, " bytes on the last tier ", tier.options().name));
  }
  std::vector<std::tuple<bool, uint64_t, std::string>> victims;
  for (const auto& [key, e] : index_) {
    if (e.tier != t || key == keep) continue;
    victims.emplace_back(ActiveLocked(key, e), e.last_use, key);
  }
  std::sort(victims.begin(), victims.end());
  for (const auto& [active, use, key] : victims) {
    if (tier.used_bytes() + bytes <= tier.capacity_bytes()) break;
    Entry& e = index_[key];
    DAPQ_ASSIGN_OR_RETURN(std::string moving, tier.Get(key));
    DAPQ_RETURN_IF_ERROR(MakeRoomLocked(t + 1, moving.size(), ""));
    DAPQ_RETURN_IF_ERROR(MoveLocked(key, e, t + 1));
  }
  if (tier.used_bytes() + bytes > tier.capacity_bytes()) {
    return absl::ResourceExhaustedError(
        absl::StrCat("kv store: block of ", bytes, " bytes exceeds tier ", tier.options().name));
  }
  return absl::OkStatus();
}

bool KvStore::ActiveLocked(const std::string& key, const Entry& e) const {
  if (e.session != kSharedOwner) {
    auto it = active_.find(e.session);
    return it != active_.end() && it->second;
  }
  auto held = shared_.find(key);
  if (held == shared_.end()) return false;
  for (const std::string& holder : held->second) {
    auto it = active_.find(holder);
    if (it != active_.end() && it->second) return true;
  }
  return false;
}

absl::Status KvStore::Put(const std::string& session, const std::string& key, std::string block) {
  if (IsSharedKey(key) || session == kSharedOwner) {
    return absl::InvalidArgumentError(
        absl::StrCat("kv store: Put of '", key, "' by '", session,
                     "': shared blocks go through PutShared, and every block needs a session"));
  }
  MutexLock lock(&mu_);
  return PutLocked(session, key, std::move(block));
}

absl::Status KvStore::PutShared(const std::string& holder, const std::string& key,
                                std::string block) {
  if (!IsSharedKey(key) || holder == kSharedOwner) {
    return absl::InvalidArgumentError(absl::StrCat("kv store: PutShared of '", key, "' by '",
                                                   holder, "': needs a shared key and a holder"));
  }
  MutexLock lock(&mu_);
  if (auto it = shared_.find(key); it != shared_.end()) {
    it->second.insert(holder);  // stored already: one more holder, no tier write
    index_[key].last_use = ++clock_;
    return absl::OkStatus();
  }
  DAPQ_RETURN_IF_ERROR(PutLocked(kSharedOwner, key, std::move(block)));
  shared_[key] = {holder};
  return absl::OkStatus();
}

absl::Status KvStore::ReleaseShared(const std::string& holder, const std::string& key) {
  MutexLock lock(&mu_);
  auto it = shared_.find(key);
  if (it == shared_.end() || it->second.erase(holder) == 0 || !it->second.empty()) {
    return absl::OkStatus();
  }
  return EraseLocked(index_.find(key));
}

absl::Status KvStore::EraseLocked(std::map<std::string, Entry>::iterator it) {
  absl::Status s = tiers_[it->second.tier]->Erase(it->first);
  shared_.erase(it->first);
  index_.erase(it);
  return s;
}

absl::Status KvStore::PutLocked(const std::string& session, const std::string& key,
                                std::string block) {
  auto it = index_.find(key);
  const int old_tier = it == index_.end() ? -1 : it->second.tier;
  const size_t old_bytes = it == index_.end() ? 0 : it->second.bytes;
  const size_t size = block.size();
  // Top tier first; a block too big for it goes to the first tier that can take it. A block
  // being replaced stays until its successor is stored.
  for (int t = 0; t < static_cast<int>(tiers_.size()); ++t) {
    if (size > tiers_[t]->capacity_bytes()) continue;
    const size_t credit = t == old_tier ? old_bytes : 0;
    DAPQ_RETURN_IF_ERROR(MakeRoomLocked(t, size > credit ? size - credit : 0, key));
    DAPQ_RETURN_IF_ERROR(tiers_[t]->Put(key, std::move(block)));
    if (old_tier >= 0 && old_tier != t) tiers_[old_tier]->Erase(key).IgnoreError();
    index_[key] = Entry{session, t, ++clock_, size};
    return absl::OkStatus();
  }
  return absl::ResourceExhaustedError(
      absl::StrCat("kv store: block ", key, " is larger than every tier"));
}

absl::StatusOr<std::string> KvStore::Get(const std::string& key) {
  MutexLock lock(&mu_);
  auto it = index_.find(key);
  if (it == index_.end()) return absl::NotFoundError(absl::StrCat("kv store: no block ", key));
  Entry& e = it->second;
  e.last_use = ++clock_;
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<std::string> bytes = tiers_[e.tier]->Get(key);
  if (!bytes.ok()) {
    if (options_.observer) options_.observer->OnFailedLoad(e.tier, bytes.status());
    return bytes.status();
  }
  PromoteLocked(key, e, *bytes, start);
  return bytes;
}

absl::Status KvStore::EraseSession(const std::string& session) {
  MutexLock lock(&mu_);
  absl::Status first;
  // Its own blocks (for kSharedOwner: every shared block), then its holds.
  for (auto it = index_.begin(); it != index_.end();) {
    auto next = std::next(it);
    bool erase = it->second.session == session;
    if (!erase && it->second.session == kSharedOwner) {
      auto held = shared_.find(it->first);
      erase = held != shared_.end() && held->second.erase(session) > 0 && held->second.empty();
    }
    if (erase) {
      absl::Status s = EraseLocked(it);
      if (!s.ok() && first.ok()) first = s;
    }
    it = next;
  }
  active_.erase(session);
  return first;
}

absl::Status KvStore::Erase(const std::string& key) {
  MutexLock lock(&mu_);
  auto it = index_.find(key);
  if (it == index_.end()) return absl::OkStatus();
  return EraseLocked(it);
}

std::vector<std::string> KvStore::KeysOf(const std::string& session) const {
  MutexLock lock(&mu_);
  std::vector<std::string> keys;
  for (const auto& [key, e] : index_) {
    if (e.session == session) keys.push_back(key);
  }
  return keys;
}

std::vector<std::string> KvStore::SharedKeysOf(const std::string& holder) const {
  MutexLock lock(&mu_);
  std::vector<std::string> keys;
  for (const auto& [key, holders] : shared_) {
    if (holders.contains(holder)) keys.push_back(key);
  }
  return keys;
}

int KvStore::SharedHolders(const std::string& key) const {
  MutexLock lock(&mu_);
  auto it = shared_.find(key);
  return it == shared_.end() ? 0 : static_cast<int>(it->second.size());
}

int KvStore::shared_blocks() const {
  MutexLock lock(&mu_);
  return static_cast<int>(shared_.size());
}

bool KvStore::HasSession(const std::string& session) const {
  return !KeysOf(session).empty() || !SharedKeysOf(session).empty();
}

std::vector<std::string> KvStore::Sessions() const {
  MutexLock lock(&mu_);
  std::set<std::string> sessions;
  for (const auto& [key, e] : index_) {
    if (e.session != kSharedOwner) sessions.insert(e.session);
  }
  for (const auto& [key, holders] : shared_) {
    sessions.insert(holders.begin(), holders.end());
    if (holders.empty()) sessions.insert(kSharedOwner);  // an orphan: EraseSession collects it
  }
  return {sessions.begin(), sessions.end()};
}

void KvStore::SetActive(const std::string& session, bool active) {
  MutexLock lock(&mu_);
  active_[session] = active;
}

absl::Status KvStore::Spill() {
  MutexLock lock(&mu_);
  return SpillTierLocked(0);
}

absl::Status KvStore::PersistAll() {
  MutexLock lock(&mu_);
  if (options_.disk_dir.empty()) {
    return absl::FailedPreconditionError("kv store: no disk tier to persist to");
  }
  constexpr int kDisk = 2;
  // In batches (one segment file, one fsync each), tier by tier.
  for (int t = 0; t < kDisk; ++t) {
    std::vector<std::string> keys;
    for (const auto& [key, e] : index_) {
      if (e.tier == t) keys.push_back(key);
    }
    size_t next = 0;
    while (next < keys.size()) {
      std::vector<std::pair<std::string, std::string>> batch;
      size_t batch_bytes = 0;
      while (next < keys.size() && batch.size() < kMaxBatchBlocks && batch_bytes < kMaxBatchBytes) {
        DAPQ_ASSIGN_OR_RETURN(auto one, ReadBatchLocked(t, {keys[next++]}));
        batch_bytes += one[0].second.size();
        batch.push_back(std::move(one[0]));
      }
      if (absl::Status room = MakeRoomLocked(kDisk, batch_bytes, "");
          absl::IsResourceExhausted(room) && batch.size() > 1) {
        // No room for the whole batch: as many of its blocks as fit, one at a time.
        for (auto& [key, bytes] : batch) {
          DAPQ_RETURN_IF_ERROR(MakeRoomLocked(kDisk, bytes.size(), key));
          DAPQ_RETURN_IF_ERROR(MoveLocked(key, index_[key], kDisk));
        }
        continue;
      } else if (!room.ok()) {
        return room;
      }
      DAPQ_RETURN_IF_ERROR(MoveBatchLocked(t, kDisk, std::move(batch), false));
    }
  }
  return absl::OkStatus();
}

void KvStore::PrefetchLocked(const std::string& session) {
  for (auto& [key, e] : index_) {
    if (e.tier == 0) continue;
    if (e.session != session) {
      auto held = e.session == kSharedOwner ? shared_.find(key) : shared_.end();
      if (held == shared_.end() || !held->second.contains(session)) continue;
    }
    const auto start = std::chrono::steady_clock::now();
    absl::StatusOr<std::string> bytes = tiers_[e.tier]->Get(key);
    if (!bytes.ok()) continue;  // Get reports it when the session asks for the block
    PromoteLocked(key, e, *bytes, start);
  }
}

void KvStore::ScheduleSpill() {
  MutexLock lock(&mu_);
  pending_.push_back("");
  changed_.SignalAll();
}

void KvStore::Prefetch(const std::string& session) {
  MutexLock lock(&mu_);
  if (!session.empty()) pending_.push_back(session);
  changed_.SignalAll();
}

absl::Status KvStore::Flush() {
  MutexLock lock(&mu_);
  if (!worker_.joinable()) {
    // No background thread: run queued work inline.
    std::vector<std::string> work;
    work.swap(pending_);
    for (const std::string& w : work) {
      if (w.empty()) {
        absl::Status s = SpillTierLocked(0);
        if (!s.ok() && background_error_.ok()) background_error_ = s;
      } else {
        PrefetchLocked(w);
      }
    }
  } else {
    changed_.Wait(&mu_,
                  [this]() ABSL_NO_THREAD_SAFETY_ANALYSIS { return pending_.empty() && !busy_; });
  }
  absl::Status s = background_error_;
  background_error_ = absl::OkStatus();
  return s;
}

void KvStore::BackgroundLoop() {
  MutexLock lock(&mu_);
  while (true) {
    changed_.Wait(&mu_,
                  [this]() ABSL_NO_THREAD_SAFETY_ANALYSIS { return stop_ || !pending_.empty(); });
    if (stop_) return;
    busy_ = true;
    const std::string work = pending_.front();
    pending_.erase(pending_.begin());
    if (work.empty()) {
      absl::Status s = SpillTierLocked(0);
      if (!s.ok() && background_error_.ok()) background_error_ = s;
    } else {
      PrefetchLocked(work);
    }
    busy_ = false;
    changed_.SignalAll();
  }
}

int KvStore::TierOf(const std::string& key) const {
  MutexLock lock(&mu_);
  auto it = index_.find(key);
  return it == index_.end() ? -1 : it->second.tier;
}

std::vector<TierStats> KvStore::Stats() const {
  MutexLock lock(&mu_);
  std::vector<TierStats> out;
  for (int t = 0; t < static_cast<int>(tiers_.size()); ++t) {
    const Tier& tier = *tiers_[t];
    TierStats s;
    s.name = tier.options().name;
    s.used_bytes = tier.used_bytes();
    s.capacity_bytes = tier.capacity_bytes();
    s.high_watermark_bytes =
        static_cast<size_t>(tier.options().high_watermark * static_cast<double>(s.capacity_bytes));
    for (const auto& [key, e] : index_) {
      s.blocks += e.tier == t;
      s.shared_blocks += e.tier == t && e.session == kSharedOwner;
    }
    out.push_back(s);
  }
  return out;
}

}  // namespace dapq::kvstore
