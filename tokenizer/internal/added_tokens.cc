// File: tokenizer/internal/added_tokens.cc
// Added-token parsing and the trie-based longest-match splitter.
#include "tokenizer/internal/added_tokens.h"

#include <unicode/uchar.h>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "tokenizer/internal/utf8.h"

namespace dapq::tokenizer::internal {
namespace {

bool IsWordChar(uint32_t cp) { return cp == '_' || u_isalnum(static_cast<UChar32>(cp)); }

}  // namespace

absl::StatusOr<std::vector<AddedToken>> ParseAddedTokens(const Json& list, const SpecContext& ctx) {
  if (!list.is_array()) return ctx.Invalid("\"added_tokens\" is not an array");
  std::vector<AddedToken> out;
  for (size_t i = 0; i < list.size(); ++i) {
    const SpecContext c = ctx.Child(absl::StrCat("[", i, "]"));
    const Json& t = list[i];
    if (!t.is_object()) return c.Invalid("expected an object");
    AddedToken a;
    DAPQ_ASSIGN_OR_RETURN(const long long id, GetInt(t, "id", -1, c));
    if (id < 0 || id > kMaxTokenId) {
      return c.Invalid(absl::StrCat("missing or invalid \"id\" (0 to ", kMaxTokenId, ")"));
    }
    a.id = static_cast<int>(id);
    DAPQ_ASSIGN_OR_RETURN(a.content, GetString(t, "content", c));
    DAPQ_ASSIGN_OR_RETURN(a.single_word, GetBool(t, "single_word", false, c));
    DAPQ_ASSIGN_OR_RETURN(a.lstrip, GetBool(t, "lstrip", false, c));
    DAPQ_ASSIGN_OR_RETURN(a.rstrip, GetBool(t, "rstrip", false, c));
    DAPQ_ASSIGN_OR_RETURN(a.normalized, GetBool(t, "normalized", false, c));
    DAPQ_ASSIGN_OR_RETURN(a.special, GetBool(t, "special", false, c));
    out.push_back(std::move(a));
  }
  return out;
}

void AddedTokenSplitter::Insert(int token) {
  const std::string& s = (*tokens_)[token].content;
  first_byte_[static_cast<unsigned char>(s[0])] = true;
  int node = 0;
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    auto it = nodes_[node].children.find(c);
    if (it == nodes_[node].children.end()) {
      nodes_.emplace_back();
      it = nodes_[node].children.emplace(c, static_cast<int>(nodes_.size()) - 1).first;
    }
    node = it->second;
  }
  if (nodes_[node].token < 0) nodes_[node].token = token;  // the first of duplicates wins
}

bool AddedTokenSplitter::SingleWordOk(std::string_view text, size_t begin, size_t end) const {
  if (begin > 0) {
    size_t s = begin - 1;
    while (s > 0 && begin - s < 4 && (static_cast<unsigned char>(text[s]) & 0xC0) == 0x80) --s;
    uint32_t cp;
    if (DecodeUtf8(text, s, &cp) > 0 && IsWordChar(cp)) return false;
  }
  if (end < text.size()) {
    uint32_t cp;
    if (DecodeUtf8(text, end, &cp) > 0 && IsWordChar(cp)) return false;
  }
  return true;
}

std::vector<AddedTokenSplitter::Segment> AddedTokenSplitter::Split(std::string_view text) const {
  std::vector<Segment> out;
  size_t start = 0;
  size_t i = 0;
  std::vector<std::pair<int, size_t>> matches;  // (token, end) at position i, shortest first
  while (i < text.size()) {
    if (!first_byte_[static_cast<unsigned char>(text[i])]) {
      ++i;
      continue;
    }
    matches.clear();
    int node = 0;
    for (size_t j = i; j < text.size(); ++j) {
      auto it = nodes_[node].children.find(static_cast<unsigned char>(text[j]));
      if (it == nodes_[node].children.end()) break;
      node = it->second;
      if (nodes_[node].token >= 0) matches.emplace_back(nodes_[node].token, j + 1);
    }
    int token = -1;
    size_t end = 0;
    for (auto m = matches.rbegin(); m != matches.rend(); ++m) {
      if (!(*tokens_)[m->first].single_word || SingleWordOk(text, i, m->second)) {
        token = m->first;
        end = m->second;
        break;
      }
    }
    if (token < 0) {
      ++i;
      continue;
    }
    out.push_back({text.substr(start, i - start), -1});
    out.push_back({{}, token});
    i = end;
    start = i;
  }
  out.push_back({text.substr(start), -1});

  // lstrip / rstrip: trim the neighbouring text, then drop empty text segments.
  for (size_t k = 0; k < out.size(); ++k) {
    if (out[k].token < 0) continue;
    const AddedToken& t = (*tokens_)[out[k].token];
    if (t.lstrip && k > 0 && out[k - 1].token < 0) out[k - 1].text = TrimRight(out[k - 1].text);
    if (t.rstrip && k + 1 < out.size() && out[k + 1].token < 0) {
      out[k + 1].text = TrimLeft(out[k + 1].text);
    }
  }
  std::vector<Segment> result;
  result.reserve(out.size());
  for (const Segment& s : out) {
    if (s.token >= 0 || !s.text.empty()) result.push_back(s);
  }
  return result;
}

}  // namespace dapq::tokenizer::internal
