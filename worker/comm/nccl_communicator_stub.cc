// File: worker/comm/nccl_communicator_stub.cc
// ConnectNcclGroup for builds without NCCL (DAPQ_HAVE_NCCL == 0).
#include "worker/comm/nccl_communicator.h"

namespace dapq::worker {

absl::StatusOr<std::unique_ptr<Communicator>> ConnectNcclGroup(Communicator& /*bootstrap*/,
                                                               int /*device*/) {
  return absl::UnimplementedError("nccl: this build has no NCCL (DAPQ_HAVE_NCCL=0)");
}

}  // namespace dapq::worker
