// File: worker/tokenizer.h
// The llama2.c BPE tokenizer (`tok512.bin`, `tokenizer.bin`): a vocabulary of pieces with merge
// scores. Encoding as llama2.c: optional BOS, a dummy leading space, one token per UTF-8
// character (byte fallback <0xXX> = id byte + 3 when absent), then repeated merging of the
// adjacent pair whose merged piece has the highest score. Decoding strips the leading space of
// the first piece after BOS and turns <0xXX> pieces into bytes.
// Thread-safety: immutable after Load; Encode/Decode are const and thread-safe.
#ifndef DAPQ_WORKER_TOKENIZER_H_
#define DAPQ_WORKER_TOKENIZER_H_

#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "tokenizer/text_tokenizer.h"

namespace dapq::worker {

class Tokenizer final : public tokenizer::TextTokenizer {
 public:
  // NotFound for a missing file; InvalidArgument for a truncated or malformed one (names the
  // token index and offset).
  static absl::StatusOr<Tokenizer> Load(const std::string& path, int vocab_size);

  std::vector<int> Encode(std::string_view text, bool add_bos, bool add_eos) const;
  // TextTokenizer: `add_special_tokens` adds BOS (never EOS).
  std::vector<int> Encode(std::string_view text, bool add_special_tokens) const override {
    return Encode(text, add_special_tokens, /*add_eos=*/false);
  }
  // The text of `token` when it follows `prev_token` (BOS and EOS decode to their pieces, as in
  // llama2.c).
  std::string Decode(int prev_token, int token) const override;
  int SpecialTokenId(std::string_view content) const override;

  int vocab_size() const override { return static_cast<int>(pieces_.size()); }
  const std::string& piece(int id) const { return pieces_[id]; }
  float score(int id) const { return scores_[id]; }
  static constexpr int kUnk = 0;  // byte fallback ids past a small vocabulary map here
  static constexpr int kBos = 1;
  static constexpr int kEos = 2;

 private:
  int Lookup(std::string_view piece) const;  // -1 when absent

  std::vector<std::string> pieces_;
  std::vector<float> scores_;
  std::unordered_map<std::string, int> index_;
};

}  // namespace dapq::worker

#endif  // DAPQ_WORKER_TOKENIZER_H_
