// File: tokenizer/internal/pre_tokenizers.cc
// The pre-tokenizer implementations (regex splitting with Hugging Face's delimiter behaviors) and
// their factory.
#include "tokenizer/internal/pre_tokenizers.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "tokenizer/internal/byte_level.h"
#include "tokenizer/internal/regex.h"

namespace dapq::tokenizer::internal {
namespace {

constexpr char kGpt2Pattern[] =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

enum class Behavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

struct Span {
  size_t begin;
  size_t end;
  bool delimiter;
};

// Splits `text` at the matches of `re` as Hugging Face's NormalizedString::split does: matches
// (or, with `invert`, the text between them) are delimiters handled by `behavior`.
void SplitOne(std::string_view text, const Regex& re, Behavior behavior, bool invert,
              std::vector<std::string>* out) {
  std::vector<Span> spans;
  size_t prev = 0;
  re.ForEachMatch(text, [&](size_t b, size_t e) {
    if (b > prev) spans.push_back({prev, b, invert});
    spans.push_back({b, e, !invert});
    prev = e;
  });
  if (prev < text.size()) spans.push_back({prev, text.size(), invert});

  std::vector<std::pair<size_t, size_t>> pieces;
  switch (behavior) {
    case Behavior::kRemoved:
      for (const Span& s : spans) {
        if (!s.delimiter) pieces.emplace_back(s.begin, s.end);
      }
      break;
    case Behavior::kIsolated:
      for (const Span& s : spans) pieces.emplace_back(s.begin, s.end);
      break;
    case Behavior::kMergedWithPrevious: {
      bool previous_delim = false;
      for (const Span& s : spans) {
        if (s.delimiter && !previous_delim && !pieces.empty()) {
          pieces.back().second = s.end;
        } else {
          pieces.emplace_back(s.begin, s.end);
        }
        previous_delim = s.delimiter;
      }
      break;
    }
    case Behavior::kMergedWithNext: {
      bool previous_delim = false;
      for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
        if (it->delimiter && !previous_delim && !pieces.empty()) {
          pieces.back().first = it->begin;
        } else {
          pieces.emplace_back(it->begin, it->end);
        }
        previous_delim = it->delimiter;
      }
      std::reverse(pieces.begin(), pieces.end());
      break;
    }
    case Behavior::kContiguous: {
      bool previous_delim = false;
      for (const Span& s : spans) {
        if (s.delimiter && previous_delim && !pieces.empty()) {
          pieces.back().second = s.end;
        } else {
          pieces.emplace_back(s.begin, s.end);
        }
        previous_delim = s.delimiter;
      }
      break;
    }
  }
  for (const auto& [b, e] : pieces) {
    if (e > b) out->emplace_back(text.substr(b, e - b));
  }
}

class SplitPreTokenizer final : public PreTokenizer {
 public:
  SplitPreTokenizer(std::unique_ptr<Regex> re, Behavior behavior, bool invert)
      : re_(std::move(re)), behavior_(behavior), invert_(invert) {}
  void PreTokenize(std::vector<std::string>* pieces, bool /*first_section*/) const override {
    std::vector<std::string> out;
    out.reserve(pieces->size() * 2);
    for (const std::string& p : *pieces) SplitOne(p, *re_, behavior_, invert_, &out);
    *pieces = std::move(out);
  }

 private:
  std::unique_ptr<Regex> re_;
  Behavior behavior_;
  bool invert_;
};

class ByteLevelPreTokenizer final : public PreTokenizer {
 public:
  ByteLevelPreTokenizer(bool add_prefix_space, std::unique_ptr<Regex> re)
      : add_prefix_space_(add_prefix_space), re_(std::move(re)) {}
  void PreTokenize(std::vector<std::string>* pieces, bool /*first_section*/) const override {
    std::vector<std::string> split;
    const std::vector<std::string>* in = pieces;
    if (add_prefix_space_) {
      for (std::string& p : *pieces) {
        if (p.empty() || p[0] != ' ') p.insert(0, 1, ' ');
      }
    }
    if (re_ != nullptr) {
      for (const std::string& p : *pieces) {
        SplitOne(p, *re_, Behavior::kIsolated, /*invert=*/false, &split);
      }
      in = &split;
    }
    std::vector<std::string> out(in->size());
    for (size_t i = 0; i < in->size(); ++i) {
      out[i].reserve((*in)[i].size() + 4);
      AppendByteLevel((*in)[i], &out[i]);
    }
    *pieces = std::move(out);
  }

 private:
  bool add_prefix_space_;
  std::unique_ptr<Regex> re_;  // null when use_regex is false
};

enum class PrependScheme { kAlways, kFirst, kNever };

class MetaspacePreTokenizer final : public PreTokenizer {
 public:
  MetaspacePreTokenizer(std::string replacement, PrependScheme scheme, std::unique_ptr<Regex> split)
      : replacement_(std::move(replacement)), scheme_(scheme), split_(std::move(split)) {}
  void PreTokenize(std::vector<std::string>* pieces, bool first_section) const override {
    std::vector<std::string> out;
    for (size_t i = 0; i < pieces->size(); ++i) {
      std::string p;
      for (char c : (*pieces)[i]) {
        if (c == ' ') {
          p.append(replacement_);
        } else {
          p.push_back(c);
        }
      }
      const bool prepend = scheme_ == PrependScheme::kAlways ||
                           (scheme_ == PrependScheme::kFirst && first_section && i == 0);
      if (prepend && p.compare(0, replacement_.size(), replacement_) != 0) {
        p.insert(0, replacement_);
      }
      if (split_ != nullptr) {
        SplitOne(p, *split_, Behavior::kMergedWithNext, /*invert=*/false, &out);
      } else if (!p.empty()) {
        out.push_back(std::move(p));
      }
    }
    *pieces = std::move(out);
  }

 private:
  std::string replacement_;
  PrependScheme scheme_;
  std::unique_ptr<Regex> split_;  // null when split is false
};

class SequencePreTokenizer final : public PreTokenizer {
 public:
  explicit SequencePreTokenizer(std::vector<std::unique_ptr<PreTokenizer>> steps)
      : steps_(std::move(steps)) {}
  void PreTokenize(std::vector<std::string>* pieces, bool first_section) const override {
    for (const auto& s : steps_) s->PreTokenize(pieces, first_section);
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> steps_;
};

absl::StatusOr<std::unique_ptr<Regex>> CompileOrInvalid(std::string_view pattern, bool literal,
                                                        const SpecContext& ctx) {
  auto re = literal ? Regex::Literal(pattern) : Regex::Compile(pattern);
  if (!re.ok()) return ctx.Invalid(std::string(re.status().message()));
  return re;
}

absl::StatusOr<Behavior> ParseBehavior(const Json& spec, const SpecContext& ctx,
                                       Behavior default_value) {
  DAPQ_ASSIGN_OR_RETURN(const std::optional<std::string> b,
                        GetOptionalString(spec, "behavior", ctx));
  if (!b.has_value()) return default_value;
  if (*b == "Removed") return Behavior::kRemoved;
  if (*b == "Isolated") return Behavior::kIsolated;
  if (*b == "MergedWithPrevious") return Behavior::kMergedWithPrevious;
  if (*b == "MergedWithNext") return Behavior::kMergedWithNext;
  if (*b == "Contiguous") return Behavior::kContiguous;
  return ctx.Invalid(absl::StrCat("unknown split behavior \"", *b, "\""));
}

}  // namespace

absl::StatusOr<std::unique_ptr<PreTokenizer>> MakePreTokenizer(const Json& spec,
                                                               const SpecContext& ctx) {
  DAPQ_ASSIGN_OR_RETURN(const std::string type, GetType(spec, ctx));
  if (type == "Split") {
    DAPQ_ASSIGN_OR_RETURN(const PatternSpec pattern, GetPattern(spec, "pattern", ctx));
    DAPQ_ASSIGN_OR_RETURN(const Behavior behavior, ParseBehavior(spec, ctx, Behavior::kIsolated));
    DAPQ_ASSIGN_OR_RETURN(const bool invert, GetBool(spec, "invert", false, ctx));
    DAPQ_ASSIGN_OR_RETURN(auto re, CompileOrInvalid(pattern.text, !pattern.is_regex, ctx));
    return std::make_unique<SplitPreTokenizer>(std::move(re), behavior, invert);
  }
  if (type == "ByteLevel") {
    DAPQ_ASSIGN_OR_RETURN(const bool add_prefix_space,
                          GetBool(spec, "add_prefix_space", true, ctx));
    DAPQ_ASSIGN_OR_RETURN(const bool use_regex, GetBool(spec, "use_regex", true, ctx));
    std::unique_ptr<Regex> re;
    if (use_regex) {
      DAPQ_ASSIGN_OR_RETURN(re, CompileOrInvalid(kGpt2Pattern, false, ctx));
    }
    return std::make_unique<ByteLevelPreTokenizer>(add_prefix_space, std::move(re));
  }
  if (type == "Metaspace") {
    DAPQ_ASSIGN_OR_RETURN(std::string replacement, GetString(spec, "replacement", ctx));
    DAPQ_ASSIGN_OR_RETURN(const std::optional<std::string> scheme_name,
                          GetOptionalString(spec, "prepend_scheme", ctx));
    PrependScheme scheme = PrependScheme::kAlways;
    if (scheme_name.has_value()) {
      if (*scheme_name == "first") {
        scheme = PrependScheme::kFirst;
      } else if (*scheme_name == "never") {
        scheme = PrependScheme::kNever;
      } else if (*scheme_name != "always") {
        return ctx.Invalid(absl::StrCat("unknown prepend_scheme \"", *scheme_name, "\""));
      }
    } else {
      DAPQ_ASSIGN_OR_RETURN(const bool add_prefix_space,
                            GetBool(spec, "add_prefix_space", true, ctx));
      if (!add_prefix_space) scheme = PrependScheme::kNever;
    }
    DAPQ_ASSIGN_OR_RETURN(const bool split, GetBool(spec, "split", true, ctx));
    std::unique_ptr<Regex> split_re;
    if (split) {
      DAPQ_ASSIGN_OR_RETURN(split_re, CompileOrInvalid(replacement, true, ctx));
    }
    return std::make_unique<MetaspacePreTokenizer>(std::move(replacement), scheme,
                                                   std::move(split_re));
  }
  if (type == "Whitespace") {
    DAPQ_ASSIGN_OR_RETURN(auto re, CompileOrInvalid(R"(\w+|[^\w\s]+)", false, ctx));
    return std::make_unique<SplitPreTokenizer>(std::move(re), Behavior::kRemoved, true);
  }
  if (type == "WhitespaceSplit") {
    DAPQ_ASSIGN_OR_RETURN(auto re, CompileOrInvalid(R"(\s+)", false, ctx));
    return std::make_unique<SplitPreTokenizer>(std::move(re), Behavior::kRemoved, false);
  }
  if (type == "Digits") {
    DAPQ_ASSIGN_OR_RETURN(const bool individual, GetBool(spec, "individual_digits", false, ctx));
    DAPQ_ASSIGN_OR_RETURN(auto re, CompileOrInvalid(individual ? "[0-9]" : "[0-9]+", false, ctx));
    return std::make_unique<SplitPreTokenizer>(std::move(re), Behavior::kIsolated, false);
  }
  if (type == "Punctuation") {
    DAPQ_ASSIGN_OR_RETURN(const Behavior behavior, ParseBehavior(spec, ctx, Behavior::kIsolated));
    DAPQ_ASSIGN_OR_RETURN(auto re, CompileOrInvalid(R"([\p{P}!-/:-@\[-`{-~])", false, ctx));
    return std::make_unique<SplitPreTokenizer>(std::move(re), behavior, false);
  }
  if (type == "Sequence") {
    DAPQ_ASSIGN_OR_RETURN(const Json* list, GetArray(spec, "pretokenizers", ctx));
    std::vector<std::unique_ptr<PreTokenizer>> steps;
    for (size_t i = 0; i < list->size(); ++i) {
      DAPQ_ASSIGN_OR_RETURN(
          auto step,
          MakePreTokenizer((*list)[i], ctx.Child(absl::StrCat(".pretokenizers[", i, "]"))));
      steps.push_back(std::move(step));
    }
    return std::make_unique<SequencePreTokenizer>(std::move(steps));
  }
  return ctx.Unsupported("pre_tokenizer", type);
}

}  // namespace dapq::tokenizer::internal
