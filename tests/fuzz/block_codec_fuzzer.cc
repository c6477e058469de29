// File: tests/fuzz/block_codec_fuzzer.cc
// KV blocks (kvstore/block_codec.h). Input: one flags byte, then the block's bytes. Flag bit 0
// replaces the block's last 8 bytes by its correct checksum (kvstore::Fingerprint of the rest
// is the codec's xxh64), so the fuzzer explores the header and size checks behind the checksum
// instead of stopping at it. Invariants: VerifyBlock and DecodeBlock agree; every failure is
// DataLoss; a decoded block has the sizes its header states, and encoding it again gives the
// same bytes (fp32) or a block that decodes to the same values (bf16/fp16).
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include "absl/status/status.h"
#include "kvstore/block_codec.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

using dapq::kvstore::DecodeBlock;
using dapq::kvstore::DecodedBlock;

bool SameFloats(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() &&
         (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const uint8_t flags = data[0];
  std::string bytes(dapq::fuzz::AsView(data + 1, size - 1));
  if ((flags & 1) != 0 && bytes.size() >= 8) {
    const uint64_t sum =
        dapq::kvstore::Fingerprint(absl::string_view(bytes).substr(0, bytes.size() - 8));
    std::memcpy(bytes.data() + bytes.size() - 8, &sum, 8);
  }
  const absl::Status verified = dapq::kvstore::VerifyBlock(bytes);
  const absl::StatusOr<DecodedBlock> block = DecodeBlock(bytes);
  FUZZ_CHECK(verified.ok() == block.ok());
  if (!block.ok()) {
    FUZZ_CHECK(block.status().code() == absl::StatusCode::kDataLoss);
    FUZZ_CHECK(verified.code() == absl::StatusCode::kDataLoss);
    return 0;
  }
  const dapq::kvstore::BlockMeta& meta = block->meta;
  FUZZ_CHECK(meta.kv_heads > 0 && meta.head_dim > 0);
  const size_t floats = 2 * static_cast<size_t>(meta.kv_heads) * block->positions.size() *
                        static_cast<size_t>(meta.head_dim);
  FUZZ_CHECK(block->payload.size() == floats);
  FUZZ_CHECK(floats <= bytes.size());
  const absl::StatusOr<std::string> again =
      dapq::kvstore::EncodeBlock(meta, block->positions, block->payload);
  FUZZ_CHECK(again.ok());
  if (meta.dtype == dapq::kernels::DType::kF32) {
    FUZZ_CHECK(*again == bytes);
  } else {
    FUZZ_CHECK(again->size() == bytes.size());
    const absl::StatusOr<DecodedBlock> redecoded = DecodeBlock(*again);
    FUZZ_CHECK(redecoded.ok());
    FUZZ_CHECK(redecoded->meta == meta && redecoded->positions == block->positions);
    // A NaN's payload bits may change when it is rounded again; every other value is exact.
    bool has_nan = false;
    for (float f : block->payload) has_nan = has_nan || f != f;
    if (!has_nan) FUZZ_CHECK(SameFloats(redecoded->payload, block->payload));
  }
  return 0;
}
