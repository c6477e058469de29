// File: worker/tokenizer.cc
// llama2.c BPE tokenizer: loading with bounds checks, encode, decode.
#include "worker/tokenizer.h"

#include <cstdint>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/mapped_file.h"
#include "common/status_macros.h"

namespace dapq::worker {

absl::StatusOr<Tokenizer> Tokenizer::Load(const std::string& path, int vocab_size) {
  if (vocab_size <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("tokenizer: vocab_size=", vocab_size));
  }
  DAPQ_ASSIGN_OR_RETURN(MappedFile file, MappedFile::Open(path));
  const uint8_t* p = file.data();
  const size_t size = file.size();
  size_t off = 0;
  auto read = [&](void* dst, size_t n) {
    if (off + n > size) return false;
    std::memcpy(dst, p + off, n);
    off += n;
    return true;
  };
  int32_t max_len = 0;
  if (!read(&max_len, 4) || max_len <= 0 || max_len > 4096) {
    return absl::InvalidArgumentError(
        absl::StrCat("tokenizer ", path, ": bad or missing max_token_length header"));
  }
  Tokenizer t;
  t.pieces_.resize(vocab_size);
  t.scores_.resize(vocab_size);
  for (int i = 0; i < vocab_size; ++i) {
    int32_t len = 0;
    if (!read(&t.scores_[i], 4) || !read(&len, 4)) {
      return absl::InvalidArgumentError(absl::StrCat("tokenizer ", path, ": truncated at token ", i,
                                                     " (offset ", off, ", file ", size, " bytes)"));
    }
    if (len < 0 || len > max_len) {
      return absl::InvalidArgumentError(absl::StrCat("tokenizer ", path, ": token ", i, " length ",
                                                     len, " outside [0, ", max_len, "]"));
    }
    t.pieces_[i].resize(len);
    if (!read(t.pieces_[i].data(), len)) {
      return absl::InvalidArgumentError(
          absl::StrCat("tokenizer ", path, ": truncated inside token ", i, " (offset ", off, ")"));
    }
    t.index_.emplace(t.pieces_[i], i);  // first occurrence wins, like llama2.c's sorted lookup
  }
  if (off != size) {
    return absl::InvalidArgumentError(absl::StrCat("tokenizer ", path, ": ", size - off,
                                                   " trailing bytes after ", vocab_size,
                                                   " tokens (vocabulary size mismatch?)"));
  }
  return t;
}

int Tokenizer::Lookup(std::string_view piece) const {
  auto it = index_.find(std::string(piece));
  return it == index_.end() ? -1 : it->second;
}

std::vector<int> Tokenizer::Encode(std::string_view text, bool add_bos, bool add_eos) const {
  std::vector<int> tokens;
  if (add_bos) tokens.push_back(kBos);
  if (!text.empty()) {
    const int space = Lookup(" ");
    if (space >= 0) tokens.push_back(space);
  }
  // One token per UTF-8 character; byte fallback when the character is not a piece.
  for (size_t i = 0; i < text.size();) {
    size_t len = 1;
    const auto lead = static_cast<unsigned char>(text[i]);
    if ((lead & 0xE0) == 0xC0)
      len = 2;
    else if ((lead & 0xF0) == 0xE0)
      len = 3;
    else if ((lead & 0xF8) == 0xF0)
      len = 4;
    if (i + len > text.size()) len = 1;
    for (size_t j = 1; j < len; ++j) {
      if ((static_cast<unsigned char>(text[i + j]) & 0xC0) != 0x80) {
        len = 1;
        break;
      }
    }
    const int id = Lookup(text.substr(i, len));
    if (id >= 0) {
      tokens.push_back(id);
    } else {
      // Byte fallback: byte b is id b + 3, or <unk> when the vocabulary has no such id (fewer
      // than 259 pieces).
      for (size_t j = 0; j < len; ++j) {
        const int byte_id = static_cast<unsigned char>(text[i + j]) + 3;
        tokens.push_back(byte_id < vocab_size() ? byte_id : kUnk);
      }
    }
    i += len;
  }
  // Merge the best-scoring adjacent pair until none merges.
  const size_t first = add_bos ? 1 : 0;
  while (true) {
    float best_score = -1e10f;
    int best_id = -1;
    size_t best_idx = 0;
    for (size_t i = first; i + 1 < tokens.size(); ++i) {
      const int id = Lookup(pieces_[tokens[i]] + pieces_[tokens[i + 1]]);
      if (id >= 0 && scores_[id] > best_score) {
        best_score = scores_[id];
        best_id = id;
        best_idx = i;
      }
    }
    if (best_id < 0) break;
    tokens[best_idx] = best_id;
    tokens.erase(tokens.begin() + static_cast<long>(best_idx) + 1);
  }
  if (add_eos) tokens.push_back(kEos);
  return tokens;
}

std::string Tokenizer::Decode(int prev_token, int token) const {
  if (token < 0 || token >= vocab_size()) return "";
  std::string_view piece = pieces_[token];
  if (prev_token == kBos && !piece.empty() && piece[0] == ' ') piece.remove_prefix(1);
  unsigned int byte = 0;
  if (piece.size() == 6 && piece.substr(0, 3) == "<0x" && piece[5] == '>' &&
      std::sscanf(std::string(piece).c_str(), "<0x%02X>", &byte) == 1) {
    return std::string(1, static_cast<char>(byte));
  }
  return std::string(piece);
}

std::string Tokenizer::DecodeAll(const std::vector<int>& tokens, int prev_token) const {
  std::string out;
  for (int t : tokens) {
    out += Decode(prev_token, t);
    prev_token = t;
  }
  return out;
}

}  // namespace dapq::worker
