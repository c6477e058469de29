// File: api/status_names.h
// The canonical names of gRPC / absl status codes ("RESOURCE_EXHAUSTED"), as metrics labels,
// the load generator's error table and CLI messages spell them. absl and gRPC share the
// numbers, so one table serves both.
// Thread-safe.
#ifndef DAPQ_API_STATUS_NAMES_H_
#define DAPQ_API_STATUS_NAMES_H_

#include "absl/strings/string_view.h"

namespace dapq::api {

// "OK" .. "UNAUTHENTICATED" for codes 0..16, "UNKNOWN" for anything else.
absl::string_view StatusCodeName(int code);

}  // namespace dapq::api

#endif  // DAPQ_API_STATUS_NAMES_H_
