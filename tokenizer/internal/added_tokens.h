// File: tokenizer/internal/added_tokens.h
// Added tokens (tokenizer.json "added_tokens"): splitting the input on their contents before
// normalization. At each position the longest content that matches wins, scanning left to right
// (transformers.js DictionarySplitter, Hugging Face AddedVocabulary). single_word tokens match
// only when no word character (letter, digit, '_') touches them; lstrip / rstrip tokens swallow
// the whitespace on their left / right. Tokens with normalized=true are matched in the
// normalized text of each section instead (their content as written).
// Thread-safety: immutable after construction; Split is const and reentrant.
#ifndef DAPQ_TOKENIZER_INTERNAL_ADDED_TOKENS_H_
#define DAPQ_TOKENIZER_INTERNAL_ADDED_TOKENS_H_

#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "tokenizer/internal/spec.h"

namespace dapq::tokenizer::internal {

struct AddedToken {
  int id = -1;
  std::string content;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = false;
  bool special = false;
};

absl::StatusOr<std::vector<AddedToken>> ParseAddedTokens(const Json& list, const SpecContext& ctx);

// Splits text on a set of added tokens.
class AddedTokenSplitter {
 public:
  struct Segment {
    std::string_view text;  // the text between tokens (empty for a token)
    int token = -1;         // index into the tokens given to the constructor, or -1 for text
  };

  // `tokens` must outlive the splitter; only those with `use(token)` true take part.
  template <typename Pred>
  AddedTokenSplitter(const std::vector<AddedToken>& tokens, Pred use) : tokens_(&tokens) {
    for (size_t i = 0; i < tokens.size(); ++i) {
      if (use(tokens[i]) && !tokens[i].content.empty()) Insert(static_cast<int>(i));
    }
  }
  bool empty() const { return nodes_.size() <= 1; }

  // Text segments (non-empty, with lstrip/rstrip whitespace removed) and token segments, in order.
  std::vector<Segment> Split(std::string_view text) const;

 private:
  struct Node {
    absl::flat_hash_map<unsigned char, int> children;
    int token = -1;
  };
  void Insert(int token);
  bool SingleWordOk(std::string_view text, size_t begin, size_t end) const;

  const std::vector<AddedToken>* tokens_;
  std::vector<Node> nodes_{Node{}};
  bool first_byte_[256] = {};
};

}  // namespace dapq::tokenizer::internal

#endif  // DAPQ_TOKENIZER_INTERNAL_ADDED_TOKENS_H_
