// File: tokenizer/internal/normalizers.h
// tokenizer.json normalizers: NFC, NFD, NFKC, NFKD (ICU), Prepend, Replace (String or Regex),
// Lowercase (ICU, root locale), Strip, Sequence. They run on each text section between added
// tokens. Invalid UTF-8 bytes stay in place: Unicode forms and Lowercase transform only the
// well-formed runs around them.
// Thread-safety: immutable after construction; Normalize is const and reentrant.
#ifndef DAPQ_TOKENIZER_INTERNAL_NORMALIZERS_H_
#define DAPQ_TOKENIZER_INTERNAL_NORMALIZERS_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "tokenizer/internal/spec.h"

namespace dapq::tokenizer::internal {

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual void Normalize(std::string* text) const = 0;
};

// Builds a normalizer from its JSON object. Unimplemented naming the type for unknown ones
// (BertNormalizer, Precompiled, StripAccents, ...).
absl::StatusOr<std::unique_ptr<Normalizer>> MakeNormalizer(const Json& spec,
                                                           const SpecContext& ctx);

}  // namespace dapq::tokenizer::internal

#endif  // DAPQ_TOKENIZER_INTERNAL_NORMALIZERS_H_
