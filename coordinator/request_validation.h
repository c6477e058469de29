// File: coordinator/request_validation.h
// Checks the coordinator makes on a dapq.v1.GenerateRequest before routing it (those that need
// no model; the worker checks the rest, e.g. method names and text prompt length). Errors are
// InvalidArgument or OutOfRange with the field's name, prefixed by `where` (e.g. "items[3].").
#ifndef DAPQ_COORDINATOR_REQUEST_VALIDATION_H_
#define DAPQ_COORDINATOR_REQUEST_VALIDATION_H_

#include <string>

#include "absl/status/status.h"
#include "dapq/v1/inference.pb.h"

namespace dapq::coordinator {

inline constexpr size_t kMaxRequestBytes = 4 << 20;

// `max_seq_len`: the smallest context limit of the healthy groups (0 = unknown, not checked).
absl::Status ValidateGenerateRequest(const dapq::v1::GenerateRequest& request, int max_seq_len,
                                     const std::string& where = "");

absl::Status ValidateSessionId(const std::string& id, const std::string& field);

}  // namespace dapq::coordinator

#endif  // DAPQ_COORDINATOR_REQUEST_VALIDATION_H_
