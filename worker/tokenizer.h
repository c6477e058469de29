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

namespace dapq::worker {

class Tokenizer {
 public:
  // NotFound for a missing file; InvalidArgument for a truncated or malformed one (names the
  // token index and offset).
  static absl::StatusOr<Tokenizer> Load(const std::string& path, int vocab_size);

  std::vector<int> Encode(std::string_view text, bool add_bos, bool add_eos) const;
  // The text of `token` when it follows `prev_token`.
  std::string Decode(int prev_token, int token) const;
  // Decodes a whole sequence (the first token's predecessor is taken as `prev_token`).
  std::string DecodeAll(const std::vector<int>& tokens, int prev_token) const;

  int vocab_size() const { return static_cast<int>(pieces_.size()); }
  const std::string& piece(int id) const { return pieces_[id]; }
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
