// File: tokenizer/internal/byte_level.cc
// The byte <-> code point tables of the byte-level alphabet.
#include "tokenizer/internal/byte_level.h"

#include <array>

#include "tokenizer/internal/utf8.h"

namespace dapq::tokenizer::internal {
namespace {

struct Tables {
  std::array<uint32_t, 256> to_cp{};
  std::array<std::string, 256> to_utf8;
  std::array<int, 512> from_cp{};  // every alphabet code point is below U+0144
};

const Tables& GetTables() {
  static const Tables* const tables = [] {
    auto* t = new Tables;
    t->from_cp.fill(-1);
    auto printable = [](int b) {
      return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    };
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      const uint32_t cp = printable(b) ? static_cast<uint32_t>(b) : 256 + n++;
      t->to_cp[b] = cp;
      t->to_utf8[b] = EncodeUtf8(cp);
      t->from_cp[cp] = b;
    }
    return t;
  }();
  return *tables;
}

}  // namespace

uint32_t ByteToCodePoint(uint8_t byte) { return GetTables().to_cp[byte]; }
const std::string& ByteToUtf8(uint8_t byte) { return GetTables().to_utf8[byte]; }

int CodePointToByte(uint32_t cp) { return cp < 512 ? GetTables().from_cp[cp] : -1; }

void AppendByteLevel(std::string_view bytes, std::string* out) {
  const Tables& t = GetTables();
  for (char c : bytes) out->append(t.to_utf8[static_cast<uint8_t>(c)]);
}

std::string ByteLevelToBytes(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    uint32_t cp;
    const int n = DecodeUtf8(text, i, &cp);
    const int b = n == 0 ? -1 : CodePointToByte(cp);
    if (b >= 0) {
      out.push_back(static_cast<char>(b));
    } else {
      out.append(text.substr(i, n == 0 ? 1 : n));
    }
    i += n == 0 ? 1 : n;
  }
  return out;
}

}  // namespace dapq::tokenizer::internal
