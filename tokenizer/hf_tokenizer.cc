// File: tokenizer/hf_tokenizer.cc
// HfTokenizer: loads the tokenizer.json components and runs the encode / decode pipeline.
#include "tokenizer/hf_tokenizer.h"

#include <algorithm>
#include <filesystem>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "tokenizer/internal/added_tokens.h"
#include "tokenizer/internal/bpe_model.h"
#include "tokenizer/internal/decoders.h"
#include "tokenizer/internal/normalizers.h"
#include "tokenizer/internal/post_processors.h"
#include "tokenizer/internal/pre_tokenizers.h"
#include "tokenizer/internal/spec.h"

namespace dapq::tokenizer {

using internal::AddedToken;
using internal::AddedTokenSplitter;
using internal::Json;
using internal::SpecContext;

struct HfTokenizer::Impl {
  std::string file;
  std::unique_ptr<internal::Normalizer> normalizer;
  std::unique_ptr<internal::PreTokenizer> pre_tokenizer;
  std::unique_ptr<internal::BpeModel> model;
  std::unique_ptr<internal::PostProcessor> post_processor;
  std::unique_ptr<internal::Decoder> decoder;
  std::vector<AddedToken> added;
  std::unique_ptr<AddedTokenSplitter> raw_splitter;         // normalized=false tokens
  std::unique_ptr<AddedTokenSplitter> normalized_splitter;  // normalized=true tokens
  absl::flat_hash_map<std::string, int> added_by_content;
  std::vector<int> added_index;  // id -> index into `added`, or -1
  int vocab_size = 0;
  // Decoded bytes of each id inside a run, and where they differ, at the start of a run.
  std::vector<std::string> decoded;
  absl::flat_hash_map<int, std::string> decoded_at_start;

  const AddedToken* Added(int id) const {
    if (id < 0 || id >= static_cast<int>(added_index.size()) || added_index[id] < 0) return nullptr;
    return &added[added_index[id]];
  }
  bool IsSpecial(int id) const {
    const AddedToken* a = Added(id);
    return a != nullptr && a->special;
  }
  std::string RunDecode(std::vector<std::string> tokens, bool at_start) const {
    if (decoder != nullptr) {
      bool fused = false;
      decoder->Decode(&tokens, at_start, &fused);
    }
    std::string out;
    for (const std::string& t : tokens) out += t;
    return out;
  }
  static absl::StatusOr<std::unique_ptr<Impl>> Build(const Json& root, const std::string& file);
  void EncodeText(std::string_view text, bool first_section, std::vector<int>* ids) const {
    if (pre_tokenizer == nullptr) {
      model->EncodeWord(text, ids);
      return;
    }
    std::vector<std::string> pieces{std::string(text)};
    pre_tokenizer->PreTokenize(&pieces, first_section);
    for (const std::string& p : pieces) model->EncodeWord(p, ids);
  }
};

HfTokenizer::HfTokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
HfTokenizer::~HfTokenizer() = default;

absl::StatusOr<std::unique_ptr<HfTokenizer>> HfTokenizer::Load(const std::string& path) {
  std::string file = path;
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    file = (std::filesystem::path(path) / "tokenizer.json").string();
  DAPQ_ASSIGN_OR_RETURN(const Json root, internal::ParseJsonFile(file));
  DAPQ_ASSIGN_OR_RETURN(auto impl, Impl::Build(root, file));
  return std::unique_ptr<HfTokenizer>(new HfTokenizer(std::move(impl)));
}

absl::StatusOr<std::unique_ptr<HfTokenizer>> HfTokenizer::FromJson(std::string_view json,
                                                                   std::string_view name) {
  DAPQ_ASSIGN_OR_RETURN(const Json root, internal::ParseJsonText(json, std::string(name)));
  DAPQ_ASSIGN_OR_RETURN(auto impl, Impl::Build(root, std::string(name)));
  return std::unique_ptr<HfTokenizer>(new HfTokenizer(std::move(impl)));
}

absl::StatusOr<std::unique_ptr<HfTokenizer::Impl>> HfTokenizer::Impl::Build(
    const Json& root, const std::string& file) {
  auto impl = std::make_unique<Impl>();
  impl->file = file;
  if (!root.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(file, ": not a JSON object"));
  }
  const Json* model = internal::FindField(root, "model");
  if (model == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(file, ": no \"model\""));
  }
  DAPQ_ASSIGN_OR_RETURN(impl->model, internal::BpeModel::Make(*model, SpecContext{file, "model"}));
  if (const Json* n = internal::FindField(root, "normalizer"); n != nullptr) {
    DAPQ_ASSIGN_OR_RETURN(impl->normalizer,
                          internal::MakeNormalizer(*n, SpecContext{file, "normalizer"}));
  }
  if (const Json* p = internal::FindField(root, "pre_tokenizer"); p != nullptr) {
    DAPQ_ASSIGN_OR_RETURN(impl->pre_tokenizer,
                          internal::MakePreTokenizer(*p, SpecContext{file, "pre_tokenizer"}));
  }
  if (const Json* p = internal::FindField(root, "post_processor"); p != nullptr) {
    DAPQ_ASSIGN_OR_RETURN(impl->post_processor,
                          internal::MakePostProcessor(*p, SpecContext{file, "post_processor"}));
  }
  if (const Json* d = internal::FindField(root, "decoder"); d != nullptr) {
    bool fuses = false;
    DAPQ_ASSIGN_OR_RETURN(impl->decoder,
                          internal::MakeDecoder(*d, SpecContext{file, "decoder"}, &fuses));
  }
  if (const Json* a = internal::FindField(root, "added_tokens"); a != nullptr) {
    DAPQ_ASSIGN_OR_RETURN(impl->added,
                          internal::ParseAddedTokens(*a, SpecContext{file, "added_tokens"}));
  }

  int max_id = impl->model->max_id();
  for (const AddedToken& t : impl->added) max_id = std::max(max_id, t.id);
  impl->vocab_size = max_id + 1;
  // Encode returns what the post-processor adds: ids outside the vocabulary would reach the model.
  if (impl->post_processor != nullptr) {
    for (const int id : impl->post_processor->AddedIds()) {
      if (id < 0 || id >= impl->vocab_size) {
        return SpecContext{file, "post_processor"}.Invalid(absl::StrCat(
            "adds token id ", id, ", outside the vocabulary [0, ", impl->vocab_size, ")"));
      }
    }
  }
  impl->added_index.assign(impl->vocab_size, -1);
  for (size_t i = 0; i < impl->added.size(); ++i) {
    const AddedToken& t = impl->added[i];
    if (impl->added_index[t.id] < 0) impl->added_index[t.id] = static_cast<int>(i);
    impl->added_by_content.emplace(t.content, t.id);
  }
  impl->raw_splitter = std::make_unique<AddedTokenSplitter>(
      impl->added, [](const AddedToken& t) { return !t.normalized; });
  impl->normalized_splitter = std::make_unique<AddedTokenSplitter>(
      impl->added, [](const AddedToken& t) { return t.normalized; });

  impl->decoded.resize(impl->vocab_size);
  for (int id = 0; id < impl->vocab_size; ++id) {
    if (const AddedToken* a = impl->Added(id); a != nullptr) {
      if (!a->special) impl->decoded[id] = a->content;
      continue;
    }
    const std::string* token = impl->model->IdToToken(id);
    if (token == nullptr) continue;
    impl->decoded[id] = impl->RunDecode({*token}, /*at_start=*/false);
    std::string at_start = impl->RunDecode({*token}, /*at_start=*/true);
    if (at_start != impl->decoded[id]) impl->decoded_at_start.emplace(id, std::move(at_start));
  }
  return impl;
}

std::vector<int> HfTokenizer::Encode(std::string_view text, bool add_special_tokens) const {
  const Impl& im = *impl_;
  std::vector<int> ids;
  ids.reserve(text.size() / 3 + 4);
  const auto segments = im.raw_splitter->Split(text);
  std::string section;
  for (size_t k = 0; k < segments.size(); ++k) {
    const auto& seg = segments[k];
    if (seg.token >= 0) {
      ids.push_back(im.added[seg.token].id);
      continue;
    }
    section.assign(seg.text);
    if (im.normalizer != nullptr) im.normalizer->Normalize(&section);
    if (section.empty()) continue;
    if (im.normalized_splitter->empty()) {
      im.EncodeText(section, k == 0, &ids);
      continue;
    }
    const auto parts = im.normalized_splitter->Split(section);
    for (size_t j = 0; j < parts.size(); ++j) {
      if (parts[j].token >= 0) {
        ids.push_back(im.added[parts[j].token].id);
      } else {
        im.EncodeText(parts[j].text, k == 0 && j == 0, &ids);
      }
    }
  }
  if (add_special_tokens && im.post_processor != nullptr) im.post_processor->Apply(&ids);
  return ids;
}

std::string HfTokenizer::Decode(int prev_token, int token) const {
  const Impl& im = *impl_;
  if (token < 0 || token >= im.vocab_size) return "";
  if (prev_token < 0 || im.IsSpecial(prev_token)) {
    auto it = im.decoded_at_start.find(token);
    if (it != im.decoded_at_start.end()) return it->second;
  }
  return im.decoded[token];
}

std::string HfTokenizer::DecodeRuns(const std::vector<int>& ids) const {
  const Impl& im = *impl_;
  std::string out;
  std::vector<std::string> run;
  bool run_at_start = true;
  auto flush = [&] {
    if (!run.empty()) out += im.RunDecode(std::move(run), run_at_start);
    run.clear();
  };
  for (int id : ids) {
    if (id < 0 || id >= im.vocab_size) continue;
    if (const AddedToken* a = im.Added(id); a != nullptr) {
      flush();
      if (!a->special) out += a->content;
      run_at_start = a->special;
      continue;
    }
    const std::string* token = im.model->IdToToken(id);
    if (token == nullptr) continue;
    run.push_back(*token);
  }
  flush();
  return out;
}

int HfTokenizer::vocab_size() const { return impl_->vocab_size; }

int HfTokenizer::SpecialTokenId(std::string_view content) const {
  auto it = impl_->added_by_content.find(absl::string_view(content.data(), content.size()));
  return it == impl_->added_by_content.end() ? -1 : it->second;
}

std::string HfTokenizer::TokenString(int id) const {
  if (const AddedToken* a = impl_->Added(id); a != nullptr) return a->content;
  const std::string* t = impl_->model->IdToToken(id);
  return t == nullptr ? "" : *t;
}

bool HfTokenizer::IsSpecial(int id) const { return impl_->IsSpecial(id); }

}  // namespace dapq::tokenizer
