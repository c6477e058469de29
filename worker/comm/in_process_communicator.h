// File: worker/comm/in_process_communicator.h
// Communicator for ranks that are threads of one process (unit tests, the local `generate`
// command, single-node CPU serving). CreateInProcessGroup(T) returns T communicators sharing
// one rendezvous; each must be driven by its own thread.
#ifndef DAPQ_WORKER_COMM_IN_PROCESS_COMMUNICATOR_H_
#define DAPQ_WORKER_COMM_IN_PROCESS_COMMUNICATOR_H_

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/comm/communicator.h"

namespace dapq::worker {

// InvalidArgument when size < 1.
absl::StatusOr<std::vector<std::unique_ptr<Communicator>>> CreateInProcessGroup(int size);

}  // namespace dapq::worker

#endif  // DAPQ_WORKER_COMM_IN_PROCESS_COMMUNICATOR_H_
