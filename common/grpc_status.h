// File: common/grpc_status.h
// absl::Status <-> grpc::Status at the gRPC boundary (gRPC 1.51 has no converter; the numeric
// codes are the same). Handlers convert once, at the edge.
#ifndef DAPQ_COMMON_GRPC_STATUS_H_
#define DAPQ_COMMON_GRPC_STATUS_H_

#include <grpcpp/support/status.h>

#include <string>

#include "absl/status/status.h"

namespace dapq {

inline grpc::Status ToGrpcStatus(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

inline absl::Status FromGrpcStatus(const grpc::Status& s) {
  if (s.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
}

}  // namespace dapq

#endif  // DAPQ_COMMON_GRPC_STATUS_H_
