// File: worker/service/group_batch_ops.h
// The wire form of a continuous batch in a multi-process group: rank 0's GroupBatchOps sends each
// batch operation (worker/service/batch_ops.h) to the other ranks as a GroupCommand BATCH before
// running it here; the other ranks decode it with RunBatchOpMessage and run it on their own
// sequences. A compressed prefill or a swap-in carries the request's own compression options
// (registered when the request joins the batch), which every rank converts the same way. Sampled
// tokens reach the other ranks as the next STEP's tokens.
// Thread-safety: thread-compatible (the driver's thread).
#ifndef DAPQ_WORKER_SERVICE_GROUP_BATCH_OPS_H_
#define DAPQ_WORKER_SERVICE_GROUP_BATCH_OPS_H_

#include <cstdint>
#include <functional>
#include <map>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "dapq/v1/worker.pb.h"
#include "worker/service/batch_ops.h"

namespace dapq::worker::service {

class GroupBatchOps final : public BatchOps {
 public:
  // Sends one command to the other ranks (GroupDriver::SendCommand).
  using Send = std::function<absl::Status(const dapq::v1::GroupCommand&)>;
  // `local` (this rank's sequences) must outlive the ops.
  GroupBatchOps(LocalBatchOps* local, Send send) : local_(local), send_(std::move(send)) {}

  // The compression options request `id` came with (sent with its compressed prefill/swap-in).
  void Register(uint64_t id, const dapq::v1::CompressionOptions& compression) {
    compression_[id] = compression;
  }
  // Request `id` finished for good (a preempted request keeps its options until then).
  void Unregister(uint64_t id) { compression_.erase(id); }

  absl::StatusOr<compress::CompressionStats> PrefillCompressed(
      uint64_t id, std::span<const int> prompt, const compress::CompressionConfig& config,
      std::vector<float>* logits) override;
  absl::StatusOr<int> ReusePrefix(uint64_t id, std::span<const int> prompt) override;
  absl::Status PublishPrefix(uint64_t id) override;
  absl::Status Step(std::span<const uint64_t> ids, std::span<const std::vector<int>> tokens,
                    std::vector<float>* logits) override;
  absl::Status Release(uint64_t id) override;
  absl::Status SwapOut(uint64_t id) override;
  absl::Status SwapIn(uint64_t id, const compress::CompressionConfig& compression) override;
  const Sequence* Find(uint64_t id) const override { return local_->Find(id); }

 private:
  LocalBatchOps* const local_;
  const Send send_;
  std::map<uint64_t, dapq::v1::CompressionOptions> compression_;
};

// A BATCH command for one operation on the sequence of request `id`, and the id a received
// one-sequence operation names (DataLoss unless it names exactly one).
dapq::v1::GroupCommand BatchCommand(dapq::v1::BatchOp::Kind kind, uint64_t id);
absl::StatusOr<uint64_t> BatchOpId(const dapq::v1::BatchOp& op);

// The other ranks: runs one received operation on `ops`. DataLoss for a malformed message;
// otherwise the operation's own status (identical on every rank).
absl::Status RunBatchOpMessage(const dapq::v1::BatchOp& op, LocalBatchOps& ops);

}  // namespace dapq::worker::service

#endif  // DAPQ_WORKER_SERVICE_GROUP_BATCH_OPS_H_
