// File: tokenizer/internal/regex.h
// A compiled PCRE2 regular expression for tokenizer.json patterns: UTF + UCP (\s, \w, \d and
// POSIX classes are Unicode-aware), JIT-compiled when the platform supports it, and
// PCRE2_MATCH_INVALID_UTF so that invalid UTF-8 in the subject never fails a match (invalid bytes
// match no pattern character; they end up between matches).
// Thread-safety: immutable after Compile; ForEachMatch may run concurrently (per-call match data,
// per-thread JIT stack).
#ifndef DAPQ_TOKENIZER_INTERNAL_REGEX_H_
#define DAPQ_TOKENIZER_INTERNAL_REGEX_H_

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "tokenizer/internal/spec.h"

namespace dapq::tokenizer::internal {

class Regex {
 public:
  // InvalidArgument (with PCRE2's message and offset) when the pattern does not compile.
  static absl::StatusOr<std::unique_ptr<Regex>> Compile(std::string_view pattern);
  // A regex matching `literal` exactly.
  static absl::StatusOr<std::unique_ptr<Regex>> Literal(std::string_view literal);
  // The compiled regex of a {"Regex": ...} pattern object; null for a {"String": ...} one.
  static absl::StatusOr<std::unique_ptr<Regex>> CompileIfRegex(const PatternSpec& pattern);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Calls on_match(begin, end) (byte offsets) for each non-empty, non-overlapping match, left to
  // right. After an empty match the search resumes one unit later. A matching error (resource
  // limits) ends the search as if there were no further match.
  void ForEachMatch(std::string_view text,
                    const std::function<void(size_t begin, size_t end)>& on_match) const;

  // `text` with every match replaced by `replacement` (literal text).
  std::string ReplaceAll(std::string_view text, std::string_view replacement) const;

  const std::string& pattern() const { return pattern_; }

 private:
  Regex() = default;
  std::string pattern_;
  void* code_ = nullptr;  // pcre2_code_8*
  bool jit_ = false;
};

}  // namespace dapq::tokenizer::internal

#endif  // DAPQ_TOKENIZER_INTERNAL_REGEX_H_
