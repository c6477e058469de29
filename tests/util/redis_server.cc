// File: tests/util/redis_server.cc
// fork/exec of redis-server (plaintext or TLS) with its output on a pipe, readiness from its log
// line.
#include "tests/util/redis_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace dapq::testing {

absl::StatusOr<int> PickFreePort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return absl::InternalError("socket failed");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    ::close(fd);
    return absl::InternalError(absl::StrCat("bind: ", std::strerror(errno)));
  }
  ::close(fd);
  return ntohs(addr.sin_port);
}

absl::StatusOr<std::unique_ptr<RedisServer>> RedisServer::Start(std::vector<std::string> extra) {
  absl::StatusOr<int> port = PickFreePort();
  if (!port.ok()) return port.status();
  return Launch(*port, {"--port", std::to_string(*port)}, std::move(extra));
}

absl::StatusOr<std::unique_ptr<RedisServer>> RedisServer::StartTls(const std::string& cert,
                                                                   const std::string& key,
                                                                   const std::string& ca,
                                                                   std::vector<std::string> extra) {
  absl::StatusOr<int> port = PickFreePort();
  if (!port.ok()) return port.status();
  return Launch(*port,
                {"--port", "0", "--tls-port", std::to_string(*port), "--tls-cert-file", cert,
                 "--tls-key-file", key, "--tls-ca-cert-file", ca, "--tls-auth-clients", "yes"},
                std::move(extra));
}

absl::StatusOr<std::unique_ptr<RedisServer>> RedisServer::Launch(int port,
                                                                 std::vector<std::string> port_args,
                                                                 std::vector<std::string> extra) {
  if (::access("/usr/bin/redis-server", X_OK) != 0) {
    return absl::FailedPreconditionError(
        "redis-server not installed (scripts/setup.sh installs it)");
  }
  int pipe_fds[2];
  if (::pipe(pipe_fds) != 0) return absl::InternalError("pipe failed");
  std::vector<std::string> args = {"/usr/bin/redis-server",
                                   "--bind",
                                   "127.0.0.1",
                                   "--save",
                                   "",
                                   "--appendonly",
                                   "no",
                                   "--dir",
                                   "/tmp",
                                   "--daemonize",
                                   "no",
                                   "--loglevel",
                                   "notice"};
  args.insert(args.end(), port_args.begin(), port_args.end());
  args.insert(args.end(), extra.begin(), extra.end());
  const pid_t pid = ::fork();
  if (pid < 0) return absl::InternalError("fork failed");
  if (pid == 0) {
    ::dup2(pipe_fds[1], STDOUT_FILENO);
    ::dup2(pipe_fds[1], STDERR_FILENO);
    ::close(pipe_fds[0]);
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  ::close(pipe_fds[1]);
  auto server = std::make_unique<RedisServer>();
  server->pid_ = pid;
  server->port_ = port;
  server->out_fd_ = pipe_fds[0];
  // Read the log until the server is ready (or dies / 20 s pass).
  std::string log;
  char buf[4096];
  while (log.find("Ready to accept connections") == std::string::npos) {
    pollfd p{server->out_fd_, POLLIN, 0};
    if (::poll(&p, 1, 20000) <= 0)
      return absl::DeadlineExceededError("redis-server did not start: " + log);
    const ssize_t n = ::read(server->out_fd_, buf, sizeof(buf));
    if (n <= 0) return absl::InternalError("redis-server exited: " + log);
    log.append(buf, static_cast<size_t>(n));
  }
  return server;
}

void RedisServer::Kill() {
  if (pid_ > 0) {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }
}

RedisServer::~RedisServer() {
  Kill();
  if (out_fd_ >= 0) ::close(out_fd_);
}

}  // namespace dapq::testing
