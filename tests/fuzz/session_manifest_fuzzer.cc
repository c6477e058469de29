// File: tests/fuzz/session_manifest_fuzzer.cc
// Session manifests (worker/session_store.h, LoadSession) on the stories260K engine. Input: one
// flags byte, then the manifest. Flags:
//   bit 0: the rest is the manifest block's raw bytes (bit 3: with its checksum fixed); else the
//          rest is the manifest's int32 words, wrapped by the harness in a valid block carrying
//          the engine's model fingerprint, so the fuzzer reaches the manifest's own checks;
//   bit 1: failed-load policy kFail (else kRecompute: a manifest whose blocks fail to load is
//          replayed from its recorded tokens);
//   bit 2: the manifest replaces that of session "fz", whose blocks are in the store (else "fy",
//          which has none);
//   bit 4: the input replaces the session's first turn record ("<session>.t0") instead of its
//          header (words wrapped with the record's layer, -2).
// Invariants: LoadSession returns a sequence or an error (never crashes, whatever the counts,
// lengths, positions, tokens and segments say), and a loaded sequence can take a next turn
// (Continue returns a result or an error).
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "tests/fuzz/fuzz_util.h"
#include "tests/fuzz/session_fixture.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  dapq::fuzz::SessionFixture& f = dapq::fuzz::SessionFixture::Get();
  const uint8_t flags = data[0];
  const absl::string_view rest = dapq::fuzz::AsView(data + 1, size - 1);
  std::string manifest;
  if ((flags & 1) != 0) {
    manifest = std::string(rest);
    if ((flags & 8) != 0 && manifest.size() >= 8) {
      const uint64_t sum =
          dapq::kvstore::Fingerprint(absl::string_view(manifest).substr(0, manifest.size() - 8));
      std::memcpy(manifest.data() + manifest.size() - 8, &sum, 8);
    }
  } else {
    std::vector<int32_t> words(rest.size() / 4);
    if (!words.empty()) std::memcpy(words.data(), rest.data(), words.size() * 4);
    const std::vector<float> payload(2 * words.size(), 0.0f);
    absl::StatusOr<std::string> block =
        dapq::kvstore::EncodeBlock({f.model_fingerprint, 0, /*layer=*/(flags & 16) != 0 ? -2 : -1,
                                    0, 1, 1, dapq::kernels::DType::kF32},
                                   words, payload);
    FUZZ_CHECK(block.ok());
    manifest = *std::move(block);
  }
  const std::string session = (flags & 4) != 0 ? "fz" : "fy";
  // Every input starts from "fz"'s real turn record (an earlier input may have replaced it).
  FUZZ_CHECK(f.store->Put("fz", "fz.t0", f.record_block).ok());
  const std::string key = session + ((flags & 16) != 0 ? ".t0" : ".m");
  if (!f.store->Put(session, key, manifest).ok()) return 0;
  const dapq::worker::FailedLoadPolicy policy = (flags & 2) != 0
                                                    ? dapq::worker::FailedLoadPolicy::kFail
                                                    : dapq::worker::FailedLoadPolicy::kRecompute;
  absl::StatusOr<dapq::worker::LoadResult> loaded =
      dapq::worker::LoadSession(*f.engine, session, *f.store, policy, {});
  if (!loaded.ok()) return 0;
  FUZZ_CHECK(loaded->sequence != nullptr);
  dapq::worker::GenerateOptions options;
  options.max_new_tokens = 2;
  const std::vector<int> turn = {403, 407};
  f.engine->Continue(*loaded->sequence, turn, options).IgnoreError();
  return 0;
}
