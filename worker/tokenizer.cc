// File: worker/tokenizer.cc
// llama2.c BPE tokenizer: loading with bounds checks, encode (heap-based merging), decode.
#include "worker/tokenizer.h"

#include <cstdint>
#include <cstring>
#include <queue>

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
  std::string key;
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
    key.assign(text.substr(i, len));
    const auto it = index_.find(key);
    if (it != index_.end()) {
      tokens.push_back(it->second);
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
  // Merge the best-scoring adjacent pair until none merges; ties go to the leftmost pair. The
  // symbols form a linked list and the candidate pairs a max-heap on (score, -position) with
  // lazy invalidation, so this is O(n log n): a merged symbol keeps its left part's position,
  // and positions stay in text order.
  const int first = add_bos ? 1 : 0;
  const int n = static_cast<int>(tokens.size());
  std::vector<int> next(n);
  std::vector<int> prev(n);
  for (int i = 0; i < n; ++i) {
    next[i] = i + 1 < n ? i + 1 : -1;
    prev[i] = i - 1;
  }
  struct Candidate {
    float score;
    int pos;
    int left;  // the token ids the pair had when it was pushed
    int right;
    int merged;
    bool operator<(const Candidate& o) const {  // lower priority
      return score != o.score ? score < o.score : pos > o.pos;
    }
  };
  std::priority_queue<Candidate> heap;
  auto push = [&](int pos) {
    if (pos < first || next[pos] < 0) return;
    key.assign(pieces_[tokens[pos]]);
    key.append(pieces_[tokens[next[pos]]]);
    const auto it = index_.find(key);
    // The quadratic scan started from a best score of -1e10 and needed a strictly higher one.
    if (it == index_.end() || !(scores_[it->second] > -1e10f)) return;
    heap.push({scores_[it->second], pos, tokens[pos], tokens[next[pos]], it->second});
  };
  for (int i = first; i + 1 < n; ++i) push(i);
  std::vector<bool> alive(n, true);
  while (!heap.empty()) {
    const Candidate c = heap.top();
    heap.pop();
    const int r = next[c.pos];
    if (!alive[c.pos] || r < 0 || tokens[c.pos] != c.left || tokens[r] != c.right) continue;
    tokens[c.pos] = c.merged;
    alive[r] = false;
    next[c.pos] = next[r];
    if (next[r] >= 0) prev[next[r]] = c.pos;
    if (prev[c.pos] >= 0) push(prev[c.pos]);
    push(c.pos);
  }
  std::vector<int> out;
  out.reserve(n + 1);
  for (int i = n > 0 ? 0 : -1; i >= 0; i = next[i]) out.push_back(tokens[i]);
  if (add_eos) out.push_back(kEos);
  return out;
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

int Tokenizer::SpecialTokenId(std::string_view content) const {
  const int id = Lookup(content);
  return id == kUnk || id == kBos || id == kEos ? id : -1;
}

}  // namespace dapq::worker
