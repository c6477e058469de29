// File: tokenizer/internal/normalizers.cc
// The normalizer implementations and their factory.
#include "tokenizer/internal/normalizers.h"

#include <unicode/bytestream.h>
#include <unicode/locid.h>
#include <unicode/normalizer2.h>
#include <unicode/stringpiece.h>
#include <unicode/unistr.h>

#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "tokenizer/internal/regex.h"
#include "tokenizer/internal/utf8.h"

namespace dapq::tokenizer::internal {
namespace {

// Applies `transform` to each maximal well-formed UTF-8 run of *text that holds a non-ASCII
// character or when `ascii_too`; invalid bytes are copied unchanged.
template <typename F>
void TransformValidRuns(std::string* text, bool ascii_too, F transform) {
  bool needs = ascii_too;
  for (char c : *text) {
    if (static_cast<unsigned char>(c) >= 0x80) {
      needs = true;
      break;
    }
  }
  if (!needs) return;
  std::string out;
  out.reserve(text->size());
  const std::string_view s = *text;
  size_t run = 0;
  size_t i = 0;
  uint32_t cp;
  while (i < s.size()) {
    const int n = DecodeUtf8(s, i, &cp);
    if (n > 0) {
      i += n;
      continue;
    }
    if (i > run) transform(s.substr(run, i - run), &out);
    out.push_back(s[i]);
    ++i;
    run = i;
  }
  if (s.size() > run) transform(s.substr(run), &out);
  *text = std::move(out);
}

class UnicodeNormalizer final : public Normalizer {
 public:
  explicit UnicodeNormalizer(const icu::Normalizer2* n) : n_(n) {}
  void Normalize(std::string* text) const override {
    TransformValidRuns(text, /*ascii_too=*/false, [this](std::string_view run, std::string* out) {
      UErrorCode status = U_ZERO_ERROR;
      const icu::StringPiece piece(run.data(), static_cast<int32_t>(run.size()));
      if (n_->isNormalizedUTF8(piece, status) && U_SUCCESS(status)) {
        out->append(run);
        return;
      }
      status = U_ZERO_ERROR;
      std::string normalized;
      icu::StringByteSink<std::string> sink(&normalized);
      n_->normalizeUTF8(0, piece, sink, nullptr, status);
      out->append(U_SUCCESS(status) ? normalized : std::string(run));
    });
  }

 private:
  const icu::Normalizer2* n_;  // owned by ICU
};

class PrependNormalizer final : public Normalizer {
 public:
  explicit PrependNormalizer(std::string prepend) : prepend_(std::move(prepend)) {}
  void Normalize(std::string* text) const override {
    if (!text->empty()) text->insert(0, prepend_);
  }

 private:
  std::string prepend_;
};

class ReplaceNormalizer final : public Normalizer {
 public:
  ReplaceNormalizer(std::string literal, std::unique_ptr<Regex> regex, std::string content)
      : literal_(std::move(literal)), regex_(std::move(regex)), content_(std::move(content)) {}
  void Normalize(std::string* text) const override {
    if (regex_ != nullptr) {
      *text = regex_->ReplaceAll(*text, content_);
      return;
    }
    if (literal_.empty() || text->find(literal_) == std::string::npos) return;
    std::string out;
    out.reserve(text->size() + text->size() / 4);
    size_t prev = 0;
    for (size_t pos; (pos = text->find(literal_, prev)) != std::string::npos;) {
      out.append(*text, prev, pos - prev);
      out.append(content_);
      prev = pos + literal_.size();
    }
    out.append(*text, prev, std::string::npos);
    *text = std::move(out);
  }

 private:
  std::string literal_;
  std::unique_ptr<Regex> regex_;  // null for a String pattern
  std::string content_;
};

class LowercaseNormalizer final : public Normalizer {
 public:
  void Normalize(std::string* text) const override {
    TransformValidRuns(text, /*ascii_too=*/true, [](std::string_view run, std::string* out) {
      icu::UnicodeString u = icu::UnicodeString::fromUTF8(
          icu::StringPiece(run.data(), static_cast<int32_t>(run.size())));
      u.toLower(icu::Locale::getRoot());
      u.toUTF8String(*out);
    });
  }
};

class StripNormalizer final : public Normalizer {
 public:
  StripNormalizer(bool left, bool right) : left_(left), right_(right) {}
  void Normalize(std::string* text) const override {
    std::string_view s = *text;
    if (left_) s = TrimLeft(s);
    if (right_) s = TrimRight(s);
    *text = std::string(s);
  }

 private:
  bool left_;
  bool right_;
};

class SequenceNormalizer final : public Normalizer {
 public:
  explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> steps)
      : steps_(std::move(steps)) {}
  void Normalize(std::string* text) const override {
    for (const auto& s : steps_) s->Normalize(text);
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> steps_;
};

absl::StatusOr<const icu::Normalizer2*> IcuInstance(const std::string& type,
                                                    const SpecContext& ctx) {
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* n = nullptr;
  if (type == "NFC") n = icu::Normalizer2::getNFCInstance(status);
  if (type == "NFD") n = icu::Normalizer2::getNFDInstance(status);
  if (type == "NFKC") n = icu::Normalizer2::getNFKCInstance(status);
  if (type == "NFKD") n = icu::Normalizer2::getNFKDInstance(status);
  if (n == nullptr || U_FAILURE(status)) {
    return ctx.Invalid(absl::StrCat("ICU has no ", type, " normalizer: ", u_errorName(status)));
  }
  return n;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Normalizer>> MakeNormalizer(const Json& spec,
                                                           const SpecContext& ctx) {
  DAPQ_ASSIGN_OR_RETURN(const std::string type, GetType(spec, ctx));
  if (type == "NFC" || type == "NFD" || type == "NFKC" || type == "NFKD") {
    DAPQ_ASSIGN_OR_RETURN(const icu::Normalizer2* n, IcuInstance(type, ctx));
    return std::make_unique<UnicodeNormalizer>(n);
  }
  if (type == "Prepend") {
    DAPQ_ASSIGN_OR_RETURN(std::string prepend, GetString(spec, "prepend", ctx));
    return std::make_unique<PrependNormalizer>(std::move(prepend));
  }
  if (type == "Replace") {
    DAPQ_ASSIGN_OR_RETURN(const PatternSpec pattern, GetPattern(spec, "pattern", ctx));
    DAPQ_ASSIGN_OR_RETURN(std::string content, GetString(spec, "content", ctx));
    auto regex = Regex::CompileIfRegex(pattern);
    if (!regex.ok()) return ctx.Invalid(std::string(regex.status().message()));
    return std::make_unique<ReplaceNormalizer>(pattern.is_regex ? "" : pattern.text,
                                               *std::move(regex), std::move(content));
  }
  if (type == "Lowercase") return std::make_unique<LowercaseNormalizer>();
  if (type == "Strip") {
    DAPQ_ASSIGN_OR_RETURN(const bool left, GetBool(spec, "strip_left", true, ctx));
    DAPQ_ASSIGN_OR_RETURN(const bool right, GetBool(spec, "strip_right", true, ctx));
    return std::make_unique<StripNormalizer>(left, right);
  }
  if (type == "Sequence") {
    DAPQ_ASSIGN_OR_RETURN(const Json* list, GetArray(spec, "normalizers", ctx));
    std::vector<std::unique_ptr<Normalizer>> steps;
    for (size_t i = 0; i < list->size(); ++i) {
      DAPQ_ASSIGN_OR_RETURN(
          auto step, MakeNormalizer((*list)[i], ctx.Child(absl::StrCat(".normalizers[", i, "]"))));
      steps.push_back(std::move(step));
    }
    return std::make_unique<SequenceNormalizer>(std::move(steps));
  }
  return ctx.Unsupported("normalizer", type);
}

}  // namespace dapq::tokenizer::internal
