// File: tests/fuzz/hf_tokenizer_json_fuzzer.cc
// tokenizer.json (tokenizer/hf_tokenizer.h, HfTokenizer::FromJson), then the loaded tokenizer at
// work. Invariants: load errors are InvalidArgument or Unimplemented; a loaded tokenizer encodes
// fixed strings (ASCII, multi-byte UTF-8, invalid UTF-8, special-token look-alikes) to ids inside
// [0, vocab_size()), and decodes every one of them, whole runs, and ids outside the vocabulary
// without fault.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "tests/fuzz/fuzz_util.h"
#include "tokenizer/hf_tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  absl::StatusOr<std::unique_ptr<dapq::tokenizer::HfTokenizer>> tok =
      dapq::tokenizer::HfTokenizer::FromJson(
          std::string_view(reinterpret_cast<const char*>(data), size), "fuzz.json");
  if (!tok.ok()) {
    const absl::StatusCode code = tok.status().code();
    FUZZ_CHECK(code == absl::StatusCode::kInvalidArgument ||
               code == absl::StatusCode::kUnimplemented);
    return 0;
  }
  const dapq::tokenizer::HfTokenizer& t = **tok;
  const int vocab = t.vocab_size();
  FUZZ_CHECK(vocab >= 0);
  static const std::string kTexts[] = {
      "",
      "Hello, world! It's 2024: 3.14159 apples.",
      "  leading and trailing spaces  \n\ttabs\r\n",
      "h\xC3\xA9llo w\xC3\xB6rld \xE2\x9C\x93 \xF0\x9F\x98\x80 \xE4\xBD\xA0\xE5\xA5\xBD",
      "\xFF\xFE\xC3 \xE2\x82 \xF0\x9F bytes \x80\xC0\xAF",
      "<s>[INST] <|begin_of_text|><|eot_id|></s><unk><|im_start|>user\n",
      "CamelCase snake_case 12345678901234567890 ....!!!???",
  };
  for (const std::string& text : kTexts) {
    for (const bool special : {false, true}) {
      const std::vector<int> ids = t.Encode(text, special);
      for (const int id : ids) FUZZ_CHECK(id >= 0 && id < vocab);
      FUZZ_CHECK(t.Encode(text, special) == ids);  // the BPE word cache changes nothing
      t.DecodeAll(ids);
      t.DecodeRuns(ids);
      for (const int id : ids) {
        t.TokenString(id);
        t.IsSpecial(id);
      }
    }
  }
  for (const int id : {-1, vocab, vocab + 1, 1 << 30}) {
    t.Decode(-1, id);
    t.TokenString(id);
    t.IsSpecial(id);
  }
  t.DecodeRuns({-1, vocab, 0, vocab - 1});
  for (int id = 0; id < vocab && id < 4096; ++id) t.Decode(id - 1, id);
  t.SpecialTokenId("<s>");
  t.SpecialTokenId("");
  return 0;
}
