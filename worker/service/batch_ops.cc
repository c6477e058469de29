// File: worker/service/batch_ops.cc
// LocalBatchOps.
#include "worker/service/batch_ops.h"

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "worker/session_store.h"

namespace dapq::worker::service {

absl::StatusOr<compress::CompressionStats> LocalBatchOps::PrefillCompressed(
    uint64_t id, std::span<const int> prompt, const compress::CompressionConfig& config,
    std::vector<float>* logits) {
  std::unique_ptr<Sequence>& seq = sequences_[id];
  const bool adopted = seq != nullptr;  // a session's turn compressed again
  if (!adopted) seq = engine_->NewSequence();
  absl::StatusOr<compress::CompressionStats> stats =
      engine_->PrefillCompressed(*seq, prompt, config, logits);
  if (!stats.ok() && !adopted) sequences_.erase(id);
  return stats;
}

absl::StatusOr<int> LocalBatchOps::ReusePrefix(uint64_t id, std::span<const int> prompt) {
  std::unique_ptr<Sequence>& seq = sequences_[id];
  seq = engine_->NewSequence();
  absl::StatusOr<int> reused = engine_->ReusePrefix(*seq, prompt);
  if (!reused.ok()) sequences_.erase(id);
  return reused;
}

absl::Status LocalBatchOps::PublishPrefix(uint64_t id) {
  if (auto it = sequences_.find(id); it != sequences_.end()) engine_->PublishPrefix(*it->second);
  return absl::OkStatus();
}

absl::Status LocalBatchOps::Step(std::span<const uint64_t> ids,
                                 std::span<const std::vector<int>> tokens,
                                 std::vector<float>* logits) {
  if (ids.size() != tokens.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("batch step: ", ids.size(), " ids but ", tokens.size(), " token lists"));
  }
  std::vector<StepEntry> entries(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    std::unique_ptr<Sequence>& seq = sequences_[ids[i]];
    if (seq == nullptr) seq = engine_->NewSequence();
    entries[i] = {seq.get(), tokens[i]};
  }
  return engine_->Step(entries, logits);
}

std::unique_ptr<Sequence> LocalBatchOps::Take(uint64_t id) {
  auto it = sequences_.find(id);
  if (it == sequences_.end()) return nullptr;
  std::unique_ptr<Sequence> seq = std::move(it->second);
  sequences_.erase(it);
  return seq;
}

absl::Status LocalBatchOps::Release(uint64_t id) {
  sequences_.erase(id);
  return absl::OkStatus();
}

std::string SwapKey(uint64_t id) { return absl::StrCat("preempted-", id); }

absl::Status LocalBatchOps::CheckStore() const {
  if (store_ != nullptr) return absl::OkStatus();
  return absl::FailedPreconditionError("preemption by swap needs the KV store (--kv_dir)");
}

absl::Status LocalBatchOps::SwapOut(uint64_t id) {
  DAPQ_RETURN_IF_ERROR(CheckStore());
  auto it = sequences_.find(id);
  if (it == sequences_.end()) {
    return absl::NotFoundError(absl::StrCat("swap out: no sequence ", id));
  }
  DAPQ_RETURN_IF_ERROR(SaveSession(*engine_, *it->second, SwapKey(id), *store_));
  sequences_.erase(it);
  return absl::OkStatus();
}

absl::Status LocalBatchOps::SwapIn(uint64_t id, const compress::CompressionConfig& compression) {
  DAPQ_RETURN_IF_ERROR(CheckStore());
  DAPQ_ASSIGN_OR_RETURN(LoadResult loaded, LoadSession(*engine_, SwapKey(id), *store_,
                                                       FailedLoadPolicy::kFail, compression));
  sequences_[id] = std::move(loaded.sequence);
  return store_->EraseSession(SwapKey(id));
}

const Sequence* LocalBatchOps::Find(uint64_t id) const {
  auto it = sequences_.find(id);
  return it == sequences_.end() ? nullptr : it->second.get();
}

}  // namespace dapq::worker::service
