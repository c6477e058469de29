// File: worker/safetensors.cc
// Safetensors header parsing and validation, the F32 writer, and fp16/bf16 -> fp32 decoding.
#include "worker/safetensors.h"

#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/types.h"
#include "nlohmann/json.hpp"

namespace dapq::worker {
namespace {

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; big-endian hosts need byte swapping");

constexpr uint64_t kMaxHeaderBytes = 100ull << 20;  // 100 MB, as the reference implementation
constexpr char kMetadataKey[] = "__metadata__";

absl::Status Malformed(const std::string& path, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("safetensors file ", path, ": ", what));
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

bool ParseDType(const std::string& name, SafetensorsDType* dtype) {
  if (name == "F32") {
    *dtype = SafetensorsDType::kF32;
  } else if (name == "F16") {
    *dtype = SafetensorsDType::kF16;
  } else if (name == "BF16") {
    *dtype = SafetensorsDType::kBF16;
  } else {
    return false;
  }
  return true;
}

// A JSON integer as a non-negative uint64; false for anything else (negative, float, string...).
bool NonNegativeInt(const nlohmann::json& j, uint64_t* out) {
  if (j.is_number_unsigned()) {
    *out = j.get<uint64_t>();
    return true;
  }
  if (j.is_number_integer()) {
    const int64_t v = j.get<int64_t>();
    if (v < 0) return false;
    *out = static_cast<uint64_t>(v);
    return true;
  }
  return false;
}

// Element count of `shape`, saturating at uint64 max (a zero dimension wins over any overflow).
uint64_t SaturatingNumElements(const std::vector<int64_t>& shape) {
  for (int64_t d : shape) {
    if (d == 0) return 0;
  }
  uint64_t n = 1;
  for (int64_t d : shape) {
    const uint64_t u = static_cast<uint64_t>(d);
    if (n > std::numeric_limits<uint64_t>::max() / u) return std::numeric_limits<uint64_t>::max();
    n *= u;
  }
  return n;
}

// Validates one header entry and fills `view` (data relative to `data_section`).
absl::Status ParseEntry(const std::string& path, const std::string& name,
                        const nlohmann::json& entry, const uint8_t* data_section,
                        uint64_t data_bytes, TensorView* view) {
  const std::string tensor = absl::StrCat("tensor '", name, "'");
  if (!entry.is_object()) return Malformed(path, absl::StrCat(tensor, ": entry is not an object"));
  auto dtype_it = entry.find("dtype");
  if (dtype_it == entry.end() || !dtype_it->is_string()) {
    return Malformed(path, absl::StrCat(tensor, ": missing or non-string \"dtype\""));
  }
  const std::string dtype_name = dtype_it->get<std::string>();
  if (!ParseDType(dtype_name, &view->dtype)) {
    return Malformed(path, absl::StrCat(tensor, ": unsupported dtype '", dtype_name,
                                        "' (supported: F32, F16, BF16)"));
  }
  auto shape_it = entry.find("shape");
  if (shape_it == entry.end() || !shape_it->is_array()) {
    return Malformed(path, absl::StrCat(tensor, ": missing or non-array \"shape\""));
  }
  view->shape.clear();
  for (const nlohmann::json& d : *shape_it) {
    uint64_t v = 0;
    if (!NonNegativeInt(d, &v) || v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return Malformed(path, absl::StrCat(tensor, ": shape ", shape_it->dump(),
                                          " is not an array of non-negative integers"));
    }
    view->shape.push_back(static_cast<int64_t>(v));
  }
  auto offsets_it = entry.find("data_offsets");
  uint64_t begin = 0, end = 0;
  if (offsets_it == entry.end() || !offsets_it->is_array() || offsets_it->size() != 2 ||
      !NonNegativeInt((*offsets_it)[0], &begin) || !NonNegativeInt((*offsets_it)[1], &end)) {
    return Malformed(path, absl::StrCat(tensor,
                                        ": \"data_offsets\" must be [begin, end] with "
                                        "non-negative integers"));
  }
  if (begin > end || end > data_bytes) {
    return Malformed(path, absl::StrCat(tensor, ": data_offsets [", begin, ", ", end,
                                        "] outside the data section of ", data_bytes, " bytes"));
  }
  const uint64_t numel = SaturatingNumElements(view->shape);
  const uint64_t elem = SafetensorsDTypeSize(view->dtype);
  const bool overflow = numel > std::numeric_limits<uint64_t>::max() / elem;
  if (overflow || numel * elem != end - begin) {
    return Malformed(
        path,
        absl::StrCat(tensor, ": data_offsets [", begin, ", ", end, "] span ", end - begin,
                     " bytes but shape ", ShapeString(view->shape), " of ", dtype_name, " needs ",
                     overflow ? std::string("more") : absl::StrCat(numel * elem), " bytes"));
  }
  view->data = data_section + begin;
  view->bytes = static_cast<size_t>(end - begin);
  return absl::OkStatus();
}

absl::Status IoError(const std::string& what, const std::string& path, int err) {
  return absl::ErrnoToStatus(err, absl::StrCat(what, " ", path));
}

}  // namespace

const char* SafetensorsDTypeName(SafetensorsDType dtype) {
  switch (dtype) {
    case SafetensorsDType::kF32:
      return "F32";
    case SafetensorsDType::kF16:
      return "F16";
    case SafetensorsDType::kBF16:
      return "BF16";
  }
  return "?";
}

size_t SafetensorsDTypeSize(SafetensorsDType dtype) {
  return dtype == SafetensorsDType::kF32 ? 4 : 2;
}

int64_t TensorView::NumElements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

absl::StatusOr<SafetensorsFile> SafetensorsFile::Open(const std::string& path) {
  absl::StatusOr<MappedFile> mapped = MappedFile::Open(path);
  if (!mapped.ok()) return mapped.status();
  SafetensorsFile f;
  f.path_ = path;
  f.file_ = std::move(mapped).value();
  const uint8_t* base = f.file_.data();
  const uint64_t size = f.file_.size();
  if (size < 8) {
    return Malformed(path, absl::StrCat("file is ", size,
                                        " bytes, shorter than the 8-byte header "
                                        "length"));
  }
  uint64_t header_bytes = 0;
  for (int i = 7; i >= 0; --i) header_bytes = (header_bytes << 8) | base[i];
  if (header_bytes > size - 8) {
    return Malformed(path, absl::StrCat("header length ", header_bytes, " exceeds the ", size - 8,
                                        " bytes after the length field"));
  }
  if (header_bytes >= kMaxHeaderBytes) {
    return Malformed(path, absl::StrCat("header length ", header_bytes, " is not below the ",
                                        kMaxHeaderBytes, "-byte limit"));
  }
  const char* header = reinterpret_cast<const char*>(base + 8);
  nlohmann::json root;
  try {
    root = nlohmann::json::parse(header, header + header_bytes);
  } catch (const nlohmann::json::exception& e) {
    return Malformed(path, absl::StrCat("header is not valid JSON: ", e.what()));
  }
  if (!root.is_object()) {
    return Malformed(path, absl::StrCat("header JSON is a ", root.type_name(), ", not an object"));
  }
  const uint8_t* data_section = base + 8 + header_bytes;
  const uint64_t data_bytes = size - 8 - header_bytes;
  for (auto it = root.begin(); it != root.end(); ++it) {
    if (it.key() == kMetadataKey) continue;
    TensorView view;
    absl::Status s = ParseEntry(path, it.key(), it.value(), data_section, data_bytes, &view);
    if (!s.ok()) return s;
    f.tensors_.emplace(it.key(), std::move(view));
  }
  return f;
}

std::vector<std::string> SafetensorsFile::Names() const {
  std::vector<std::string> names;
  names.reserve(tensors_.size());
  for (const auto& [name, view] : tensors_) names.push_back(name);
  return names;
}

absl::StatusOr<TensorView> SafetensorsFile::Get(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) {
    return absl::NotFoundError(absl::StrCat("tensor '", name, "' not in ", path_));
  }
  return it->second;
}

absl::Status WriteSafetensors(const std::string& path, const std::vector<NamedTensor>& tensors) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  uint64_t offset = 0;
  std::vector<uint64_t> bytes(tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const NamedTensor& t = tensors[i];
    if (t.name == kMetadataKey) {
      return absl::InvalidArgumentError(
          absl::StrCat("WriteSafetensors ", path, ": '", kMetadataKey, "' is reserved"));
    }
    if (header.contains(t.name)) {
      return absl::InvalidArgumentError(
          absl::StrCat("WriteSafetensors ", path, ": duplicate tensor name '", t.name, "'"));
    }
    uint64_t numel = 1;
    for (int64_t d : t.shape) {
      if (d < 0) {
        return absl::InvalidArgumentError(absl::StrCat("WriteSafetensors ", path, ": tensor '",
                                                       t.name, "' has negative dimension in ",
                                                       ShapeString(t.shape)));
      }
      numel *= static_cast<uint64_t>(d);
    }
    if (numel > 0 && t.data == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("WriteSafetensors ", path, ": tensor '", t.name, "' has null data"));
    }
    bytes[i] = numel * sizeof(float);
    header[t.name] = {
        {"dtype", "F32"}, {"shape", t.shape}, {"data_offsets", {offset, offset + bytes[i]}}};
    offset += bytes[i];
  }
  std::string header_text;
  try {
    header_text = header.dump();
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("WriteSafetensors ", path, ": cannot encode header: ", e.what()));
  }
  header_text.append((8 - header_text.size() % 8) % 8, ' ');
  uint8_t length_bytes[8];
  for (int i = 0; i < 8; ++i) {
    length_bytes[i] = static_cast<uint8_t>(static_cast<uint64_t>(header_text.size()) >> (8 * i));
  }

  static std::atomic<uint64_t> counter{0};
  const std::string tmp = absl::StrCat(path, ".tmp.", ::getpid(), ".", counter.fetch_add(1));
  std::FILE* out = std::fopen(tmp.c_str(), "wb");
  if (out == nullptr) return IoError("cannot create", tmp, errno);
  errno = 0;
  bool ok = std::fwrite(length_bytes, 1, 8, out) == 8 &&
            std::fwrite(header_text.data(), 1, header_text.size(), out) == header_text.size();
  for (size_t i = 0; ok && i < tensors.size(); ++i) {
    if (bytes[i] == 0) continue;
    ok = std::fwrite(tensors[i].data, 1, bytes[i], out) == bytes[i];
  }
  const int write_errno = errno;
  ok = std::fclose(out) == 0 && ok;
  if (!ok) {
    const int err = write_errno != 0 ? write_errno : (errno != 0 ? errno : EIO);
    std::remove(tmp.c_str());
    return IoError("cannot write", tmp, err);
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    std::remove(tmp.c_str());
    return IoError(absl::StrCat("cannot rename ", tmp, " to"), path, err);
  }
  return absl::OkStatus();
}

void ConvertToF32(const TensorView& view, float* out) {
  const size_t n = static_cast<size_t>(view.NumElements());
  if (view.dtype == SafetensorsDType::kF32) {
    if (n > 0) std::memcpy(out, view.data, n * sizeof(float));
    return;
  }
  const bool f16 = view.dtype == SafetensorsDType::kF16;
  for (size_t i = 0; i < n; ++i) {
    uint16_t bits;
    std::memcpy(&bits, view.data + 2 * i, sizeof(bits));
    out[i] = f16 ? kernels::F16ToFloat(bits) : kernels::Bf16ToFloat(bits);
  }
}

}  // namespace dapq::worker
