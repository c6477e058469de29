// File: tests/fuzz/disk_segment_fuzzer.cc
// The disk tier's recovery of segment files (kvstore/disk_tier.h, DiskTier::Open), over an
// in-memory FileEnv. Input: one flags byte, then the bytes of seg-0.seg. Flags:
//   bit 0: fix the checksum of every entry's block (walking the entries as recovery does), so
//          the fuzzer reaches the index logic behind block verification;
//   bit 1: the same bytes are also seg-1.seg (every key twice: the newer copy wins);
//   bit 2: seg-0.dead lists the first entry's key (an erased block);
//   bit 3: the first entry's block is also the block file <key>.blk (a segment copy wins).
// Invariants: Open succeeds (the env never fails); every indexed key reads back verified; after
// erasing one key and spilling a fresh batch, a second Open over the same files recovers
// exactly the keys the first tier holds.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "kvstore/block_codec.h"
#include "kvstore/disk_tier.h"
#include "kvstore/file_env.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

using dapq::kvstore::DiskTier;

// Files in a map; directories are implicit (every path is "<dir>/<name>").
class MemoryEnv final : public dapq::kvstore::FileEnv {
 public:
  absl::Status CreateDir(const std::string&) override { return absl::OkStatus(); }
  absl::Status WriteFile(const std::string& path, absl::string_view data, bool) override {
    files_[path] = std::string(data);
    return absl::OkStatus();
  }
  absl::StatusOr<std::string> ReadFile(const std::string& path) override {
    auto it = files_.find(path);
    if (it == files_.end()) return absl::NotFoundError(path);
    return it->second;
  }
  absl::Status Rename(const std::string& from, const std::string& to) override {
    auto it = files_.find(from);
    if (it == files_.end()) return absl::NotFoundError(from);
    std::string bytes = std::move(it->second);
    files_.erase(it);
    files_[to] = std::move(bytes);
    return absl::OkStatus();
  }
  absl::Status Remove(const std::string& path) override {
    return files_.erase(path) > 0 ? absl::OkStatus() : absl::NotFoundError(path);
  }
  absl::StatusOr<std::vector<std::string>> ListDir(const std::string& dir) override {
    std::vector<std::string> names;
    const std::string prefix = dir + "/";
    for (const auto& [path, bytes] : files_) {
      if (absl::StartsWith(path, prefix)) names.push_back(path.substr(prefix.size()));
    }
    return names;
  }
  absl::Status SyncDir(const std::string&) override { return absl::OkStatus(); }

 private:
  std::map<std::string, std::string> files_;
};

constexpr char kDir[] = "/kv";

// Walks the segment's entries the way recovery does; calls on_entry(key offset, key length,
// block offset, block size) for each entry whose header fits.
template <typename F>
void ForEachEntry(const std::string& seg, F on_entry) {
  if (seg.size() < 16) return;
  uint32_t count = 0;
  std::memcpy(&count, seg.data() + 8, 4);
  size_t at = 16;
  for (uint32_t i = 0; i < count; ++i) {
    if (seg.size() - at < 16) return;
    uint32_t key_len = 0;
    uint64_t size = 0;
    std::memcpy(&key_len, seg.data() + at, 4);
    std::memcpy(&size, seg.data() + at + 8, 8);
    const size_t data = at + 16;
    if (key_len > seg.size() - data || size > seg.size() - data - key_len) return;
    on_entry(data, key_len, data + key_len, size);
    at = data + key_len + size;
  }
}

std::set<std::string> KeysOf(const DiskTier& tier) {
  const std::vector<std::string> keys = tier.Keys();
  return std::set<std::string>(keys.begin(), keys.end());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const uint8_t flags = data[0];
  std::string seg(dapq::fuzz::AsView(data + 1, size - 1));
  std::string first_key, first_block;
  ForEachEntry(seg, [&](size_t key_at, size_t key_len, size_t block_at, uint64_t block_size) {
    if ((flags & 1) != 0 && block_size >= 8) {
      const uint64_t sum =
          dapq::kvstore::Fingerprint(absl::string_view(seg).substr(block_at, block_size - 8));
      std::memcpy(seg.data() + block_at + block_size - 8, &sum, 8);
    }
    if (first_key.empty()) {
      first_key = seg.substr(key_at, key_len);
      first_block = seg.substr(block_at, block_size);
    }
  });

  MemoryEnv env;
  const std::string dir = kDir;
  FUZZ_CHECK(env.WriteFile(dir + "/seg-0.seg", seg, true).ok());
  if ((flags & 2) != 0) FUZZ_CHECK(env.WriteFile(dir + "/seg-1.seg", seg, true).ok());
  const bool key_ok = dapq::kvstore::ValidateBlockKey(first_key).ok();
  if ((flags & 4) != 0 && key_ok) {
    FUZZ_CHECK(env.AppendFile(dir + "/seg-0.dead", first_key + "\n").ok());
  }
  if ((flags & 8) != 0 && key_ok) {
    FUZZ_CHECK(env.WriteFile(dir + "/" + first_key + ".blk", first_block, true).ok());
  }

  dapq::kvstore::TierOptions options{"disk", 1ull << 30, 0.95, 0.8};
  absl::StatusOr<std::unique_ptr<DiskTier>> tier = DiskTier::Open(options, dir, &env);
  FUZZ_CHECK(tier.ok());
  const dapq::kvstore::DiskRecovery& recovery = (*tier)->recovery();
  std::set<std::string> keys = KeysOf(**tier);
  FUZZ_CHECK(static_cast<int>(keys.size()) <= recovery.recovered);
  for (const std::string& key : keys) {
    absl::StatusOr<std::string> block = (*tier)->Get(key);
    FUZZ_CHECK(block.ok());
    FUZZ_CHECK(dapq::kvstore::VerifyBlock(*block).ok());
  }

  // Erase one key and spill a batch that replaces another, then recover again.
  if (!keys.empty()) {
    FUZZ_CHECK((*tier)->Erase(*keys.begin()).ok());
  }
  const absl::StatusOr<std::string> fresh =
      dapq::kvstore::EncodeBlock({1, 2, 0, 0, 1, 2, dapq::kernels::DType::kF32},
                                 std::vector<int32_t>{7}, std::vector<float>{1, 2, 3, 4});
  FUZZ_CHECK(fresh.ok());
  std::vector<std::pair<std::string, std::string>> batch = {{"fresh.b0", *fresh}};
  if (keys.size() > 1) batch.emplace_back(*keys.rbegin(), *fresh);
  FUZZ_CHECK((*tier)->PutBatch(std::move(batch)).ok());
  keys = KeysOf(**tier);
  for (const std::string& key : keys) FUZZ_CHECK((*tier)->Get(key).ok());
  tier->reset();

  absl::StatusOr<std::unique_ptr<DiskTier>> reopened = DiskTier::Open(options, dir, &env);
  FUZZ_CHECK(reopened.ok());
  FUZZ_CHECK(KeysOf(**reopened) == keys);
  for (const std::string& key : keys) FUZZ_CHECK((*reopened)->Get(key).ok());
  return 0;
}
