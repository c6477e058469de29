// File: kvstore/cuda_tiers.h
// The memory tiers of CUDA builds: `device` in GPU memory and `host` in pinned (page-locked)
// host memory. No CUDA types here, so CPU code (KvStore) includes it; builds without CUDA
// (DAPQ_HAVE_CUDA == 0) compile a version whose factories return Unimplemented, and use
// MemoryTier (memory_tier.h) for both levels instead.
//
// Both tiers reserve their whole capacity when created (one cudaMalloc / cudaHostAlloc) and
// place blocks in it with internal::ArenaTier (kvstore/internal/arena_tier.h): Put and Get do
// no allocation, capacity and watermarks are exact, and a Put that does not fit is
// ResourceExhausted with no side effects, as for every tier (tier.h).
//
// Transfers. The device tier owns a non-blocking cudaStream_t and a pinned staging buffer (as
// large as the largest block seen). Put copies the block into the staging buffer and from there
// to the GPU with cudaMemcpyAsync on that stream, Get copies back the same way; each call
// synchronizes its stream before returning (simple and correct; no copy outlives a call). Since
// the stream is non-blocking and no call allocates or frees device memory, the copies of a spill
// or prefetch batch, which the KvStore runs on its background thread, overlap with compute on
// the other streams of the process. Blocks keep the encoded form of block_codec.h; the GPU tiers
// do not checksum them (the lower tiers, disk and remote, verify what they read).
//
// Errors: every CUDA failure becomes an absl::Status naming the tier, the key, the CUDA call,
// file:line, the CUDA error string and the device (common/cuda_status.h): Internal, or
// ResourceExhausted when memory for the arena or the staging buffer cannot be allocated.
// FailedPrecondition when the process sees no CUDA device; InvalidArgument for a device index out
// of range or bad TierOptions.
// Thread-safety: the tiers are thread-safe (one transfer at a time per tier). Ownership: each
// tier owns its arena, stream and staging buffer, released when it is destroyed.
#ifndef DAPQ_KVSTORE_CUDA_TIERS_H_
#define DAPQ_KVSTORE_CUDA_TIERS_H_

#include <memory>

#include "absl/status/statusor.h"
#include "kvstore/tier.h"

namespace dapq::kvstore {

// A tier of options.capacity_bytes of GPU memory on CUDA device `device`.
absl::StatusOr<std::unique_ptr<Tier>> NewDeviceTier(const TierOptions& options, int device);

// A tier of options.capacity_bytes of pinned host memory, allocated (portable: every device's
// copies see it as pinned) with CUDA device `device` current, so that a process that uses one
// GPU creates no context on another.
absl::StatusOr<std::unique_ptr<Tier>> NewPinnedHostTier(const TierOptions& options, int device);

}  // namespace dapq::kvstore

#endif  // DAPQ_KVSTORE_CUDA_TIERS_H_
