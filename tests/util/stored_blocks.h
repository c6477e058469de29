// File: tests/util/stored_blocks.h
// Finds where the disk tier (kvstore/disk_tier.h) keeps a block under a directory, so e2e tests
// can damage or drop one block on disk: a block file `<key>.blk` (the block at offset 0) or an
// entry of a batch segment `seg-<n>.seg` (header "DQSEG001" + count, then per block: u32 key
// length, u32 reserved, u64 size, key, bytes). DropStoredBlock makes a block missing after a
// restart: it deletes a block file, or lists the key in the segment's `.dead` file.
// Thread-safety: plain functions over the file system.
#ifndef DAPQ_TESTS_UTIL_STORED_BLOCKS_H_
#define DAPQ_TESTS_UTIL_STORED_BLOCKS_H_

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <string>
#include <vector>

namespace dapq::testing {

struct StoredBlock {
  std::string key;
  std::string path;   // the block file or the segment file
  size_t offset = 0;  // of the block's bytes in `path`
  size_t size = 0;
};

// Every block under `dir` (recursively) whose key and file path satisfy `match`.
inline std::vector<StoredBlock> FindStoredBlocks(
    const std::string& dir,
    const std::function<bool(const std::string& key, const std::string& path)>& match) {
  std::vector<StoredBlock> found;
  for (const auto& f : std::filesystem::recursive_directory_iterator(dir)) {
    if (!f.is_regular_file()) continue;
    const std::string path = f.path().string();
    const std::string name = f.path().filename().string();
    const std::string ext = f.path().extension().string();
    if (ext == ".blk") {
      const std::string key = name.substr(0, name.size() - 4);
      if (match(key, path)) found.push_back({key, path, 0, static_cast<size_t>(f.file_size())});
    } else if (ext == ".seg") {
      std::ifstream in(path, std::ios::binary);
      const std::string bytes((std::istreambuf_iterator<char>(in)), {});
      if (bytes.size() < 16 || bytes.compare(0, 8, "DQSEG001") != 0) continue;
      uint32_t count = 0;
      std::memcpy(&count, bytes.data() + 8, 4);
      size_t at = 16;
      for (uint32_t i = 0; i < count && bytes.size() - at >= 16; ++i) {
        uint32_t key_len = 0;
        uint64_t size = 0;
        std::memcpy(&key_len, bytes.data() + at, 4);
        std::memcpy(&size, bytes.data() + at + 8, 8);
        if (key_len + size > bytes.size() - at - 16) break;
        const std::string key = bytes.substr(at + 16, key_len);
        if (match(key, path)) found.push_back({key, path, at + 16 + key_len, size});
        at += 16 + key_len + size;
      }
    }
  }
  return found;
}

// Overwrites one byte of the block, `at` bytes into it (negative: from its end).
inline void CorruptStoredBlock(const StoredBlock& b, long at, char value) {
  std::fstream f(b.path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekp(static_cast<std::streamoff>(b.offset + (at >= 0 ? at : b.size + at)));
  f.put(value);
}

inline void DropStoredBlock(const StoredBlock& b) {
  if (std::filesystem::path(b.path).extension() == ".blk") {
    std::filesystem::remove(b.path);
    return;
  }
  std::filesystem::path dead(b.path);
  dead.replace_extension(".dead");
  std::ofstream(dead, std::ios::app) << b.key << "\n";
}

}  // namespace dapq::testing

#endif  // DAPQ_TESTS_UTIL_STORED_BLOCKS_H_
