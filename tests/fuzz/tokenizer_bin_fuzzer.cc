// File: tests/fuzz/tokenizer_bin_fuzzer.cc
// llama2.c tokenizer files (worker/tokenizer.h, Tokenizer::Load), then Encode and Decode with the
// loaded vocabulary. Input: a little-endian uint16 vocabulary size (the loader's second
// argument; mod 2048), then the file's bytes. Invariants: load errors are InvalidArgument;
// a loaded tokenizer has that many pieces; encoding fixed strings and the input itself gives ids
// inside the vocabulary (besides the BOS/EOS framing asked for); every id, and ids outside the
// vocabulary, decode without fault.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "tests/fuzz/fuzz_util.h"
#include "worker/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const int vocab_size = (data[0] | (data[1] << 8)) % 2048;
  const absl::string_view file = dapq::fuzz::AsView(data + 2, size - 2);
  const std::string path = dapq::fuzz::WriteScratchFile("tokenizer.bin", file);
  absl::StatusOr<dapq::worker::Tokenizer> tok = dapq::worker::Tokenizer::Load(path, vocab_size);
  if (!tok.ok()) {
    FUZZ_CHECK(tok.status().code() == absl::StatusCode::kInvalidArgument);
    return 0;
  }
  FUZZ_CHECK(tok->vocab_size() == vocab_size);
  const std::string texts[] = {"", "Once upon a time, there was a little girl.",
                               "h\xC3\xA9llo w\xC3\xB6rld \xE2\x9C\x93 \xF0\x9F\x98\x80",
                               "\xFF\xFE\xC3 \xE2\x82 \xF0\x9F bytes \x80",
                               std::string(file.substr(0, 256))};
  for (const std::string& text : texts) {
    for (const bool bos : {false, true}) {
      const std::vector<int> ids = tok->Encode(text, bos, /*add_eos=*/bos);
      for (size_t i = 0; i < ids.size(); ++i) {
        const bool framing = bos && (i == 0 || i + 1 == ids.size());
        if (!framing) FUZZ_CHECK(ids[i] >= 0 && ids[i] < vocab_size);
      }
      FUZZ_CHECK(!bos || (ids.front() == dapq::worker::Tokenizer::kBos &&
                          ids.back() == dapq::worker::Tokenizer::kEos));
      tok->DecodeAll(ids);
      tok->DecodeAll(ids, dapq::worker::Tokenizer::kBos);
    }
  }
  for (const int id : {-1, vocab_size, vocab_size + 1, 1 << 30}) tok->Decode(-1, id);
  for (int id = 0; id < vocab_size; ++id) tok->Decode(dapq::worker::Tokenizer::kBos, id);
  tok->SpecialTokenId("<s>");
  tok->SpecialTokenId("");
  return 0;
}
