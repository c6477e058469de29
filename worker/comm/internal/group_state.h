// File: worker/comm/internal/group_state.h
// The check every communicator (Gloo, NCCL) makes before a collective: a group aborted by a
// failed rank answers Aborted, and a group broken by an earlier failure answers that failure
// again (same code), both prefixed by the collective's context ("rank 1/2 allreduce: ").
#ifndef DAPQ_WORKER_COMM_INTERNAL_GROUP_STATE_H_
#define DAPQ_WORKER_COMM_INTERNAL_GROUP_STATE_H_

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace dapq::worker::internal {

// OK when the group can run a collective.
inline absl::Status CheckGroupUsable(bool aborted, const absl::Status& broken,
                                     absl::string_view context) {
  if (aborted) return absl::AbortedError(absl::StrCat(context, "group aborted by a failed rank"));
  if (!broken.ok()) {
    return absl::Status(
        broken.code(),
        absl::StrCat(context, "group broken by an earlier failure: ", broken.message()));
  }
  return absl::OkStatus();
}

}  // namespace dapq::worker::internal

#endif  // DAPQ_WORKER_COMM_INTERNAL_GROUP_STATE_H_
