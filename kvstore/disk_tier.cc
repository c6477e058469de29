// File: kvstore/disk_tier.cc
// Durable block files and batch segment files: temp + fsync + rename, recovery on open,
// verification on read.
#include "kvstore/disk_tier.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/status_macros.h"
#include "kvstore/block_codec.h"

namespace dapq::kvstore {
namespace {

constexpr char kBlockSuffix[] = ".blk";
constexpr char kTempSuffix[] = ".blk.tmp";
constexpr char kSegPrefix[] = "seg-";
constexpr char kSegSuffix[] = ".seg";
constexpr char kSegTempSuffix[] = ".seg.tmp";
constexpr char kDeadSuffix[] = ".dead";
// Segment layout (host byte order, little-endian on every supported platform):
//   header: magic[8] "DQSEG001", u32 block count, u32 reserved
//   entry:  u32 key length, u32 reserved, u64 block size, key bytes, block bytes
constexpr char kSegMagic[8] = {'D', 'Q', 'S', 'E', 'G', '0', '0', '1'};
constexpr size_t kSegHeader = 16;
constexpr size_t kEntryHeader = 16;

template <typename T>
void AppendRaw(std::string& out, T v) {
  out.append(reinterpret_cast<const char*>(&v), sizeof(v));
}
template <typename T>
T LoadRaw(const std::string& in, size_t at) {
  T v;
  std::memcpy(&v, in.data() + at, sizeof(v));
  return v;
}

// "seg-<n><suffix>" -> n, or -1.
int64_t SegmentNumber(const std::string& name, const char* suffix) {
  if (!absl::StartsWith(name, kSegPrefix) || !absl::EndsWith(name, suffix)) return -1;
  const size_t begin = sizeof(kSegPrefix) - 1;
  const size_t len = name.size() - begin - std::strlen(suffix);
  int64_t n = -1;
  if (len == 0 || !absl::SimpleAtoi(name.substr(begin, len), &n) || n < 0) return -1;
  return n;
}

}  // namespace

absl::StatusOr<std::unique_ptr<DiskTier>> DiskTier::Open(const TierOptions& options,
                                                         const std::string& dir, FileEnv* env) {
  DAPQ_RETURN_IF_ERROR(options.Validate());
  if (dir.empty()) return absl::InvalidArgumentError("disk tier: empty directory");
  std::unique_ptr<DiskTier> tier(new DiskTier(options, dir, env ? env : FileEnv::Posix()));
  DAPQ_RETURN_IF_ERROR(tier->env_->CreateDir(dir));
  DAPQ_RETURN_IF_ERROR(tier->Recover());
  return tier;
}

std::string DiskTier::SegPath(int64_t n) const {
  return absl::StrCat(dir_, "/", kSegPrefix, n, kSegSuffix);
}
std::string DiskTier::DeadPath(int64_t n) const {
  return absl::StrCat(dir_, "/", kSegPrefix, n, kDeadSuffix);
}

absl::Status DiskTier::Recover() {
  DAPQ_ASSIGN_OR_RETURN(std::vector<std::string> names, env_->ListDir(dir_));
  std::vector<int64_t> segments;
  std::vector<int64_t> dead_files;
  MutexLock lock(&seg_mu_);
  for (const std::string& name : names) {
    const std::string path = dir_ + "/" + name;
    if (absl::EndsWith(name, kTempSuffix) || absl::EndsWith(name, kSegTempSuffix)) {
      DAPQ_RETURN_IF_ERROR(env_->Remove(path));
      ++recovery_.discarded_temp;
      continue;
    }
    if (const int64_t n = SegmentNumber(name, kSegSuffix); n >= 0) {
      segments.push_back(n);
      continue;
    }
    if (const int64_t n = SegmentNumber(name, kDeadSuffix); n >= 0) {
      dead_files.push_back(n);
      continue;
    }
    if (!absl::EndsWith(name, kBlockSuffix)) continue;
    absl::StatusOr<std::string> bytes = env_->ReadFile(path);
    if (!bytes.ok() || !VerifyBlock(*bytes).ok()) {
      DAPQ_RETURN_IF_ERROR(env_->Remove(path));
      ++recovery_.discarded_corrupt;
      continue;
    }
    const std::string key = name.substr(0, name.size() - (sizeof(kBlockSuffix) - 1));
    Adopt(key, bytes->size());
    locations_[key] = Location{-1, 0, bytes->size()};
    ++recovery_.recovered;
  }
  // Oldest first, so a key's copy in a newer segment replaces an older one.
  std::sort(segments.begin(), segments.end());
  for (const int64_t n : segments) {
    std::set<std::string> dead;
    if (std::count(dead_files.begin(), dead_files.end(), n) > 0) {
      absl::StatusOr<std::string> text = env_->ReadFile(DeadPath(n));
      if (text.ok()) {
        for (absl::string_view k : absl::StrSplit(*text, '\n', absl::SkipEmpty())) {
          dead.insert(std::string(k));
        }
      }
    }
    absl::StatusOr<std::string> bytes = env_->ReadFile(SegPath(n));
    if (!bytes.ok()) {
      DAPQ_RETURN_IF_ERROR(env_->Remove(SegPath(n)));
      ++recovery_.discarded_corrupt;
      continue;
    }
    RecoverSegment(n, *bytes, dead);
    next_segment_ = std::max<int64_t>(next_segment_, n + 1);
  }
  for (const int64_t n : dead_files) {
    if (segments_.count(n) == 0) env_->Remove(DeadPath(n)).IgnoreError();  // orphan
  }
  return absl::OkStatus();
}

void DiskTier::RecoverSegment(int64_t n, const std::string& bytes,
                              const std::set<std::string>& dead) {
  Segment& seg = segments_[n];
  if (bytes.size() < kSegHeader || std::memcmp(bytes.data(), kSegMagic, 8) != 0) {
    ++recovery_.discarded_corrupt;
  } else {
    const uint32_t count = LoadRaw<uint32_t>(bytes, 8);
    size_t at = kSegHeader;
    for (uint32_t i = 0; i < count; ++i) {
      // A truncated or damaged entry header ends the segment: what follows cannot be located.
      if (bytes.size() - at < kEntryHeader) {
        ++recovery_.discarded_corrupt;
        break;
      }
      const uint32_t key_len = LoadRaw<uint32_t>(bytes, at);
      const uint64_t size = LoadRaw<uint64_t>(bytes, at + 8);
      const size_t data = at + kEntryHeader;
      if (key_len > bytes.size() - data || size > bytes.size() - data - key_len) {
        ++recovery_.discarded_corrupt;
        break;
      }
      const std::string key = bytes.substr(data, key_len);
      at = data + key_len + size;
      if (!ValidateBlockKey(key).ok()) {
        ++recovery_.discarded_corrupt;
        break;
      }
      if (dead.count(key) > 0) continue;
      if (auto prior = locations_.find(key);
          prior != locations_.end() && prior->second.segment == n) {
        ++recovery_.discarded_corrupt;  // a key twice in one segment: keep the first
        continue;
      }
      if (!VerifyBlock(absl::string_view(bytes).substr(data + key_len, size)).ok()) {
        ++recovery_.discarded_corrupt;
        continue;
      }
      Adopt(key, size);
      ++seg.live;
      PlaceLocked(key, Location{n, data + key_len, size});
      ++recovery_.recovered;
    }
  }
  // PlaceLocked of a later key never retires into this segment (keys are distinct within it),
  // but a segment with nothing live is dropped.
  auto it = segments_.find(n);
  if (it != segments_.end() && it->second.live <= 0) {
    env_->Remove(SegPath(n)).IgnoreError();
    env_->Remove(DeadPath(n)).IgnoreError();
    segments_.erase(it);
  } else if (it != segments_.end()) {
    ++recovery_.segments;
  }
}

void DiskTier::PlaceLocked(const std::string& key, const Location& loc) {
  auto it = locations_.find(key);
  if (it != locations_.end()) {
    const Location old = it->second;
    it->second = loc;
    // A block file replaced by a block file was overwritten by the rename already.
    if (!(old.segment < 0 && loc.segment < 0)) RetireLocked(key, old).IgnoreError();
  } else {
    locations_.emplace(key, loc);
  }
}

absl::Status DiskTier::RetireLocked(const std::string& key, const Location& loc) {
  if (loc.segment < 0) {
    absl::Status s = env_->Remove(PathOf(key));
    return absl::IsNotFound(s) ? absl::OkStatus() : s;
  }
  auto it = segments_.find(loc.segment);
  if (it == segments_.end()) return absl::OkStatus();
  Segment& seg = it->second;
  if (--seg.live <= 0) {
    absl::Status s = env_->Remove(SegPath(loc.segment));
    env_->Remove(DeadPath(loc.segment)).IgnoreError();  // absent unless something was erased
    segments_.erase(it);
    return absl::IsNotFound(s) ? absl::OkStatus() : s;
  }
  return env_->AppendFile(DeadPath(loc.segment), absl::StrCat(key, "\n"));
}

std::string DiskTier::SegmentPathOf(const std::string& key) const {
  MutexLock lock(&seg_mu_);
  auto it = locations_.find(key);
  if (it == locations_.end() || it->second.segment < 0) return "";
  return SegPath(it->second.segment);
}

absl::Status DiskTier::Put(const std::string& key, std::string block) {
  DAPQ_RETURN_IF_ERROR(ValidateBlockKey(key));
  const size_t size = block.size();
  DAPQ_ASSIGN_OR_RETURN(const std::optional<size_t> previous, Reserve(key, size));
  const std::string temp = dir_ + "/" + key + kTempSuffix;
  absl::Status s = env_->WriteFile(temp, block, /*sync=*/true);
  if (s.ok()) s = env_->Rename(temp, PathOf(key));
  if (s.ok()) s = env_->SyncDir(dir_);
  if (!s.ok()) {
    Unreserve(key, previous);
    env_->Remove(temp).IgnoreError();  // best effort: recovery deletes it otherwise
    return absl::Status(s.code(),
                        absl::StrCat("disk tier: spilling block ", key, ": ", s.message()));
  }
  MutexLock lock(&seg_mu_);
  PlaceLocked(key, Location{-1, 0, size});
  return absl::OkStatus();
}

absl::Status DiskTier::PutBatch(std::vector<std::pair<std::string, std::string>> blocks) {
  if (blocks.empty()) return absl::OkStatus();
  DAPQ_RETURN_IF_ERROR(CheckDistinctKeys(options().name, blocks));
  size_t total = kSegHeader;
  for (const auto& [key, block] : blocks) {
    DAPQ_RETURN_IF_ERROR(ValidateBlockKey(key));
    total += kEntryHeader + key.size() + block.size();
  }
  // Reserve every block (all or nothing).
  std::vector<std::optional<size_t>> previous;
  previous.reserve(blocks.size());
  auto unreserve = [&] {
    for (size_t i = previous.size(); i-- > 0;) Unreserve(blocks[i].first, previous[i]);
  };
  for (const auto& [key, block] : blocks) {
    absl::StatusOr<std::optional<size_t>> r = Reserve(key, block.size());
    if (!r.ok()) {
      unreserve();
      return r.status();
    }
    previous.push_back(*r);
  }
  // One contiguous image of the segment.
  const int64_t n = next_segment_.fetch_add(1);
  std::string image;
  image.reserve(total);
  image.append(kSegMagic, sizeof(kSegMagic));
  AppendRaw<uint32_t>(image, static_cast<uint32_t>(blocks.size()));
  AppendRaw<uint32_t>(image, 0);
  std::vector<Location> locations;
  locations.reserve(blocks.size());
  for (auto& [key, block] : blocks) {
    AppendRaw<uint32_t>(image, static_cast<uint32_t>(key.size()));
    AppendRaw<uint32_t>(image, 0);
    AppendRaw<uint64_t>(image, block.size());
    image.append(key);
    locations.push_back(Location{n, image.size(), block.size()});
    image.append(block);
    std::string().swap(block);  // the image holds the bytes now
  }
  const std::string path = SegPath(n);
  const std::string temp = path + ".tmp";
  bool renamed = false;
  absl::Status s = env_->WriteFile(temp, image, /*sync=*/true);
  if (s.ok()) {
    s = env_->Rename(temp, path);
    renamed = s.ok();
  }
  if (s.ok()) s = env_->SyncDir(dir_);
  if (!s.ok()) {
    unreserve();
    env_->Remove(temp).IgnoreError();  // best effort: recovery deletes it otherwise
    if (renamed) env_->Remove(path).IgnoreError();
    return absl::Status(s.code(),
                        absl::StrCat("disk tier: spilling a batch of ", blocks.size(), " blocks (",
                                     blocks.front().first, ", ...) to ", path, ": ", s.message()));
  }
  MutexLock lock(&seg_mu_);
  segments_[n].live = static_cast<int>(blocks.size());
  for (size_t i = 0; i < blocks.size(); ++i) PlaceLocked(blocks[i].first, locations[i]);
  return absl::OkStatus();
}

absl::StatusOr<std::string> DiskTier::Get(const std::string& key) {
  DAPQ_RETURN_IF_ERROR(CheckHeld(key));
  Location loc;
  {
    MutexLock lock(&seg_mu_);
    auto it = locations_.find(key);
    if (it != locations_.end()) loc = it->second;
  }
  absl::StatusOr<std::string> bytes =
      loc.segment < 0 ? env_->ReadFile(PathOf(key))
                      : env_->ReadRange(SegPath(loc.segment), loc.offset, loc.size);
  if (!bytes.ok()) {
    if (absl::IsNotFound(bytes.status())) {
      return absl::DataLossError(absl::StrCat("disk tier: ", loc.segment < 0 ? "block" : "segment",
                                              " file of ", key, " is missing"));
    }
    return bytes.status();
  }
  if (absl::Status v = VerifyBlock(*bytes); !v.ok()) {
    return absl::DataLossError(
        absl::StrCat("disk tier: block ", key, " failed verification: ", v.message()));
  }
  return bytes;
}

absl::Status DiskTier::Erase(const std::string& key) {
  DAPQ_RETURN_IF_ERROR(Forget(key));
  MutexLock lock(&seg_mu_);
  auto it = locations_.find(key);
  Location loc;
  if (it != locations_.end()) {
    loc = it->second;
    locations_.erase(it);
  }
  return RetireLocked(key, loc);
}

}  // namespace dapq::kvstore
