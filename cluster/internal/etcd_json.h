// File: cluster/internal/etcd_json.h
// Helpers shared by the etcd client and watcher for etcd's JSON gateway encoding: keys and
// values are base64, int64 fields are JSON strings (absent when zero). Private to cluster/.
// Thread-safety: pure functions.
#ifndef DAPQ_CLUSTER_INTERNAL_ETCD_JSON_H_
#define DAPQ_CLUSTER_INTERNAL_ETCD_JSON_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "cluster/etcd_client.h"
#include "nlohmann/json.hpp"

namespace dapq::cluster::internal {

std::string Base64(std::string_view bytes);

// The int64 `field` of `j`, whether a JSON string or number; 0 when absent or malformed.
int64_t JsonInt(const nlohmann::json& j, const char* field);

// Internal error (never an exception) for text that is not JSON.
absl::StatusOr<nlohmann::json> ParseJson(std::string_view text);

// One mvccpb.KeyValue ({"key", "value", "create_revision", ...}); Internal for bad base64.
absl::StatusOr<EtcdKeyValue> ParseKeyValue(const nlohmann::json& j);

}  // namespace dapq::cluster::internal

#endif  // DAPQ_CLUSTER_INTERNAL_ETCD_JSON_H_
