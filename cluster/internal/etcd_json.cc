// File: cluster/internal/etcd_json.cc
// base64 and int64-as-string decoding for etcd's JSON gateway.
#include "cluster/internal/etcd_json.h"

#include <string>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace dapq::cluster::internal {

std::string Base64(std::string_view bytes) {
  return absl::Base64Escape(absl::string_view(bytes.data(), bytes.size()));
}

int64_t JsonInt(const nlohmann::json& j, const char* field) {
  if (!j.is_object()) return 0;
  const auto it = j.find(field);
  if (it == j.end()) return 0;
  if (it->is_number_integer()) return it->get<int64_t>();
  if (it->is_string()) {
    int64_t v = 0;
    if (absl::SimpleAtoi(it->get<std::string>(), &v)) return v;
  }
  return 0;
}

absl::StatusOr<nlohmann::json> ParseJson(std::string_view text) {
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    return absl::InternalError(absl::StrCat("reply is not JSON: '",
                                            std::string(text.substr(0, 200)),
                                            text.size() > 200 ? "..." : "", "'"));
  }
  return j;
}

absl::StatusOr<EtcdKeyValue> ParseKeyValue(const nlohmann::json& j) {
  EtcdKeyValue kv;
  const auto decode = [&](const char* field, std::string* out) -> absl::Status {
    const auto it = j.find(field);
    if (it == j.end() || !it->is_string()) return absl::OkStatus();  // empty
    if (!absl::Base64Unescape(it->get<std::string>(), out)) {
      return absl::InternalError(absl::StrCat("etcd reply: ", field, " is not base64"));
    }
    return absl::OkStatus();
  };
  if (absl::Status s = decode("key", &kv.key); !s.ok()) return s;
  if (absl::Status s = decode("value", &kv.value); !s.ok()) return s;
  kv.create_revision = JsonInt(j, "create_revision");
  kv.mod_revision = JsonInt(j, "mod_revision");
  kv.version = JsonInt(j, "version");
  kv.lease = JsonInt(j, "lease");
  return kv;
}

}  // namespace dapq::cluster::internal
