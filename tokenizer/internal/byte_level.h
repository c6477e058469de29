// File: tokenizer/internal/byte_level.h
// GPT-2's byte-level alphabet: every byte maps to one printable code point (printable Latin-1
// bytes to themselves, the other 68 to U+0100..U+0143, in byte order), so that byte-level BPE
// vocabularies are made of visible characters (' ' is 'Ġ', '\n' is 'Ċ').
// Thread-safety: immutable tables built on first use.
#ifndef DAPQ_TOKENIZER_INTERNAL_BYTE_LEVEL_H_
#define DAPQ_TOKENIZER_INTERNAL_BYTE_LEVEL_H_

#include <cstdint>
#include <string>
#include <string_view>

namespace dapq::tokenizer::internal {

// The code point that stands for `byte`.
uint32_t ByteToCodePoint(uint8_t byte);
// The UTF-8 text of ByteToCodePoint(byte).
const std::string& ByteToUtf8(uint8_t byte);
// The byte a code point stands for, or -1 when it is not in the alphabet.
int CodePointToByte(uint32_t cp);

// Appends the byte-level text of `bytes` (each byte's character) to *out.
void AppendByteLevel(std::string_view bytes, std::string* out);
// The bytes of a byte-level string: each character of the alphabet becomes its byte, any other
// character (or invalid unit) is copied as its own UTF-8 bytes.
std::string ByteLevelToBytes(std::string_view text);

}  // namespace dapq::tokenizer::internal

#endif  // DAPQ_TOKENIZER_INTERNAL_BYTE_LEVEL_H_
