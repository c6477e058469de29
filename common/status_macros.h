// File: common/status_macros.h
// DAPQ_RETURN_IF_ERROR and DAPQ_ASSIGN_OR_RETURN for absl::Status / absl::StatusOr.
// Abseil 20220623 ships no status macros; alias these to ABSL_ once an LTS that has them is pinned.
#ifndef DAPQ_COMMON_STATUS_MACROS_H_
#define DAPQ_COMMON_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define DAPQ_STATUS_CONCAT_INNER_(a, b) a##b
#define DAPQ_STATUS_CONCAT_(a, b) DAPQ_STATUS_CONCAT_INNER_(a, b)

// Evaluates `expr` (an absl::Status); returns it from the enclosing function when not OK.
#define DAPQ_RETURN_IF_ERROR(expr)               \
  do {                                           \
    ::absl::Status dapq_status_ = (expr);        \
    if (!dapq_status_.ok()) return dapq_status_; \
  } while (0)

// `lhs` = value of `rexpr` (an absl::StatusOr<T>), or returns its status when not OK.
#define DAPQ_ASSIGN_OR_RETURN(lhs, rexpr) \
  DAPQ_ASSIGN_OR_RETURN_IMPL_(DAPQ_STATUS_CONCAT_(dapq_statusor_, __LINE__), lhs, rexpr)

#define DAPQ_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, rexpr) \
  auto statusor = (rexpr);                                \
  if (!statusor.ok()) return statusor.status();           \
  lhs = std::move(statusor).value()

#endif  // DAPQ_COMMON_STATUS_MACROS_H_
