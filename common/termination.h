// File: common/termination.h
// Graceful shutdown on SIGINT/SIGTERM for the long-running processes (dapq-coordinator,
// dapq-worker, dapq serve): BlockTerminationSignals() in main before any thread starts (threads
// inherit the mask), then WatchTerminationSignals(fn) runs fn(signal) on a detached thread when
// one arrives. DieWithParent() makes a child process get SIGTERM when its parent dies, so a
// killed `dapq serve` leaves no process behind.
#ifndef DAPQ_COMMON_TERMINATION_H_
#define DAPQ_COMMON_TERMINATION_H_

#include <functional>

namespace dapq {

void BlockTerminationSignals();
void WatchTerminationSignals(std::function<void(int signal)> on_signal);
// Linux only; no-op elsewhere. Call in the child (it survives exec).
void DieWithParent();

}  // namespace dapq

#endif  // DAPQ_COMMON_TERMINATION_H_
