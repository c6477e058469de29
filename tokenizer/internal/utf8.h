// File: tokenizer/internal/utf8.h
// UTF-8 helpers shared by the tokenizer.json pipeline. Text may be invalid UTF-8: every byte that
// does not start a well-formed sequence (shortest form, no surrogates, at most U+10FFFF) is an
// "invalid unit" of length 1 that the pipeline carries through unchanged (see hf_tokenizer.h).
// Thread-safety: stateless functions.
#ifndef DAPQ_TOKENIZER_INTERNAL_UTF8_H_
#define DAPQ_TOKENIZER_INTERNAL_UTF8_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace dapq::tokenizer::internal {

// Length (1-4) of the well-formed UTF-8 character at s[i] and its code point in *cp, or 0 when
// the bytes at i do not form one (then *cp is the byte value). REQUIRES: i < s.size().
int DecodeUtf8(std::string_view s, size_t i, uint32_t* cp);

// Length of the unit at s[i]: a well-formed character's length, or 1 for an invalid byte.
inline int UnitLength(std::string_view s, size_t i) {
  uint32_t cp;
  const int n = DecodeUtf8(s, i, &cp);
  return n == 0 ? 1 : n;
}

void AppendUtf8(uint32_t cp, std::string* out);
std::string EncodeUtf8(uint32_t cp);

bool IsValidUtf8(std::string_view s);

// Unicode White_Space (the characters JS `trim` and Rust `char::is_whitespace` agree on, plus
// U+0085).
bool IsUnicodeWhitespace(uint32_t cp);

// Removes leading / trailing Unicode whitespace characters.
std::string_view TrimLeft(std::string_view s);
std::string_view TrimRight(std::string_view s);

}  // namespace dapq::tokenizer::internal

#endif  // DAPQ_TOKENIZER_INTERNAL_UTF8_H_
