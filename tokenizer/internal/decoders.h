// File: tokenizer/internal/decoders.h
// tokenizer.json decoders: ByteLevel, Replace (String or Regex), ByteFallback, Fuse, Strip,
// Metaspace, Sequence. A decoder chain turns the texts of a run of tokens into output bytes.
//
// Differences from Hugging Face, all so that decoding works token by token:
//  - ByteFallback and ByteLevel produce raw bytes; a UTF-8 character may span tokens and nothing
//    is replaced by U+FFFD.
//  - Steps that act on the start of the text (Strip's start after Fuse, Metaspace's prefix
//    removal) act on the first token of a run; a run starts the sequence or follows a special
//    token. Strip's start removes up to `start` characters of that first token only.
//  - Strip with stop > 0 after Fuse (the end of the text) is rejected as Unimplemented.
// Thread-safety: immutable after construction.
#ifndef DAPQ_TOKENIZER_INTERNAL_DECODERS_H_
#define DAPQ_TOKENIZER_INTERNAL_DECODERS_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "tokenizer/internal/spec.h"

namespace dapq::tokenizer::internal {

class Decoder {
 public:
  virtual ~Decoder() = default;
  // Decodes the token texts of one run in place. `at_start`: the run starts the text. `*fused`:
  // whether the list already stands for one joined text (Fuse ran); steps update it.
  virtual void Decode(std::vector<std::string>* tokens, bool at_start, bool* fused) const = 0;
};

// `*fuses` (in/out): whether a Fuse step ran before this decoder; set when this one fuses.
// Unimplemented naming the type for unknown decoders (WordPiece, BPEDecoder, CTC, ...).
absl::StatusOr<std::unique_ptr<Decoder>> MakeDecoder(const Json& spec, const SpecContext& ctx,
                                                     bool* fuses);

}  // namespace dapq::tokenizer::internal

#endif  // DAPQ_TOKENIZER_INTERNAL_DECODERS_H_
