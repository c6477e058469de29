// File: tests/util/kv_blocks.h
// Seeded, valid encoded KV blocks (kvstore/block_codec.h) for store and tier tests: tiers that
// verify blocks reject opaque bytes, so tests store real ones. Same seed, same bytes.
#ifndef DAPQ_TESTS_UTIL_KV_BLOCKS_H_
#define DAPQ_TESTS_UTIL_KV_BLOCKS_H_

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "kvstore/block_codec.h"
#include "kvstore/kv_store.h"

namespace dapq::testing {

// One KV head, head_dim 8, `tokens` tokens; payload values from (seed).
inline std::string TestBlock(uint64_t seed, int tokens = 10) {
  std::vector<int32_t> positions(tokens);
  std::vector<float> payload(2 * tokens * 8);
  std::mt19937_64 rng(seed);
  for (float& x : payload) x = static_cast<float>(rng() % 100);
  return *kvstore::EncodeBlock({1, 2, 0, 0, 1, 8}, positions, payload);
}

// A synchronous store whose device and host tiers hold four test blocks each (spilling above
// three), over `remote` as its last tier: remote-tier tests fill it with eight blocks.
inline kvstore::KvStoreOptions SmallStoreOver(kvstore::Tier* remote) {
  kvstore::KvStoreOptions o;
  const size_t b = TestBlock(0).size();
  o.device = {"device", 4 * b, 0.76, 0.5};
  o.host = {"host", 4 * b, 0.76, 0.5};
  o.remote = remote;
  o.background = false;
  return o;
}

}  // namespace dapq::testing

#endif  // DAPQ_TESTS_UTIL_KV_BLOCKS_H_
