// File: tokenizer/internal/post_processors.cc
// The post-processor implementations and their factory.
#include "tokenizer/internal/post_processors.h"

#include <climits>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace dapq::tokenizer::internal {
namespace {

// A template is a list of pieces: fixed ids, or the sequence itself (empty `ids`, is_sequence).
struct TemplatePiece {
  bool is_sequence = false;
  std::vector<int> ids;
};

class TemplatePostProcessor final : public PostProcessor {
 public:
  explicit TemplatePostProcessor(std::vector<TemplatePiece> pieces) : pieces_(std::move(pieces)) {}
  void Apply(std::vector<int>* ids) const override {
    std::vector<int> out;
    out.reserve(ids->size() + 4);
    for (const TemplatePiece& p : pieces_) {
      if (p.is_sequence) {
        out.insert(out.end(), ids->begin(), ids->end());
      } else {
        out.insert(out.end(), p.ids.begin(), p.ids.end());
      }
    }
    *ids = std::move(out);
  }
  std::vector<int> AddedIds() const override {
    std::vector<int> out;
    for (const TemplatePiece& p : pieces_) out.insert(out.end(), p.ids.begin(), p.ids.end());
    return out;
  }

 private:
  std::vector<TemplatePiece> pieces_;
};

class NoOpPostProcessor final : public PostProcessor {
 public:
  void Apply(std::vector<int>* /*ids*/) const override {}
  std::vector<int> AddedIds() const override { return {}; }
};

class SequencePostProcessor final : public PostProcessor {
 public:
  explicit SequencePostProcessor(std::vector<std::unique_ptr<PostProcessor>> steps)
      : steps_(std::move(steps)) {}
  void Apply(std::vector<int>* ids) const override {
    for (const auto& s : steps_) s->Apply(ids);
  }
  std::vector<int> AddedIds() const override {
    std::vector<int> out;
    for (const auto& s : steps_) {
      const std::vector<int> ids = s->AddedIds();
      out.insert(out.end(), ids.begin(), ids.end());
    }
    return out;
  }

 private:
  std::vector<std::unique_ptr<PostProcessor>> steps_;
};

absl::StatusOr<std::vector<TemplatePiece>> ParseTemplate(const Json& spec, const SpecContext& ctx) {
  DAPQ_ASSIGN_OR_RETURN(const Json* single, GetArray(spec, "single", ctx));
  const Json* specials = FindField(spec, "special_tokens");
  std::vector<TemplatePiece> pieces;
  for (size_t i = 0; i < single->size(); ++i) {
    const Json& item = (*single)[i];
    const SpecContext c = ctx.Child(absl::StrCat(".single[", i, "]"));
    if (const Json* seq = FindField(item, "Sequence"); seq != nullptr) {
      DAPQ_ASSIGN_OR_RETURN(const std::string id, GetString(*seq, "id", c));
      if (id != "A") return c.Invalid(absl::StrCat("single template uses sequence \"", id, "\""));
      pieces.push_back({true, {}});
      continue;
    }
    const Json* special = FindField(item, "SpecialToken");
    if (special == nullptr) return c.Invalid("neither a Sequence nor a SpecialToken");
    DAPQ_ASSIGN_OR_RETURN(const std::string name, GetString(*special, "id", c));
    const Json* def = specials == nullptr ? nullptr : FindField(*specials, name);
    if (def == nullptr) {
      return c.Invalid(absl::StrCat("special token \"", name, "\" is not in special_tokens"));
    }
    DAPQ_ASSIGN_OR_RETURN(const Json* ids, GetArray(*def, "ids", c));
    TemplatePiece p;
    for (const Json& id : *ids) {
      if (!id.is_number_integer() || id.get<long long>() < 0 || id.get<long long>() > INT_MAX) {
        return c.Invalid(absl::StrCat("special token \"", name, "\" has a bad id"));
      }
      p.ids.push_back(static_cast<int>(id.get<long long>()));
    }
    pieces.push_back(std::move(p));
  }
  return pieces;
}

// BertProcessing / RobertaProcessing: "cls": [token, id], "sep": [token, id].
absl::StatusOr<int> PairId(const Json& spec, const char* key, const SpecContext& ctx) {
  const Json* v = FindField(spec, key);
  if (v == nullptr || !v->is_array() || v->size() != 2 || !(*v)[1].is_number_integer() ||
      (*v)[1].get<long long>() < 0 || (*v)[1].get<long long>() > INT_MAX) {
    return ctx.Invalid(absl::StrCat("\"", key, "\" is not [token, id]"));
  }
  return static_cast<int>((*v)[1].get<long long>());
}

}  // namespace

absl::StatusOr<std::unique_ptr<PostProcessor>> MakePostProcessor(const Json& spec,
                                                                 const SpecContext& ctx) {
  DAPQ_ASSIGN_OR_RETURN(const std::string type, GetType(spec, ctx));
  if (type == "TemplateProcessing") {
    DAPQ_ASSIGN_OR_RETURN(auto pieces, ParseTemplate(spec, ctx));
    return std::make_unique<TemplatePostProcessor>(std::move(pieces));
  }
  if (type == "BertProcessing" || type == "RobertaProcessing") {
    DAPQ_ASSIGN_OR_RETURN(const int cls, PairId(spec, "cls", ctx));
    DAPQ_ASSIGN_OR_RETURN(const int sep, PairId(spec, "sep", ctx));
    return std::make_unique<TemplatePostProcessor>(
        std::vector<TemplatePiece>{{false, {cls}}, {true, {}}, {false, {sep}}});
  }
  if (type == "ByteLevel") return std::make_unique<NoOpPostProcessor>();
  if (type == "Sequence") {
    DAPQ_ASSIGN_OR_RETURN(const Json* list, GetArray(spec, "processors", ctx));
    std::vector<std::unique_ptr<PostProcessor>> steps;
    for (size_t i = 0; i < list->size(); ++i) {
      DAPQ_ASSIGN_OR_RETURN(
          auto step,
          MakePostProcessor((*list)[i], ctx.Child(absl::StrCat(".processors[", i, "]"))));
      steps.push_back(std::move(step));
    }
    return std::make_unique<SequencePostProcessor>(std::move(steps));
  }
  return ctx.Unsupported("post_processor", type);
}

}  // namespace dapq::tokenizer::internal
