// File: kvstore/cuda_tiers_stub.cc
// NewDeviceTier / NewPinnedHostTier for builds without CUDA (DAPQ_HAVE_CUDA == 0).
#include "kvstore/cuda_tiers.h"

namespace dapq::kvstore {

absl::StatusOr<std::unique_ptr<Tier>> NewDeviceTier(const TierOptions& /*options*/,
                                                    int /*device*/) {
  return absl::UnimplementedError(
      "kvstore: GPU device tier: this build has no CUDA "
      "(DAPQ_HAVE_CUDA=0)");
}

absl::StatusOr<std::unique_ptr<Tier>> NewPinnedHostTier(const TierOptions& /*options*/,
                                                        int /*device*/) {
  return absl::UnimplementedError(
      "kvstore: pinned host tier: this build has no CUDA "
      "(DAPQ_HAVE_CUDA=0)");
}

}  // namespace dapq::kvstore
