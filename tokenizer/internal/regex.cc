// File: tokenizer/internal/regex.cc
// PCRE2 (8-bit) compile, JIT and match loop.
#include "tokenizer/internal/regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "absl/strings/str_cat.h"
#include "tokenizer/internal/utf8.h"

namespace dapq::tokenizer::internal {
namespace {

// One JIT stack per thread, large enough for long runs of a repeated class.
pcre2_jit_stack* ThreadJitStack() {
  struct Holder {
    pcre2_jit_stack* stack = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, nullptr);
    ~Holder() {
      if (stack != nullptr) pcre2_jit_stack_free(stack);
    }
  };
  thread_local Holder holder;
  return holder.stack;
}

std::string EscapeLiteral(std::string_view literal) {
  std::string out = "\\Q";
  // \Q...\E cannot contain "\E"; split it.
  size_t pos = 0;
  while (true) {
    const size_t e = literal.find("\\E", pos);
    if (e == std::string_view::npos) {
      out.append(literal.substr(pos));
      break;
    }
    out.append(literal.substr(pos, e - pos));
    out.append("\\E\\\\E\\Q");
    pos = e + 2;
  }
  out.append("\\E");
  return out;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Regex>> Regex::CompileIfRegex(const PatternSpec& pattern) {
  if (!pattern.is_regex) return std::unique_ptr<Regex>();
  return Compile(pattern.text);
}

absl::StatusOr<std::unique_ptr<Regex>> Regex::Compile(std::string_view pattern) {
  int error = 0;
  PCRE2_SIZE offset = 0;
  pcre2_code* code =
      pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                    PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &error, &offset, nullptr);
  if (code == nullptr) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error, message, sizeof(message));
    return absl::InvalidArgumentError(absl::StrCat("regex \"", std::string(pattern),
                                                   "\" does not compile at offset ", offset, ": ",
                                                   reinterpret_cast<char*>(message)));
  }
  std::unique_ptr<Regex> re(new Regex);
  re->pattern_ = std::string(pattern);
  re->code_ = code;
  re->jit_ = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
  return re;
}

absl::StatusOr<std::unique_ptr<Regex>> Regex::Literal(std::string_view literal) {
  return Compile(EscapeLiteral(literal));
}

Regex::~Regex() { pcre2_code_free(static_cast<pcre2_code*>(code_)); }

void Regex::ForEachMatch(std::string_view text,
                         const std::function<void(size_t, size_t)>& on_match) const {
  auto* code = static_cast<pcre2_code*>(code_);
  pcre2_match_data* md = pcre2_match_data_create_from_pattern(code, nullptr);
  if (md == nullptr) return;
  pcre2_match_context* mc = nullptr;
  if (jit_) {
    mc = pcre2_match_context_create(nullptr);
    if (mc != nullptr) pcre2_jit_stack_assign(mc, nullptr, ThreadJitStack());
  }
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t start = 0;
  while (start <= text.size()) {
    const int rc = pcre2_match(code, subject, text.size(), start, 0, md, mc);
    if (rc < 0) break;  // PCRE2_ERROR_NOMATCH or a resource limit
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    const size_t b = ov[0];
    const size_t e = ov[1];
    if (e > b) {
      on_match(b, e);
      start = e;
    } else {
      if (b >= text.size()) break;
      start = b + UnitLength(text, b);
    }
  }
  if (mc != nullptr) pcre2_match_context_free(mc);
  pcre2_match_data_free(md);
}

std::string Regex::ReplaceAll(std::string_view text, std::string_view replacement) const {
  std::string out;
  out.reserve(text.size());
  size_t prev = 0;
  ForEachMatch(text, [&](size_t b, size_t e) {
    out.append(text.substr(prev, b - prev));
    out.append(replacement);
    prev = e;
  });
  out.append(text.substr(prev));
  return out;
}

}  // namespace dapq::tokenizer::internal
