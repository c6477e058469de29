// File: tokenizer/internal/decoders.cc
// The decoder implementations and their factory.
#include "tokenizer/internal/decoders.h"

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "tokenizer/internal/byte_level.h"
#include "tokenizer/internal/regex.h"
#include "tokenizer/internal/utf8.h"

namespace dapq::tokenizer::internal {
namespace {

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

class ByteLevelDecoder final : public Decoder {
 public:
  void Decode(std::vector<std::string>* tokens, bool, bool*) const override {
    for (std::string& t : *tokens) t = ByteLevelToBytes(t);
  }
};

class ReplaceDecoder final : public Decoder {
 public:
  ReplaceDecoder(std::string literal, std::unique_ptr<Regex> regex, std::string content)
      : literal_(std::move(literal)), regex_(std::move(regex)), content_(std::move(content)) {}
  void Decode(std::vector<std::string>* tokens, bool, bool*) const override {
    for (std::string& t : *tokens) {
      if (regex_ != nullptr) {
        t = regex_->ReplaceAll(t, content_);
        continue;
      }
      if (literal_.empty()) continue;
      std::string out;
      size_t prev = 0;
      for (size_t pos; (pos = t.find(literal_, prev)) != std::string::npos;) {
        out.append(t, prev, pos - prev);
        out.append(content_);
        prev = pos + literal_.size();
      }
      out.append(t, prev, std::string::npos);
      t = std::move(out);
    }
  }

 private:
  std::string literal_;
  std::unique_ptr<Regex> regex_;
  std::string content_;
};

class ByteFallbackDecoder final : public Decoder {
 public:
  void Decode(std::vector<std::string>* tokens, bool, bool*) const override {
    for (std::string& t : *tokens) {
      if (t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>') {
        const int hi = HexDigit(t[3]);
        const int lo = HexDigit(t[4]);
        if (hi >= 0 && lo >= 0) t = std::string(1, static_cast<char>(hi * 16 + lo));
      }
    }
  }
};

class FuseDecoder final : public Decoder {
 public:
  void Decode(std::vector<std::string>* tokens, bool, bool* fused) const override {
    std::string all;
    for (const std::string& t : *tokens) all += t;
    tokens->assign(1, std::move(all));
    *fused = true;
  }
};

// Removes up to `max` leading (or trailing) occurrences of the character `content` from *s.
void StripChars(std::string* s, const std::string& content, int max, bool leading) {
  for (int i = 0; i < max && !s->empty() && s->size() >= content.size(); ++i) {
    if (leading && s->compare(0, content.size(), content) == 0) {
      s->erase(0, content.size());
    } else if (!leading && s->compare(s->size() - content.size(), content.size(), content) == 0) {
      s->erase(s->size() - content.size());
    } else {
      break;
    }
  }
}

class StripDecoder final : public Decoder {
 public:
  StripDecoder(std::string content, int start, int stop)
      : content_(std::move(content)), start_(start), stop_(stop) {}
  void Decode(std::vector<std::string>* tokens, bool at_start, bool* fused) const override {
    if (content_.empty()) return;
    if (*fused) {
      // One joined text: its start is the first token's start when the run starts the text.
      if (at_start && !tokens->empty()) StripChars(&(*tokens)[0], content_, start_, true);
      return;
    }
    for (std::string& t : *tokens) {
      StripChars(&t, content_, start_, true);
      StripChars(&t, content_, stop_, false);
    }
  }

 private:
  std::string content_;
  int start_;
  int stop_;
};

class MetaspaceDecoder final : public Decoder {
 public:
  MetaspaceDecoder(std::string replacement, bool strip_prefix)
      : replacement_(std::move(replacement)), strip_prefix_(strip_prefix) {}
  void Decode(std::vector<std::string>* tokens, bool at_start, bool*) const override {
    for (size_t i = 0; i < tokens->size(); ++i) {
      std::string& t = (*tokens)[i];
      std::string out;
      size_t prev = 0;
      for (size_t pos;
           !replacement_.empty() && (pos = t.find(replacement_, prev)) != std::string::npos;) {
        out.append(t, prev, pos - prev);
        out.push_back(' ');
        prev = pos + replacement_.size();
      }
      out.append(t, prev, std::string::npos);
      if (strip_prefix_ && at_start && i == 0 && !out.empty() && out[0] == ' ') out.erase(0, 1);
      t = std::move(out);
    }
  }

 private:
  std::string replacement_;
  bool strip_prefix_;
};

class SequenceDecoder final : public Decoder {
 public:
  explicit SequenceDecoder(std::vector<std::unique_ptr<Decoder>> steps)
      : steps_(std::move(steps)) {}
  void Decode(std::vector<std::string>* tokens, bool at_start, bool* fused) const override {
    for (const auto& s : steps_) s->Decode(tokens, at_start, fused);
  }

 private:
  std::vector<std::unique_ptr<Decoder>> steps_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Decoder>> MakeDecoder(const Json& spec, const SpecContext& ctx,
                                                     bool* fuses) {
  DAPQ_ASSIGN_OR_RETURN(const std::string type, GetType(spec, ctx));
  if (type == "ByteLevel") return std::make_unique<ByteLevelDecoder>();
  if (type == "ByteFallback") return std::make_unique<ByteFallbackDecoder>();
  if (type == "Fuse") {
    *fuses = true;
    return std::make_unique<FuseDecoder>();
  }
  if (type == "Replace") {
    DAPQ_ASSIGN_OR_RETURN(const PatternSpec pattern, GetPattern(spec, "pattern", ctx));
    DAPQ_ASSIGN_OR_RETURN(std::string content, GetString(spec, "content", ctx));
    auto regex = Regex::CompileIfRegex(pattern);
    if (!regex.ok()) return ctx.Invalid(std::string(regex.status().message()));
    return std::make_unique<ReplaceDecoder>(pattern.is_regex ? "" : pattern.text, *std::move(regex),
                                            std::move(content));
  }
  if (type == "Strip") {
    DAPQ_ASSIGN_OR_RETURN(std::string content, GetString(spec, "content", ctx));
    DAPQ_ASSIGN_OR_RETURN(const long long start, GetInt(spec, "start", 0, ctx));
    DAPQ_ASSIGN_OR_RETURN(const long long stop, GetInt(spec, "stop", 0, ctx));
    if (start < 0 || stop < 0 || start > 1024 || stop > 1024) {
      return ctx.Invalid("Strip start/stop out of range");
    }
    if (*fuses && stop > 0) {
      return absl::UnimplementedError(
          absl::StrCat(ctx.file, ": ", ctx.component,
                       ": Strip decoder with stop > 0 after Fuse cannot decode token by token"));
    }
    return std::make_unique<StripDecoder>(std::move(content), static_cast<int>(start),
                                          static_cast<int>(stop));
  }
  if (type == "Metaspace") {
    DAPQ_ASSIGN_OR_RETURN(std::string replacement, GetString(spec, "replacement", ctx));
    DAPQ_ASSIGN_OR_RETURN(const std::optional<std::string> scheme,
                          GetOptionalString(spec, "prepend_scheme", ctx));
    bool strip_prefix = true;
    if (scheme.has_value()) {
      strip_prefix = *scheme != "never";
    } else {
      DAPQ_ASSIGN_OR_RETURN(strip_prefix, GetBool(spec, "add_prefix_space", true, ctx));
    }
    return std::make_unique<MetaspaceDecoder>(std::move(replacement), strip_prefix);
  }
  if (type == "Sequence") {
    DAPQ_ASSIGN_OR_RETURN(const Json* list, GetArray(spec, "decoders", ctx));
    std::vector<std::unique_ptr<Decoder>> steps;
    for (size_t i = 0; i < list->size(); ++i) {
      DAPQ_ASSIGN_OR_RETURN(
          auto step, MakeDecoder((*list)[i], ctx.Child(absl::StrCat(".decoders[", i, "]")), fuses));
      steps.push_back(std::move(step));
    }
    return std::make_unique<SequenceDecoder>(std::move(steps));
  }
  return ctx.Unsupported("decoder", type);
}

}  // namespace dapq::tokenizer::internal
