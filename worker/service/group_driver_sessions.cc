// File: worker/service/group_driver_sessions.cc
// GroupDriver: idle sessions kept in the engine's block pool (GroupDriverOptions::
// resident_session_bytes). Their KV is also in the store (every turn saves through), so taking a
// session out of the pool is dropping its sequence: no copy, and its next turn restores it.
#include "common/status_macros.h"
#include "worker/service/group_driver.h"

namespace dapq::worker::service {

size_t GroupDriver::ResidentSessionBytes() const {
  size_t total = 0;
  for (const auto& [id, s] : sessions_) total += s.seq ? s.seq->kv_allocated_bytes() : 0;
  return total;
}

void GroupDriver::EvictSession(const std::string& id) {
  auto it = sessions_.find(id);
  if (it == sessions_.end() || it->second.seq == nullptr) return;
  it->second.seq = nullptr;  // its blocks go back to the pool
  if (options_.metrics) options_.metrics->OnSessionEvicted();
}

absl::Status GroupDriver::EvictIdleSessions(const std::function<long()>& blocks_short) {
  if (options_.store == nullptr) return absl::OkStatus();  // the pool is their only home
  // Sessions in a turn are in the batch, not in the table: every sequence here is idle. With
  // none in the pool there is nothing to do (and the batch's shortfall is not even asked).
  size_t resident = ResidentSessionBytes();
  for (auto it = lru_.rbegin(); it != lru_.rend() && resident > 0; ++it) {
    if (resident <= options_.resident_session_bytes && blocks_short() <= 0) break;
    const Sequence* seq = sessions_.at(*it).seq.get();
    if (seq == nullptr) continue;
    resident -= seq->kv_allocated_bytes();
    dapq::v1::GroupCommand command;
    command.set_kind(dapq::v1::GroupCommand::BATCH);
    command.mutable_batch_op()->set_kind(dapq::v1::BatchOp::SESSION_EVICT);
    command.mutable_batch_op()->set_session_id(*it);
    DAPQ_RETURN_IF_ERROR(SendCommand(command));
    EvictSession(*it);
  }
  return absl::OkStatus();
}

}  // namespace dapq::worker::service
