// File: common/npy.cc
// .npy parsing (magic, version, header dict, data) and writing (format 1.0).
#include "common/npy.h"

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/mapped_file.h"

namespace dapq {
namespace {

static_assert(std::endian::native == std::endian::little, ".npy I/O assumes a little-endian host");

constexpr char kMagic[] = "\x93NUMPY";
constexpr size_t kMagicLen = 6;
constexpr size_t kAlign = 64;

absl::Status Bad(absl::string_view name, absl::string_view problem) {
  return absl::InvalidArgumentError(absl::StrCat("npy ", name, ": ", problem));
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  if (shape.size() == 1) return absl::StrCat("(", shape[0], ",)");
  return absl::StrCat("(", absl::StrJoin(shape, ", "), ")");
}

// The header is a Python dict literal such as
//   {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
// HeaderParser reads exactly that grammar: string keys; string, True/False or tuple-of-int values.
struct HeaderValue {
  enum class Kind { kString, kBool, kTuple } kind = Kind::kString;
  std::string str;
  bool boolean = false;
  std::vector<int64_t> tuple;
};

class HeaderParser {
 public:
  explicit HeaderParser(absl::string_view text) : s_(text) {}

  // Fills `out` with the three keys; returns a description of the problem on failure.
  std::optional<std::string> Parse(std::string& descr, bool& fortran, std::vector<int64_t>& shape) {
    bool has_descr = false, has_fortran = false, has_shape = false;
    if (!Eat('{')) return Error("expected '{'");
    while (true) {
      SkipSpace();
      if (Eat('}')) break;
      std::string key;
      if (!ParseString(key)) return Error("expected a string key");
      if (key != "descr" && key != "fortran_order" && key != "shape") {
        return Error(absl::StrCat("unexpected key '", key, "'"));
      }
      if (!Eat(':')) return Error("expected ':'");
      HeaderValue v;
      if (auto e = ParseValue(v)) return e;
      if (key == "descr") {
        if (v.kind != HeaderValue::Kind::kString) return Error("'descr' is not a string");
        descr = v.str;
        has_descr = true;
      } else if (key == "fortran_order") {
        if (v.kind != HeaderValue::Kind::kBool) return Error("'fortran_order' is not True/False");
        fortran = v.boolean;
        has_fortran = true;
      } else {
        if (v.kind != HeaderValue::Kind::kTuple) return Error("'shape' is not a tuple");
        shape = v.tuple;
        has_shape = true;
      }
      SkipSpace();
      if (Eat(',')) continue;
      if (Eat('}')) break;
      return Error("expected ',' or '}'");
    }
    SkipSpace();
    if (pos_ != s_.size()) return Error("trailing characters after the dict");
    if (!has_descr || !has_fortran || !has_shape) {
      return std::string("header dict needs the keys 'descr', 'fortran_order' and 'shape'");
    }
    return std::nullopt;
  }

 private:
  std::string Error(absl::string_view what) const {
    return absl::StrCat("malformed header: ", what, " at offset ", pos_, " in \"", s_, "\"");
  }
  void SkipSpace() {
    while (pos_ < s_.size() &&
           (s_[pos_] == ' ' || s_[pos_] == '\n' || s_[pos_] == '\t' || s_[pos_] == '\r')) {
      ++pos_;
    }
  }
  bool Eat(char c) {
    SkipSpace();
    if (pos_ < s_.size() && s_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  bool ParseString(std::string& out) {
    SkipSpace();
    if (pos_ >= s_.size() || (s_[pos_] != '\'' && s_[pos_] != '"')) return false;
    const char quote = s_[pos_++];
    const size_t end = s_.find(quote, pos_);
    if (end == absl::string_view::npos) return false;
    out = std::string(s_.substr(pos_, end - pos_));
    pos_ = end + 1;
    return true;
  }
  bool ParseInt(int64_t& out) {
    SkipSpace();
    const size_t begin = pos_;
    int64_t v = 0;
    while (pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9') {
      const int digit = s_[pos_++] - '0';
      if (v > (std::numeric_limits<int64_t>::max() - digit) / 10) return false;
      v = v * 10 + digit;
    }
    if (pos_ == begin) return false;
    if (pos_ < s_.size() && s_[pos_] == 'L') ++pos_;  // Python 2 long suffix
    out = v;
    return true;
  }
  std::optional<std::string> ParseValue(HeaderValue& v) {
    SkipSpace();
    if (pos_ >= s_.size()) return Error("missing value");
    const char c = s_[pos_];
    if (c == '\'' || c == '"') {
      v.kind = HeaderValue::Kind::kString;
      if (!ParseString(v.str)) return Error("unterminated string");
      return std::nullopt;
    }
    if (s_.substr(pos_, 4) == "True" || s_.substr(pos_, 5) == "False") {
      v.kind = HeaderValue::Kind::kBool;
      v.boolean = c == 'T';
      pos_ += v.boolean ? 4 : 5;
      return std::nullopt;
    }
    if (c == '(') {
      ++pos_;
      v.kind = HeaderValue::Kind::kTuple;
      while (true) {
        if (Eat(')')) return std::nullopt;
        int64_t dim;
        if (!ParseInt(dim)) return Error("shape entries must be non-negative integers");
        v.tuple.push_back(dim);
        if (Eat(',')) continue;
        if (Eat(')')) return std::nullopt;
        return Error("expected ',' or ')' in the shape");
      }
    }
    if (c == '[') return Error("structured dtypes are not supported");
    return Error("unsupported value");
  }

  absl::string_view s_;
  size_t pos_ = 0;
};

struct DTypeInfo {
  NpyDType dtype;
  size_t item_size;
};

std::optional<DTypeInfo> LookUpDType(absl::string_view descr) {
  if (descr == "<f4") return DTypeInfo{NpyDType::kF32, 4};
  if (descr == "<f8") return DTypeInfo{NpyDType::kF64, 8};
  if (descr == "<i8") return DTypeInfo{NpyDType::kI64, 8};
  if (descr == "<i4") return DTypeInfo{NpyDType::kI32, 4};
  return std::nullopt;
}

template <typename From, typename To>
void Convert(const char* src, int64_t count, std::vector<To>& out) {
  out.resize(count);
  for (int64_t i = 0; i < count; ++i) {
    From v;
    std::memcpy(&v, src + i * sizeof(From), sizeof(From));
    out[i] = static_cast<To>(v);
  }
}

absl::Status WriteNpy(const std::string& path, const std::vector<int64_t>& shape,
                      absl::string_view descr, const void* data, size_t count, size_t item_size) {
  int64_t expected = 1;
  for (int64_t d : shape) {
    if (d < 0) return Bad(path, absl::StrCat("negative dimension in shape ", ShapeString(shape)));
    expected *= d;
  }
  if (static_cast<size_t>(expected) != count) {
    return Bad(path, absl::StrCat("shape ", ShapeString(shape), " holds ", expected,
                                  " elements but ", count, " were given"));
  }
  std::string header = absl::StrCat(
      "{'descr': '", descr, "', 'fortran_order': False, 'shape': ", ShapeString(shape), ", }");
  const size_t unpadded = kMagicLen + 4 + header.size() + 1;  // + '\n'
  header.append((kAlign - unpadded % kAlign) % kAlign, ' ');
  header.push_back('\n');
  if (header.size() > 0xFFFF) return Bad(path, "header too long for format 1.0");
  std::string prefix(kMagic, kMagicLen);
  prefix.push_back('\x01');
  prefix.push_back('\x00');
  prefix.push_back(static_cast<char>(header.size() & 0xFF));
  prefix.push_back(static_cast<char>(header.size() >> 8));

  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) {
    const int err = errno;
    const std::string msg = absl::StrCat("cannot write ", path, ": ", std::strerror(err));
    return err == ENOENT ? absl::NotFoundError(msg) : absl::InternalError(msg);
  }
  out.write(prefix.data(), static_cast<std::streamsize>(prefix.size()));
  out.write(header.data(), static_cast<std::streamsize>(header.size()));
  out.write(static_cast<const char*>(data), static_cast<std::streamsize>(count * item_size));
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

}  // namespace

absl::string_view NpyDTypeName(NpyDType dtype) {
  switch (dtype) {
    case NpyDType::kF32:
      return "<f4";
    case NpyDType::kF64:
      return "<f8";
    case NpyDType::kI64:
      return "<i8";
    case NpyDType::kI32:
      return "<i4";
  }
  return "?";
}

int64_t NpyArray::size() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

absl::StatusOr<NpyArray> ParseNpy(absl::string_view bytes, absl::string_view name) {
  const size_t magic_seen = std::min(bytes.size(), kMagicLen);
  if (bytes.substr(0, magic_seen) != absl::string_view(kMagic, magic_seen) || bytes.empty()) {
    return Bad(name, "bad magic (not a .npy file)");
  }
  if (bytes.size() < kMagicLen + 2) return Bad(name, "truncated header (no version)");
  const int major = static_cast<uint8_t>(bytes[6]), minor = static_cast<uint8_t>(bytes[7]);
  if ((major != 1 && major != 2) || minor != 0) {
    return Bad(name, absl::StrCat("unsupported format version ", major, ".", minor,
                                  " (1.0 and 2.0 are read)"));
  }
  const size_t len_size = major == 1 ? 2 : 4;
  const size_t header_begin = kMagicLen + 2 + len_size;
  if (bytes.size() < header_begin) return Bad(name, "truncated header (no header length)");
  size_t header_len = 0;
  for (size_t i = 0; i < len_size; ++i) {
    header_len |= static_cast<size_t>(static_cast<uint8_t>(bytes[kMagicLen + 2 + i])) << (8 * i);
  }
  if (bytes.size() - header_begin < header_len) {
    return Bad(name, absl::StrCat("truncated header: ", header_len, " bytes announced, ",
                                  bytes.size() - header_begin, " present"));
  }
  std::string descr;
  bool fortran = false;
  NpyArray array;
  HeaderParser parser(bytes.substr(header_begin, header_len));
  if (auto error = parser.Parse(descr, fortran, array.shape)) return Bad(name, *error);
  const std::optional<DTypeInfo> info = LookUpDType(descr);
  if (!info) {
    return Bad(name, absl::StrCat("unsupported dtype '", descr,
                                  "' (supported: '<f4', '<f8', '<i8', '<i4')"));
  }
  if (fortran) return Bad(name, "fortran_order True is not supported (write C-order arrays)");
  array.dtype = info->dtype;
  int64_t count = 1;
  for (int64_t d : array.shape) {
    if (d != 0 && count > std::numeric_limits<int64_t>::max() / 16 / d) {
      return Bad(name, absl::StrCat("shape ", ShapeString(array.shape), " is too large"));
    }
    count *= d;
  }
  const size_t data_bytes = bytes.size() - header_begin - header_len;
  const size_t needed = static_cast<size_t>(count) * info->item_size;
  if (data_bytes < needed) {
    return Bad(name, absl::StrCat("truncated data: shape ", ShapeString(array.shape), " ", descr,
                                  " needs ", needed, " bytes, the file holds ", data_bytes));
  }
  if (data_bytes > needed) {
    return Bad(name, absl::StrCat("shape/data size mismatch: shape ", ShapeString(array.shape), " ",
                                  descr, " needs ", needed, " bytes, the file holds ", data_bytes));
  }
  const char* data = bytes.data() + header_begin + header_len;
  switch (array.dtype) {
    case NpyDType::kF32:
      Convert<float>(data, count, array.f32);
      break;
    case NpyDType::kF64:
      Convert<double>(data, count, array.f32);
      break;
    case NpyDType::kI64:
      Convert<int64_t>(data, count, array.i64);
      break;
    case NpyDType::kI32:
      Convert<int32_t>(data, count, array.i64);
      break;
  }
  return array;
}

absl::StatusOr<NpyArray> ReadNpy(const std::string& path) {
  absl::StatusOr<std::string> bytes = ReadFileToString(path);
  if (!bytes.ok()) return bytes.status();
  return ParseNpy(*bytes, path);
}

absl::Status WriteNpyF32(const std::string& path, const std::vector<int64_t>& shape,
                         const std::vector<float>& data) {
  return WriteNpy(path, shape, "<f4", data.data(), data.size(), sizeof(float));
}

absl::Status WriteNpyI64(const std::string& path, const std::vector<int64_t>& shape,
                         const std::vector<int64_t>& data) {
  return WriteNpy(path, shape, "<i8", data.data(), data.size(), sizeof(int64_t));
}

}  // namespace dapq
