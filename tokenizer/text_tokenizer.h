// File: tokenizer/text_tokenizer.h
// The interface every tokenizer of DapQ Serve implements: llama2.c's `tokenizer.bin`
// (worker/tokenizer.h) and Hugging Face `tokenizer.json` (tokenizer/hf_tokenizer.h). The worker
// encodes prompts and decodes generated tokens through it; it never needs to know which kind.
// Thread-safety: implementations are immutable after loading; every method is const and safe to
// call from many threads at once.
#ifndef DAPQ_TOKENIZER_TEXT_TOKENIZER_H_
#define DAPQ_TOKENIZER_TEXT_TOKENIZER_H_

#include <string>
#include <string_view>
#include <vector>

namespace dapq::tokenizer {

class TextTokenizer {
 public:
  virtual ~TextTokenizer() = default;

  // The ids of `text`. Special tokens written in the text (`<|eot_id|>`, `<s>`) become their ids.
  // `add_special_tokens`: frame a fresh sequence the way the tokenizer declares (the BOS of
  // llama2.c and Llama-2, a tokenizer.json post-processor's template); false for text that
  // continues a sequence or already carries its special tokens (a rendered chat template).
  virtual std::vector<int> Encode(std::string_view text, bool add_special_tokens) const = 0;

  // The bytes `token` adds when it follows `prev_token` (-1: the start of a sequence). A
  // tokenizer.json's special tokens decode to nothing (llama2.c's keep their pieces). The bytes may
  // end inside a UTF-8 character that the next token completes (byte fallback, byte-level BPE);
  // callers that need whole characters buffer them.
  virtual std::string Decode(int prev_token, int token) const = 0;

  // Decodes a sequence; the first token follows `prev_token`.
  std::string DecodeAll(const std::vector<int>& tokens, int prev_token = -1) const {
    std::string out;
    for (int t : tokens) {
      out += Decode(prev_token, t);
      prev_token = t;
    }
    return out;
  }

  // One more than the largest id the tokenizer can produce.
  virtual int vocab_size() const = 0;
  // Id of a special token by its text (`<|eot_id|>`), or -1.
  virtual int SpecialTokenId(std::string_view content) const = 0;
};

}  // namespace dapq::tokenizer

#endif  // DAPQ_TOKENIZER_TEXT_TOKENIZER_H_
