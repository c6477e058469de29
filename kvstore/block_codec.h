// File: kvstore/block_codec.h
// The on-disk / on-wire form of a KV block that leaves the device tier: a fixed header (magic,
// version, element type, model and compression-config fingerprints, layer, KV heads, head_dim,
// token count), the absolute positions of its tokens, the K and V payload in the element type
// (fp32, or bf16/fp16 at half the bytes: a cache kept in a 2-byte type leaves the device tier
// as it is), and an xxh64 checksum of all of it. Callers hand and receive fp32 payloads.
// A block that fails to decode is never used (invariant 5): DataLoss says why.
// Thread-safety: pure functions.
#ifndef DAPQ_KVSTORE_BLOCK_CODEC_H_
#define DAPQ_KVSTORE_BLOCK_CODEC_H_

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "kernels/types.h"

namespace dapq::kvstore {

struct BlockMeta {
  uint64_t model_fingerprint = 0;   // which model produced the KV
  uint64_t config_fingerprint = 0;  // which compression config kept it
  int32_t layer = 0;
  int32_t kv_head_begin = 0;
  int32_t kv_heads = 0;
  int32_t head_dim = 0;
  kernels::DType dtype = kernels::DType::kF32;  // how the payload is stored
  bool operator==(const BlockMeta&) const = default;
};

struct DecodedBlock {
  BlockMeta meta;
  std::vector<int32_t> positions;  // [num_tokens]
  std::vector<float> payload;      // K then V: [2, kv_heads, num_tokens, head_dim], widened
};

// payload.size() must be 2 * kv_heads * positions.size() * head_dim (InvalidArgument otherwise);
// it is stored rounded to meta.dtype.
absl::StatusOr<std::string> EncodeBlock(const BlockMeta& meta, std::span<const int32_t> positions,
                                        std::span<const float> payload);
// DataLoss for a bad magic, unknown version, truncated or oversized bytes, sizes that disagree,
// or a checksum mismatch.
absl::StatusOr<DecodedBlock> DecodeBlock(absl::string_view bytes);

// Checks the header, sizes and checksum without copying the payload (DecodeBlock's errors).
absl::Status VerifyBlock(absl::string_view bytes);

// 64-bit fingerprint of arbitrary text (model names, config strings).
uint64_t Fingerprint(absl::string_view text);

}  // namespace dapq::kvstore

#endif  // DAPQ_KVSTORE_BLOCK_CODEC_H_
