// File: launcher/child_process.cc
// ChildProcess: fork/exec with PR_SET_PDEATHSIG, pidfd waits.
#include "launcher/child_process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace dapq::launcher {

absl::StatusOr<ChildProcess> ChildProcess::Start(const std::vector<std::string>& argv,
                                                 const std::string& log_path, bool ready_pipe) {
  if (argv.empty()) return absl::InvalidArgumentError("child process: no command");
  if (access(argv[0].c_str(), X_OK) != 0) {
    return absl::NotFoundError(absl::StrCat("cannot execute ", argv[0], ": ", strerror(errno)));
  }
  const int log = open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log < 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot open log ", log_path, ": ", strerror(errno)));
  }
  int pipe_fds[2] = {-1, -1};
  if (ready_pipe && pipe2(pipe_fds, O_CLOEXEC) != 0) {
    close(log);
    return absl::UnavailableError(absl::StrCat("pipe: ", strerror(errno)));
  }
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) {
    close(log);
    return absl::UnavailableError(absl::StrCat("fork: ", strerror(errno)));
  }
  if (pid == 0) {
    // Only async-signal-safe calls until exec.
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent) _exit(127);  // the parent died before prctl
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);  // the parent may block SIGTERM for sigwait
    dup2(log, STDOUT_FILENO);
    dup2(log, STDERR_FILENO);
    if (pipe_fds[1] >= 0) {
      if (pipe_fds[1] == 3) {
        fcntl(3, F_SETFD, 0);  // keep it across exec
      } else {
        dup2(pipe_fds[1], 3);  // the copy has no FD_CLOEXEC
      }
    }
    execv(args[0], args.data());
    _exit(127);
  }
  close(log);
  if (pipe_fds[1] >= 0) close(pipe_fds[1]);
  const int pidfd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
  return ChildProcess(pid, pidfd, pipe_fds[0], log_path);
}

ChildProcess::ChildProcess(ChildProcess&& o) noexcept
    : pid_(o.pid_),
      pidfd_(o.pidfd_),
      ready_fd_(o.ready_fd_),
      log_path_(std::move(o.log_path_)),
      exit_code_(o.exit_code_) {
  o.pid_ = -1;
  o.pidfd_ = -1;
  o.ready_fd_ = -1;
}

ChildProcess& ChildProcess::operator=(ChildProcess&& o) noexcept {
  if (this != &o) {
    this->~ChildProcess();
    new (this) ChildProcess(std::move(o));
  }
  return *this;
}

ChildProcess::~ChildProcess() {
  if (pid_ > 0 && !exit_code_.has_value()) {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
  if (pidfd_ >= 0) close(pidfd_);
  if (ready_fd_ >= 0) close(ready_fd_);
}

absl::StatusOr<std::string> ChildProcess::ReadReadyLine(std::chrono::milliseconds timeout) {
  if (ready_fd_ < 0) return absl::FailedPreconditionError("child started without a ready pipe");
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::string line;
  char c = 0;
  while (true) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      return absl::DeadlineExceededError(absl::StrCat("pid ", pid_, " did not report ready within ",
                                                      timeout.count(), " ms (log ", log_path_,
                                                      ")"));
    }
    pollfd p{ready_fd_, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
    const ssize_t n = read(ready_fd_, &c, 1);
    if (n == 1 && c != '\n') {
      line += c;
      continue;
    }
    if (n == 1) return line;
    // EOF: the child closed the pipe without a line (it exited, or failed before serving).
    return absl::FailedPreconditionError(
        absl::StrCat("pid ", pid_, " exited before reporting ready (log ", log_path_, ")"));
  }
}

bool ChildProcess::running() { return !Wait(std::chrono::milliseconds(0)).has_value(); }

void ChildProcess::Signal(int signal) {
  if (pid_ > 0 && !exit_code_.has_value()) kill(pid_, signal);
}

std::optional<int> ChildProcess::Wait(std::chrono::milliseconds timeout) {
  if (exit_code_.has_value() || pid_ <= 0) return exit_code_;
  if (pidfd_ >= 0) {
    pollfd p{pidfd_, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(timeout.count())) <= 0) return std::nullopt;
  }
  int status = 0;
  const pid_t r = waitpid(pid_, &status, pidfd_ >= 0 ? 0 : WNOHANG);
  if (r != pid_) return std::nullopt;
  exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return exit_code_;
}

int ChildProcess::Stop(std::chrono::milliseconds grace) {
  Signal(SIGTERM);
  if (std::optional<int> code = Wait(grace)) return *code;
  Signal(SIGKILL);
  return Wait(std::chrono::milliseconds(60000)).value_or(-1);
}

}  // namespace dapq::launcher
