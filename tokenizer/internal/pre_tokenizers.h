// File: tokenizer/internal/pre_tokenizers.h
// tokenizer.json pre-tokenizers: Split (String or Regex pattern, every delimiter behavior,
// invert), ByteLevel (add_prefix_space, use_regex with the GPT-2 pattern), Metaspace
// (replacement, prepend_scheme first/always/never, split), Whitespace, WhitespaceSplit, Digits,
// Punctuation, Sequence. Each one refines a list of pieces (the words the model encodes one by
// one); empty pieces are dropped.
// Thread-safety: immutable after construction; PreTokenize is const and reentrant.
#ifndef DAPQ_TOKENIZER_INTERNAL_PRE_TOKENIZERS_H_
#define DAPQ_TOKENIZER_INTERNAL_PRE_TOKENIZERS_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "tokenizer/internal/spec.h"

namespace dapq::tokenizer::internal {

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Splits every piece of *pieces further. `first_section`: the pieces come from the section that
  // starts the input (Metaspace's prepend_scheme "first" prepends only to its first piece).
  virtual void PreTokenize(std::vector<std::string>* pieces, bool first_section) const = 0;
};

// Unimplemented naming the type for unknown pre-tokenizers (BertPreTokenizer, CharDelimiterSplit,
// UnicodeScripts, ...); InvalidArgument for a bad field or a regex that does not compile.
absl::StatusOr<std::unique_ptr<PreTokenizer>> MakePreTokenizer(const Json& spec,
                                                               const SpecContext& ctx);

}  // namespace dapq::tokenizer::internal

#endif  // DAPQ_TOKENIZER_INTERNAL_PRE_TOKENIZERS_H_
