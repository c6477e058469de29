// File: tokenizer/llama2c_tokenizer_json.cc
// llama2.c vocabulary -> tokenizer.json / tokenizer_config.json.
#include "tokenizer/llama2c_tokenizer_json.h"

#include <algorithm>
#include <cstdio>
#include <tuple>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "tokenizer/internal/utf8.h"

namespace dapq::tokenizer {
namespace {

using OrderedJson = nlohmann::ordered_json;

constexpr char kMeta[] = "\xE2\x96\x81";  // U+2581 '▁'
constexpr int kNumSpecial = 3;            // <unk>, <s>, </s>
constexpr int kFirstNormal = kNumSpecial + 256;
// llama2.c only merges into pieces scoring above its initial best score.
constexpr float kMinMergeScore = -1e10f;

std::string ToMeta(const std::string& piece) {
  std::string out;
  for (char c : piece) {
    if (c == ' ') {
      out += kMeta;
    } else {
      out.push_back(c);
    }
  }
  return out;
}

OrderedJson AddedToken(int id, const char* content) {
  return {{"id", id},        {"content", content},  {"single_word", false}, {"lstrip", false},
          {"rstrip", false}, {"normalized", false}, {"special", true}};
}

}  // namespace

absl::StatusOr<Llama2cTokenizerFiles> Llama2cToTokenizerJson(const std::vector<std::string>& pieces,
                                                             const std::vector<float>& scores) {
  if (pieces.size() != scores.size()) {
    return absl::InvalidArgumentError(absl::StrCat("llama2.c vocabulary: ", pieces.size(),
                                                   " pieces but ", scores.size(), " scores"));
  }
  const int n = static_cast<int>(pieces.size());
  if (n < kFirstNormal) {
    return absl::InvalidArgumentError(absl::StrCat(
        "llama2.c vocabulary: ", n, " pieces; need <unk>, <s>, </s> and the 256 byte pieces"));
  }
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    if (pieces[kNumSpecial + b] != name) {
      return absl::InvalidArgumentError(absl::StrCat("llama2.c vocabulary: piece ", kNumSpecial + b,
                                                     " is \"", pieces[kNumSpecial + b],
                                                     "\", not the byte piece ", name));
    }
  }
  // Vocabulary: the first occurrence of a piece wins, as in llama2.c's lookup.
  const char* const kSpecialNames[kNumSpecial] = {"<unk>", "<s>", "</s>"};
  std::vector<std::string> keys(n);
  absl::flat_hash_map<std::string, int> index;
  OrderedJson vocab = OrderedJson::object();
  for (int i = 0; i < n; ++i) {
    if (i >= kFirstNormal && !internal::IsValidUtf8(pieces[i])) {
      return absl::InvalidArgumentError(
          absl::StrCat("llama2.c vocabulary: piece ", i, " is not valid UTF-8"));
    }
    keys[i] = i < kNumSpecial ? kSpecialNames[i] : ToMeta(pieces[i]);
    if (keys[i].empty() || !index.emplace(keys[i], i).second) continue;
    vocab[keys[i]] = i;
  }
  // Merges: every split of a piece into two pieces, ordered by the merged piece's score.
  std::vector<std::tuple<float, int, size_t>> order;  // (score, id, length of the left part)
  for (int i = kFirstNormal; i < n; ++i) {
    if (index.at(keys[i]) != i || !(scores[i] > kMinMergeScore)) continue;
    const std::string& p = keys[i];
    for (size_t k = internal::UnitLength(p, 0); k < p.size(); k += internal::UnitLength(p, k)) {
      auto a = index.find(p.substr(0, k));
      auto b = index.find(p.substr(k));
      if (a == index.end() || b == index.end() || a->second < kNumSpecial ||
          b->second < kNumSpecial) {
        continue;
      }
      order.emplace_back(scores[i], i, k);
    }
  }
  std::stable_sort(order.begin(), order.end(), [](const auto& x, const auto& y) {
    if (std::get<0>(x) != std::get<0>(y)) return std::get<0>(x) > std::get<0>(y);
    if (std::get<1>(x) != std::get<1>(y)) return std::get<1>(x) < std::get<1>(y);
    return std::get<2>(x) < std::get<2>(y);
  });
  OrderedJson merges = OrderedJson::array();
  for (const auto& [score, id, k] : order) {
    merges.push_back(OrderedJson::array({keys[id].substr(0, k), keys[id].substr(k)}));
  }

  const bool has_space = index.contains(kMeta);
  // llama2.c adds the dummy " " only when " " is a piece; without it a space is byte 0x20.
  OrderedJson normalizer = nullptr;
  if (has_space) {
    normalizer = {{"type", "Sequence"},
                  {"normalizers",
                   {{{"type", "Prepend"}, {"prepend", kMeta}},
                    {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", kMeta}}}}};
  }

  OrderedJson tok = {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens", {AddedToken(0, "<unk>"), AddedToken(1, "<s>"), AddedToken(2, "</s>")}},
      {"normalizer", std::move(normalizer)},
      {"pre_tokenizer", nullptr},
      {"post_processor",
       {{"type", "TemplateProcessing"},
        {"single",
         {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
          {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
        {"pair",
         {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
          {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
          {{"SpecialToken", {{"id", "<s>"}, {"type_id", 1}}}},
          {{"Sequence", {{"id", "B"}, {"type_id", 1}}}}}},
        {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {1}}, {"tokens", {"<s>"}}}}}}}},
      {"decoder",
       {{"type", "Sequence"},
        {"decoders",
         {{{"type", "Replace"}, {"pattern", {{"String", kMeta}}}, {"content", " "}},
          {{"type", "ByteFallback"}},
          {{"type", "Fuse"}},
          {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}}},
      {"model",
       {{"type", "BPE"},
        {"dropout", nullptr},
        {"unk_token", "<unk>"},
        {"continuing_subword_prefix", nullptr},
        {"end_of_word_suffix", nullptr},
        {"fuse_unk", true},
        {"byte_fallback", true},
        {"ignore_merges", false},
        {"vocab", std::move(vocab)},
        {"merges", std::move(merges)}}}};
  const OrderedJson config = {{"add_bos_token", true},
                              {"add_eos_token", false},
                              {"bos_token", "<s>"},
                              {"eos_token", "</s>"},
                              {"unk_token", "<unk>"},
                              {"pad_token", nullptr},
                              {"clean_up_tokenization_spaces", false},
                              {"legacy", true},
                              {"tokenizer_class", "LlamaTokenizer"}};
  Llama2cTokenizerFiles files;
  files.tokenizer_json = tok.dump(1);
  files.tokenizer_config_json = config.dump(2);
  return files;
}

}  // namespace dapq::tokenizer
