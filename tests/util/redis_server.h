// File: tests/util/redis_server.h
// Starts a real redis-server (Debian's package) on a free loopback port for a test, in a temp
// directory, without persistence; waits until it logs that it accepts connections (reading its
// output, no sleeps); Kill() sends SIGKILL to simulate the server going away. The destructor
// stops it. GTEST_SKIP-free: a missing binary is a FailedPrecondition the test reports.
// StartTls serves TLS only (Redis 7's --tls-port, no plaintext port), requiring clients to
// present a certificate the CA signed (--tls-auth-clients yes).
#ifndef DAPQ_TESTS_UTIL_REDIS_SERVER_H_
#define DAPQ_TESTS_UTIL_REDIS_SERVER_H_

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace dapq::testing {

class RedisServer {
 public:
  // extra_args e.g. {"--maxmemory", "2mb", "--maxmemory-policy", "allkeys-lru"}.
  static absl::StatusOr<std::unique_ptr<RedisServer>> Start(
      std::vector<std::string> extra_args = {});
  // PEM file paths: the server's certificate and key, and the CA that signs its clients.
  static absl::StatusOr<std::unique_ptr<RedisServer>> StartTls(
      const std::string& cert, const std::string& key, const std::string& ca,
      std::vector<std::string> extra_args = {});
  ~RedisServer();
  int port() const { return port_; }  // the TLS port for StartTls
  void Kill();

 private:
  // `port_args` name the listening port(s); `port` is the one clients use.
  static absl::StatusOr<std::unique_ptr<RedisServer>> Launch(int port,
                                                             std::vector<std::string> port_args,
                                                             std::vector<std::string> extra_args);

  pid_t pid_ = -1;
  int port_ = 0;
  int out_fd_ = -1;
};

// A TCP port on 127.0.0.1 that was free a moment ago.
absl::StatusOr<int> PickFreePort();

}  // namespace dapq::testing

#endif  // DAPQ_TESTS_UTIL_REDIS_SERVER_H_
