// File: tokenizer/llama2c_tokenizer_json.h
// Converts a llama2.c vocabulary (tokenizer.bin: pieces and merge scores, read by
// worker::Tokenizer) into a Hugging Face tokenizer.json plus tokenizer_config.json that
// HfTokenizer encodes like llama2.c:
//   llama2.c: BOS, a dummy " " token, one token per UTF-8 character (byte fallback id = byte + 3),
//   then repeatedly merge the adjacent pair whose merged piece scores highest (leftmost on ties).
//   tokenizer.json (SentencePiece style, like Llama-2's): ' ' is '▁' in pieces; normalizer
//   Prepend "▁" + Replace " " -> "▁"; no pre-tokenizer; BPE with byte_fallback whose merges are
//   every split (a, b) of every piece into two pieces, ordered by the merged piece's score
//   (highest first; equal scores by id; the splits of one piece by the length of a);
//   TemplateProcessing adding <s>; decoder Replace "▁" -> " ", ByteFallback, Fuse, Strip.
//
// Where the two can differ (tokenizer/llama2c_tokenizer_json_test.cc checks tok512.bin):
//  - Rank-by-pair BPE orders two different splits of the same piece by rank, llama2.c by
//    position. This changes the result only when both splits are candidates at once and a merge
//    in between consumes one of them; none of the test strings (random text and strings built
//    from tok512's multi-split pieces) hits it.
//  - Ids 0, 1, 2 become the added tokens <unk>, <s>, </s>: those strings in the input encode as
//    the special ids (llama2.c spells them out character by character).
//  - U+2581 '▁' in the input encodes like a space (it is the space of the pieces).
// Thread-safety: a pure function.
#ifndef DAPQ_TOKENIZER_LLAMA2C_TOKENIZER_JSON_H_
#define DAPQ_TOKENIZER_LLAMA2C_TOKENIZER_JSON_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace dapq::tokenizer {

struct Llama2cTokenizerFiles {
  std::string tokenizer_json;
  std::string tokenizer_config_json;  // bos "<s>", eos "</s>", unk "<unk>", add_bos_token true
};

// `pieces[i]` and `scores[i]` for every id i (llama2.c order: 0 <unk>, 1 BOS, 2 EOS, 3..258 the
// byte pieces <0x00>..<0xFF>). InvalidArgument when the sizes differ, when a piece is not valid
// UTF-8, or when ids 3..258 are not the byte pieces.
absl::StatusOr<Llama2cTokenizerFiles> Llama2cToTokenizerJson(const std::vector<std::string>& pieces,
                                                             const std::vector<float>& scores);

}  // namespace dapq::tokenizer

#endif  // DAPQ_TOKENIZER_LLAMA2C_TOKENIZER_JSON_H_
