// File: common/termination.cc
// Signal mask, sigwait thread and PR_SET_PDEATHSIG.
#include "common/termination.h"

#include <pthread.h>
#include <signal.h>
#include <sys/prctl.h>

#include <thread>

namespace dapq {
namespace {
sigset_t TerminationSet() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  return set;
}
}  // namespace

void BlockTerminationSignals() {
  const sigset_t set = TerminationSet();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

void WatchTerminationSignals(std::function<void(int signal)> on_signal) {
  std::thread([fn = std::move(on_signal)] {
    const sigset_t set = TerminationSet();
    int sig = 0;
    while (sigwait(&set, &sig) == 0) fn(sig);
  }).detach();
}

void DieWithParent() { prctl(PR_SET_PDEATHSIG, SIGTERM); }

}  // namespace dapq
