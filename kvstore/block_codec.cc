// File: kvstore/block_codec.cc
// Block serialisation with an xxh64 trailer.
#include "kvstore/block_codec.h"

#include <xxhash.h>

#include <cstring>
#include <limits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/convert.h"

namespace dapq::kvstore {
namespace {

constexpr uint32_t kMagic = 0x564B5144;  // "DQKV" little-endian
constexpr uint16_t kVersion = 1;
constexpr uint64_t kSeed = 0xDA90;

#pragma pack(push, 1)
struct Header {
  uint32_t magic;
  uint16_t version;
  uint16_t dtype;  // kernels::DType; 0 (fp32) in blocks written before the field existed
  uint64_t model_fingerprint;
  uint64_t config_fingerprint;
  int32_t layer;
  int32_t kv_head_begin;
  int32_t kv_heads;
  int32_t head_dim;
  int32_t num_tokens;
};
#pragma pack(pop)

absl::Status Corrupt(const std::string& what) {
  return absl::DataLossError(absl::StrCat("kv block: ", what));
}

absl::StatusOr<Header> ParseHeader(absl::string_view bytes) {
  Header h;

  if (bytes.size() < sizeof(h) + 8) {
    return Corrupt(absl::StrCat("truncated: ", bytes.size(), " bytes"));
  }
  std::memcpy(&h, bytes.data(), sizeof(h));
  if (h.magic != kMagic) return Corrupt("bad magic");
  if (h.version != kVersion) return Corrupt(absl::StrCat("unknown version ", h.version));
  if (h.dtype > static_cast<uint16_t>(kernels::DType::kF16)) {
    return Corrupt(absl::StrCat("unknown element type ", h.dtype));
  }
  if (h.kv_heads <= 0 || h.head_dim <= 0 || h.num_tokens < 0 || h.kv_heads > (1 << 16) ||
      h.head_dim > (1 << 16)) {
    return Corrupt("bad header sizes");
  }
  // In 128 bits: a header's sizes multiply past 2^64, and a wrapped total could match a crafted
  // block's length (its checksum is no protection against a deliberate one).
  using Wide = unsigned __int128;
  const Wide floats = Wide{2} * static_cast<Wide>(h.kv_heads) * static_cast<Wide>(h.num_tokens) *
                      static_cast<Wide>(h.head_dim);
  const Wide elem = kernels::DTypeSize(static_cast<kernels::DType>(h.dtype));
  const Wide wide_total = sizeof(h) + Wide{4} * static_cast<Wide>(h.num_tokens) + elem * floats + 8;
  if (wide_total != bytes.size()) {
    const bool truncated = wide_total > bytes.size();
    return Corrupt(absl::StrCat(truncated ? "truncated: " : "oversized: ", bytes.size(),
                                " bytes, header implies ",
                                wide_total > std::numeric_limits<uint64_t>::max()
                                    ? std::string("more than 2^64")
                                    : absl::StrCat(static_cast<uint64_t>(wide_total))));
  }
  const size_t total = static_cast<size_t>(wide_total);
  uint64_t stored;
  std::memcpy(&stored, bytes.data() + total - 8, 8);
  if (XXH64(bytes.data(), total - 8, kSeed) != stored) return Corrupt("checksum mismatch");
  return h;
}

}  // namespace

uint64_t Fingerprint(absl::string_view text) { return XXH64(text.data(), text.size(), kSeed); }

absl::StatusOr<std::string> EncodeBlock(const BlockMeta& meta, std::span<const int32_t> positions,
                                        std::span<const float> payload) {
  const size_t expected =
      2ull * meta.kv_heads * positions.size() * static_cast<size_t>(meta.head_dim);
  if (meta.kv_heads <= 0 || meta.head_dim <= 0 || payload.size() != expected) {
    return absl::InvalidArgumentError(
        absl::StrCat("kv block: payload of ", payload.size(), " floats, expected 2 x ",
                     meta.kv_heads, " heads x ", positions.size(), " tokens x ", meta.head_dim));
  }
  Header h{kMagic,
           kVersion,
           static_cast<uint16_t>(meta.dtype),
           meta.model_fingerprint,
           meta.config_fingerprint,
           meta.layer,
           meta.kv_head_begin,
           meta.kv_heads,
           meta.head_dim,
           static_cast<int32_t>(positions.size())};
  const size_t payload_bytes = payload.size() * kernels::DTypeSize(meta.dtype);
  std::string out;
  out.reserve(sizeof(h) + positions.size_bytes() + payload_bytes + 8);
  out.append(reinterpret_cast<const char*>(&h), sizeof(h));
  out.append(reinterpret_cast<const char*>(positions.data()), positions.size_bytes());
  out.resize(out.size() + payload_bytes);
  kernels::ConvertFromFloat(payload.data(), meta.dtype, out.data() + out.size() - payload_bytes,
                            static_cast<long>(payload.size()));
  const uint64_t sum = XXH64(out.data(), out.size(), kSeed);
  out.append(reinterpret_cast<const char*>(&sum), sizeof(sum));
  return out;
}

absl::Status VerifyBlock(absl::string_view bytes) { return ParseHeader(bytes).status(); }

absl::StatusOr<DecodedBlock> DecodeBlock(absl::string_view bytes) {
  absl::StatusOr<Header> parsed = ParseHeader(bytes);
  if (!parsed.ok()) return parsed.status();
  const Header& h = *parsed;
  const size_t floats = 2ull * h.kv_heads * h.num_tokens * static_cast<size_t>(h.head_dim);
  DecodedBlock b;
  b.meta = {h.model_fingerprint,
            h.config_fingerprint,
            h.layer,
            h.kv_head_begin,
            h.kv_heads,
            h.head_dim,
            static_cast<kernels::DType>(h.dtype)};
  // A block may hold no tokens: memcpy must not see the null data() of an empty vector.
  if (h.num_tokens == 0) return b;
  b.positions.resize(h.num_tokens);
  std::memcpy(b.positions.data(), bytes.data() + sizeof(h), 4ull * h.num_tokens);
  b.payload.resize(floats);
  // The payload may sit at any alignment inside `bytes`: 2-byte elements are copied out first.
  const char* payload = bytes.data() + sizeof(h) + 4ull * h.num_tokens;
  if (b.meta.dtype == kernels::DType::kF32) {
    std::memcpy(b.payload.data(), payload, 4 * floats);
  } else {
    std::vector<uint16_t> half(floats);
    std::memcpy(half.data(), payload, 2 * floats);
    kernels::ConvertToFloat(b.meta.dtype, half.data(), b.payload.data(), static_cast<long>(floats));
  }
  return b;
}

}  // namespace dapq::kvstore
