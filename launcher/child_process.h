// File: launcher/child_process.h
// A child process started with fork+exec, its stdout and stderr appended to a log file, killed
// with SIGTERM when the parent dies (so a killed `dapq serve` or test leaves nothing behind).
// Waiting uses a pidfd (no polling). Thread-compatible.
#ifndef DAPQ_LAUNCHER_CHILD_PROCESS_H_
#define DAPQ_LAUNCHER_CHILD_PROCESS_H_

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace dapq::launcher {

class ChildProcess {
 public:
  // argv[0] is the executable's path. Unavailable when it cannot be started.
  // With `ready_pipe`, the child gets the write end of a pipe as file descriptor 3 (pass it
  // `--ready_fd 3`): it reports there once it serves, e.g. the ports it bound.
  static absl::StatusOr<ChildProcess> Start(const std::vector<std::string>& argv,
                                            const std::string& log_path, bool ready_pipe = false);
  ChildProcess(ChildProcess&& other) noexcept;
  ChildProcess& operator=(ChildProcess&& other) noexcept;
  ~ChildProcess();  // SIGKILLs and reaps a child still running

  pid_t pid() const { return pid_; }
  const std::string& log_path() const { return log_path_; }
  bool running();
  void Signal(int signal);
  // Waits up to `timeout` for the child to exit; its exit code (128 + signal when killed), or
  // nullopt while it still runs.
  std::optional<int> Wait(std::chrono::milliseconds timeout);
  // SIGTERM, then SIGKILL after `grace`; returns the exit code.
  int Stop(std::chrono::milliseconds grace);
  // The file descriptor that becomes readable when the child exits (for poll()).
  int exit_fd() const { return pidfd_; }
  // The first line the child wrote to its ready pipe (without the newline). DeadlineExceeded
  // after `timeout`; FailedPrecondition naming the log when the child exited first.
  absl::StatusOr<std::string> ReadReadyLine(std::chrono::milliseconds timeout);

 private:
  ChildProcess(pid_t pid, int pidfd, int ready_fd, std::string log_path)
      : pid_(pid), pidfd_(pidfd), ready_fd_(ready_fd), log_path_(std::move(log_path)) {}
  pid_t pid_ = -1;
  int pidfd_ = -1;
  int ready_fd_ = -1;
  std::string log_path_;
  std::optional<int> exit_code_;
};

}  // namespace dapq::launcher

#endif  // DAPQ_LAUNCHER_CHILD_PROCESS_H_
