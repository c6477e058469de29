// File: tokenizer/internal/bpe_model.cc
// BPE vocabulary/merges loading and the heap-based merge.
#include "tokenizer/internal/bpe_model.h"

#include <cstdio>
#include <queue>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "tokenizer/internal/utf8.h"

namespace dapq::tokenizer::internal {
namespace {

absl::StatusOr<std::pair<std::string, std::string>> ParseMerge(const Json& m, size_t index,
                                                               const SpecContext& ctx) {
  if (m.is_string()) {
    const std::string& s = m.get_ref<const std::string&>();
    const size_t space = s.find(' ');
    if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos) {
      return ctx.Invalid(absl::StrCat("merge ", index, " \"", s, "\" is not \"a b\""));
    }
    return std::make_pair(s.substr(0, space), s.substr(space + 1));
  }
  if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
    return std::make_pair(m[0].get<std::string>(), m[1].get<std::string>());
  }
  return ctx.Invalid(absl::StrCat("merge ", index, " is neither \"a b\" nor [a, b]"));
}

}  // namespace

absl::StatusOr<std::unique_ptr<BpeModel>> BpeModel::Make(const Json& spec, const SpecContext& ctx) {
  if (!spec.is_object()) return ctx.Invalid("expected an object");
  std::string type = "BPE";
  if (FindField(spec, "type") != nullptr) {
    DAPQ_ASSIGN_OR_RETURN(type, GetString(spec, "type", ctx));
  } else if (FindField(spec, "merges") == nullptr) {
    return ctx.Invalid("no \"type\" and no \"merges\": cannot tell the model type");
  }
  if (type != "BPE") return ctx.Unsupported("model", type);
  for (const char* field : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    DAPQ_ASSIGN_OR_RETURN(const std::optional<std::string> v, GetOptionalString(spec, field, ctx));
    if (v.has_value() && !v->empty()) {
      return absl::UnimplementedError(absl::StrCat(ctx.file, ": ", ctx.component, ": BPE ", field,
                                                   " \"", *v, "\" is not supported"));
    }
  }
  if (const Json* dropout = FindField(spec, "dropout"); dropout != nullptr) {
    if (!dropout->is_number() || (dropout->get<double>() > 0 && dropout->get<double>() < 1)) {
      return absl::UnimplementedError(
          absl::StrCat(ctx.file, ": ", ctx.component, ": BPE dropout is not supported"));
    }
  }

  std::unique_ptr<BpeModel> m(new BpeModel);
  const Json* vocab = FindField(spec, "vocab");
  if (vocab == nullptr || !vocab->is_object()) {
    return ctx.Invalid("missing or non-object field \"vocab\"");
  }
  int max_id = -1;
  m->vocab_.reserve(vocab->size());
  for (auto it = vocab->begin(); it != vocab->end(); ++it) {
    if (!it.value().is_number_integer() || it.value().get<long long>() < 0 ||
        it.value().get<long long>() > kMaxTokenId) {
      return ctx.Invalid(
          absl::StrCat("vocab entry \"", it.key(), "\" has no valid id (0 to ", kMaxTokenId, ")"));
    }
    const int id = static_cast<int>(it.value().get<long long>());
    m->vocab_.emplace(it.key(), id);
    max_id = std::max(max_id, id);
  }
  m->id_to_token_.resize(max_id + 1);
  m->id_used_.assign(max_id + 1, false);
  for (const auto& [token, id] : m->vocab_) {
    m->id_to_token_[id] = token;
    m->id_used_[id] = true;
    uint32_t cp;
    if (!token.empty() && DecodeUtf8(token, 0, &cp) == static_cast<int>(token.size())) {
      m->char_ids_.emplace(cp, id);
    }
  }

  DAPQ_ASSIGN_OR_RETURN(m->byte_fallback_, GetBool(spec, "byte_fallback", false, ctx));
  DAPQ_ASSIGN_OR_RETURN(m->fuse_unk_, GetBool(spec, "fuse_unk", false, ctx));
  DAPQ_ASSIGN_OR_RETURN(m->ignore_merges_, GetBool(spec, "ignore_merges", false, ctx));
  DAPQ_ASSIGN_OR_RETURN(const std::optional<std::string> unk,
                        GetOptionalString(spec, "unk_token", ctx));
  if (unk.has_value()) {
    m->unk_id_ = m->TokenToId(*unk);
    if (m->unk_id_ < 0) {
      return ctx.Invalid(absl::StrCat("unk_token \"", *unk, "\" is not in the vocabulary"));
    }
  }
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    m->byte_ids_[b] = m->TokenToId(name);
  }

  DAPQ_ASSIGN_OR_RETURN(const Json* merges, GetArray(spec, "merges", ctx));
  m->merges_.reserve(merges->size());
  std::string joined;
  for (size_t i = 0; i < merges->size(); ++i) {
    DAPQ_ASSIGN_OR_RETURN(const auto pair, ParseMerge((*merges)[i], i, ctx));
    const int a = m->TokenToId(pair.first);
    const int b = m->TokenToId(pair.second);
    joined = pair.first + pair.second;
    const int c = m->TokenToId(joined);
    if (a < 0 || b < 0 || c < 0) {
      return ctx.Invalid(absl::StrCat("merge ", i, " (\"", pair.first, "\", \"", pair.second,
                                      "\") uses a token outside the vocabulary"));
    }
    m->merges_.try_emplace(PairKey(a, b), Merge{static_cast<int>(i), c});
  }
  return m;
}

int BpeModel::TokenToId(std::string_view token) const {
  auto it = vocab_.find(absl::string_view(token.data(), token.size()));
  return it == vocab_.end() ? -1 : it->second;
}

const std::string* BpeModel::IdToToken(int id) const {
  if (id < 0 || id >= static_cast<int>(id_to_token_.size()) || !id_used_[id]) return nullptr;
  return &id_to_token_[id];
}

void BpeModel::EncodeWord(std::string_view word, std::vector<int>* ids) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    const int id = TokenToId(word);
    if (id >= 0) {
      ids->push_back(id);
      return;
    }
  }
  if (word.size() >= kCacheMaxWordBytes) {
    MergeWord(word, ids);
    return;
  }
  {
    MutexLock lock(&cache_mu_);
    auto it = cache_.find(absl::string_view(word.data(), word.size()));
    if (it != cache_.end()) {
      ids->insert(ids->end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int> word_ids;
  MergeWord(word, &word_ids);
  ids->insert(ids->end(), word_ids.begin(), word_ids.end());
  MutexLock lock(&cache_mu_);
  if (cache_.size() >= kCacheCapacity) cache_.clear();
  cache_.emplace(word, std::move(word_ids));
}

void BpeModel::MergeWord(std::string_view word, std::vector<int>* ids) const {
  struct Symbol {
    int id;
    int prev;
    int next;
  };
  std::vector<Symbol> syms;
  syms.reserve(word.size());
  auto push = [&syms](int id) {
    const int n = static_cast<int>(syms.size());
    syms.push_back({id, n - 1, -1});
    if (n > 0) syms[n - 1].next = n;
  };
  bool last_unk = false;
  for (size_t i = 0; i < word.size();) {
    uint32_t cp;
    const int n = DecodeUtf8(word, i, &cp);
    const size_t len = n == 0 ? 1 : n;
    int id = -1;
    if (n > 0) {
      auto it = char_ids_.find(cp);
      if (it != char_ids_.end()) id = it->second;
    } else {
      id = TokenToId(word.substr(i, 1));
    }
    if (id >= 0) {
      push(id);
      last_unk = false;
      i += len;
      continue;
    }
    bool done = false;
    if (byte_fallback_) {
      done = true;
      for (size_t k = 0; k < len; ++k) {
        if (byte_ids_[static_cast<uint8_t>(word[i + k])] < 0) done = false;
      }
      if (done) {
        for (size_t k = 0; k < len; ++k) push(byte_ids_[static_cast<uint8_t>(word[i + k])]);
        last_unk = false;
      }
    }
    if (!done && unk_id_ >= 0 && !(fuse_unk_ && last_unk)) {
      push(unk_id_);
      last_unk = true;
    }
    i += len;
  }

  struct Candidate {
    int rank;
    int pos;
    int left_id;
    int right_id;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> heap;
  auto add = [&](int pos) {
    const int next = syms[pos].next;
    if (next < 0) return;
    auto it = merges_.find(PairKey(syms[pos].id, syms[next].id));
    if (it != merges_.end()) heap.push({it->second.rank, pos, syms[pos].id, syms[next].id});
  };
  for (int i = 0; i + 1 < static_cast<int>(syms.size()); ++i) add(i);
  while (!heap.empty()) {
    const Candidate c = heap.top();
    heap.pop();
    Symbol& left = syms[c.pos];
    // A removed symbol has id -1; a changed pair has other ids.
    if (left.id != c.left_id || left.next < 0 || syms[left.next].id != c.right_id) continue;
    const int right = left.next;
    left.id = merges_.find(PairKey(c.left_id, c.right_id))->second.new_id;
    left.next = syms[right].next;
    if (left.next >= 0) syms[left.next].prev = c.pos;
    syms[right].id = -1;
    if (left.prev >= 0) add(left.prev);
    add(c.pos);
  }
  for (int i = syms.empty() ? -1 : 0; i >= 0; i = syms[i].next) ids->push_back(syms[i].id);
}

}  // namespace dapq::tokenizer::internal
