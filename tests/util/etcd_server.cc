// File: tests/util/etcd_server.cc
// fork/exec of etcd with its output in a log file; readiness from GET /health over a plain
// socket (no HTTP library needed here), polled every 20 ms for at most 30 s.
#include "tests/util/etcd_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "tests/util/redis_server.h"

namespace dapq::testing {
namespace {

constexpr char kEtcd[] = "/usr/bin/etcd";

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

std::string Tail(const std::string& text, size_t n = 3000) {
  return text.size() <= n ? text : text.substr(text.size() - n);
}

// One GET /health; true when etcd says it is healthy. Every step bounded by `timeout_ms`.
bool Healthy(int port, int timeout_ms) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  if (fd < 0) return false;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  bool ok = false;
  do {
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      if (errno != EINPROGRESS) break;
      pollfd p{fd, POLLOUT, 0};
      if (::poll(&p, 1, timeout_ms) != 1) break;
      int err = 0;
      socklen_t len = sizeof(err);
      if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) break;
    }
    const std::string request = "GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    if (::send(fd, request.data(), request.size(), MSG_NOSIGNAL) !=
        static_cast<ssize_t>(request.size())) {
      break;
    }
    std::string reply;
    char buf[1024];
    for (;;) {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, timeout_ms) != 1) break;
      const ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
      if (n <= 0) break;
      reply.append(buf, static_cast<size_t>(n));
    }
    ok = absl::StrContains(reply, "\"health\":\"true\"");
  } while (false);
  ::close(fd);
  return ok;
}

}  // namespace

absl::StatusOr<std::unique_ptr<EtcdServer>> EtcdServer::Start() {
  if (::access(kEtcd, X_OK) != 0) {
    return absl::FailedPreconditionError(
        "etcd not installed (scripts/setup.sh installs Debian's etcd-server)");
  }
  std::unique_ptr<EtcdServer> server(new EtcdServer());
  absl::StatusOr<int> client = PickFreePort();
  if (!client.ok()) return client.status();
  absl::StatusOr<int> peer = PickFreePort();
  for (int tries = 0; peer.ok() && *peer == *client && tries < 10; ++tries) peer = PickFreePort();
  if (!peer.ok()) return peer.status();
  server->client_port_ = *client;
  server->peer_port_ = *peer;
  static std::atomic<int> counter{0};
  server->dir_ = (std::filesystem::temp_directory_path() /
                  absl::StrCat("dapq_etcd_", ::getpid(), "_", counter.fetch_add(1)))
                     .string();
  std::filesystem::remove_all(server->dir_);
  std::filesystem::create_directories(server->dir_);
  server->data_dir_ = server->dir_ + "/data";
  if (absl::Status s = server->Launch(); !s.ok()) return s;
  return server;
}

std::string EtcdServer::endpoint() const { return absl::StrCat("127.0.0.1:", client_port_); }

std::string EtcdServer::url(const std::string& prefix) const {
  return absl::StrCat("etcd://", endpoint(), prefix);
}

absl::Status EtcdServer::Launch() {
  const std::string client_url = absl::StrCat("http://127.0.0.1:", client_port_);
  const std::string peer_url = absl::StrCat("http://127.0.0.1:", peer_port_);
  const std::string log_path = dir_ + "/etcd.log";
  std::vector<std::string> args = {kEtcd,
                                   "--name",
                                   "dapq-test",
                                   "--data-dir",
                                   data_dir_,
                                   "--listen-client-urls",
                                   client_url,
                                   "--advertise-client-urls",
                                   client_url,
                                   "--listen-peer-urls",
                                   peer_url,
                                   "--initial-advertise-peer-urls",
                                   peer_url,
                                   "--initial-cluster",
                                   "dapq-test=" + peer_url,
                                   "--initial-cluster-state",
                                   "new",
                                   "--logger",
                                   "zap",
                                   "--log-outputs",
                                   "stderr"};
  const pid_t pid = ::fork();
  if (pid < 0) return absl::InternalError("fork failed");
  if (pid == 0) {
    const int fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
      ::dup2(fd, STDOUT_FILENO);
      ::dup2(fd, STDERR_FILENO);
      ::close(fd);
    }
    std::vector<char*> argv;
    argv.reserve(args.size() + 1);
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  pid_ = pid;
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (!Healthy(client_port_, 1000)) {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return absl::InternalError(
          absl::StrCat("etcd exited during startup; ", log_path, ":\n", Tail(ReadFile(log_path))));
    }
    if (absl::Now() >= deadline) {
      Kill();
      return absl::DeadlineExceededError(
          absl::StrCat("etcd not healthy after 30 s; ", log_path, ":\n", Tail(ReadFile(log_path))));
    }
    ::poll(nullptr, 0, 20);  // the poll interval of a bounded readiness check
  }
  return absl::OkStatus();
}

void EtcdServer::Kill() {
  if (pid_ > 0) {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }
}

absl::Status EtcdServer::Restart() {
  Kill();
  return Launch();
}

absl::Status EtcdServer::RestartEmpty() {
  Kill();
  std::error_code ec;
  std::filesystem::remove_all(data_dir_, ec);
  return Launch();
}

EtcdServer::~EtcdServer() {
  Kill();
  std::error_code ec;
  if (!dir_.empty()) std::filesystem::remove_all(dir_, ec);
}

}  // namespace dapq::testing
