// File: worker/service/group_batch_ops.cc
// GroupBatchOps (encode, send, run here) and RunBatchOpMessage (decode, run).
#include "worker/service/group_batch_ops.h"

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "worker/service/request_options.h"

namespace dapq::worker::service {
namespace {

dapq::v1::GroupCommand Command(dapq::v1::BatchOp::Kind kind) {
  dapq::v1::GroupCommand command;
  command.set_kind(dapq::v1::GroupCommand::BATCH);
  command.mutable_batch_op()->set_kind(kind);
  return command;
}

}  // namespace

absl::StatusOr<uint64_t> BatchOpId(const dapq::v1::BatchOp& op) {
  if (op.ids_size() != 1) {
    return absl::DataLossError(
        absl::StrCat("batch operation ", op.kind(), ": one id expected, got ", op.ids_size()));
  }
  return op.ids(0);
}

dapq::v1::GroupCommand BatchCommand(dapq::v1::BatchOp::Kind kind, uint64_t id) {
  dapq::v1::GroupCommand command = Command(kind);
  command.mutable_batch_op()->add_ids(id);
  return command;
}

absl::StatusOr<compress::CompressionStats> GroupBatchOps::PrefillCompressed(
    uint64_t id, std::span<const int> prompt, const compress::CompressionConfig& config,
    std::vector<float>* logits) {
  dapq::v1::GroupCommand command = BatchCommand(dapq::v1::BatchOp::PREFILL_COMPRESSED, id);
  dapq::v1::BatchOp& op = *command.mutable_batch_op();
  op.mutable_tokens()->Assign(prompt.begin(), prompt.end());
  *op.mutable_compression() = compression_[id];
  DAPQ_RETURN_IF_ERROR(send_(command));
  return local_->PrefillCompressed(id, prompt, config, logits);
}

absl::StatusOr<int> GroupBatchOps::ReusePrefix(uint64_t id, std::span<const int> prompt) {
  dapq::v1::GroupCommand command = BatchCommand(dapq::v1::BatchOp::REUSE_PREFIX, id);
  command.mutable_batch_op()->mutable_tokens()->Assign(prompt.begin(), prompt.end());
  DAPQ_RETURN_IF_ERROR(send_(command));
  return local_->ReusePrefix(id, prompt);
}

absl::Status GroupBatchOps::PublishPrefix(uint64_t id) {
  DAPQ_RETURN_IF_ERROR(send_(BatchCommand(dapq::v1::BatchOp::PUBLISH_PREFIX, id)));
  return local_->PublishPrefix(id);
}

absl::Status GroupBatchOps::Step(std::span<const uint64_t> ids,
                                 std::span<const std::vector<int>> tokens,
                                 std::vector<float>* logits) {
  dapq::v1::GroupCommand command = Command(dapq::v1::BatchOp::STEP);
  dapq::v1::BatchOp& op = *command.mutable_batch_op();
  op.mutable_ids()->Assign(ids.begin(), ids.end());
  for (const std::vector<int>& t : tokens) {
    op.add_lengths(static_cast<int32_t>(t.size()));
    op.mutable_tokens()->Add(t.begin(), t.end());
  }
  DAPQ_RETURN_IF_ERROR(send_(command));
  return local_->Step(ids, tokens, logits);
}

absl::Status GroupBatchOps::Release(uint64_t id) {
  DAPQ_RETURN_IF_ERROR(send_(BatchCommand(dapq::v1::BatchOp::RELEASE, id)));
  return local_->Release(id);
}

absl::Status GroupBatchOps::SwapOut(uint64_t id) {
  DAPQ_RETURN_IF_ERROR(send_(BatchCommand(dapq::v1::BatchOp::SWAP_OUT, id)));
  return local_->SwapOut(id);
}

absl::Status GroupBatchOps::SwapIn(uint64_t id, const compress::CompressionConfig& compression) {
  dapq::v1::GroupCommand command = BatchCommand(dapq::v1::BatchOp::SWAP_IN, id);
  *command.mutable_batch_op()->mutable_compression() = compression_[id];
  DAPQ_RETURN_IF_ERROR(send_(command));
  return local_->SwapIn(id, compression);
}

absl::Status RunBatchOpMessage(const dapq::v1::BatchOp& op, LocalBatchOps& ops) {
  if (op.kind() == dapq::v1::BatchOp::STEP) {
    if (op.lengths_size() != op.ids_size()) {
      return absl::DataLossError("batch step: ids and lengths differ in number");
    }
    std::vector<std::vector<int>> tokens;
    int64_t offset = 0;
    for (int32_t length : op.lengths()) {
      if (length < 0 || offset + length > op.tokens_size()) {
        return absl::DataLossError("batch step: lengths exceed the tokens sent");
      }
      tokens.emplace_back(op.tokens().begin() + offset, op.tokens().begin() + offset + length);
      offset += length;
    }
    const std::vector<uint64_t> ids(op.ids().begin(), op.ids().end());
    return ops.Step(ids, tokens, nullptr);
  }
  // Every other operation names one sequence.
  DAPQ_ASSIGN_OR_RETURN(const uint64_t id, BatchOpId(op));
  switch (op.kind()) {
    case dapq::v1::BatchOp::PREFILL_COMPRESSED: {
      DAPQ_ASSIGN_OR_RETURN(const compress::CompressionConfig config,
                            ToCompressionConfig(op.compression()));
      const std::vector<int> prompt(op.tokens().begin(), op.tokens().end());
      std::vector<float> logits;
      return ops.PrefillCompressed(id, prompt, config, &logits).status();
    }
    case dapq::v1::BatchOp::REUSE_PREFIX: {
      const std::vector<int> prompt(op.tokens().begin(), op.tokens().end());
      return ops.ReusePrefix(id, prompt).status();
    }
    case dapq::v1::BatchOp::PUBLISH_PREFIX:
      return ops.PublishPrefix(id);
    case dapq::v1::BatchOp::RELEASE:
      return ops.Release(id);
    case dapq::v1::BatchOp::SWAP_OUT:
      return ops.SwapOut(id);
    case dapq::v1::BatchOp::SWAP_IN: {
      DAPQ_ASSIGN_OR_RETURN(const compress::CompressionConfig config,
                            ToCompressionConfig(op.compression()));
      return ops.SwapIn(id, config);
    }
    default:
      return absl::DataLossError(absl::StrCat("unknown batch operation ", op.kind()));
  }
}

}  // namespace dapq::worker::service
