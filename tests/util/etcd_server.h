// File: tests/util/etcd_server.h
// Starts a real etcd (Debian's etcd-server, /usr/bin/etcd) for a test: a single member with its
// data in a fresh temp directory, client and peer ports free on 127.0.0.1, plaintext. Start()
// returns once GET /health answers {"health":"true"} (polled with a bounded deadline, never a
// fixed sleep). Kill() sends SIGKILL (the server vanishes: sockets close, nothing is flushed
// beyond what etcd already fsynced). Restart() starts it again on the same ports and data
// directory, so keys and leases survive (etcd extends every lease by its TTL on start);
// RestartEmpty() starts it on a wiped data directory instead, as if etcd had lost its data
// (revisions start over, leases are gone). The destructor kills it and removes the directory.
// GTEST_SKIP-free: a missing binary is a FailedPrecondition the test reports. etcd's output
// goes to <dir>/etcd.log (named in errors).
// Thread-compatible.
#ifndef DAPQ_TESTS_UTIL_ETCD_SERVER_H_
#define DAPQ_TESTS_UTIL_ETCD_SERVER_H_

#include <sys/types.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace dapq::testing {

class EtcdServer {
 public:
  static absl::StatusOr<std::unique_ptr<EtcdServer>> Start();
  ~EtcdServer();
  EtcdServer(const EtcdServer&) = delete;
  EtcdServer& operator=(const EtcdServer&) = delete;

  int client_port() const { return client_port_; }
  int peer_port() const { return peer_port_; }
  // "127.0.0.1:<client port>".
  std::string endpoint() const;
  // "etcd://127.0.0.1:<client port>" + prefix (e.g. "/test").
  std::string url(const std::string& prefix = "") const;
  const std::string& data_dir() const { return data_dir_; }

  void Kill();
  absl::Status Restart();       // same data: keys and leases survive
  absl::Status RestartEmpty();  // wiped data

 private:
  EtcdServer() = default;
  absl::Status Launch();  // fork/exec and wait until healthy

  pid_t pid_ = -1;
  int client_port_ = 0;
  int peer_port_ = 0;
  std::string dir_;       // temp directory (log + data)
  std::string data_dir_;  // dir_/data
};

}  // namespace dapq::testing

#endif  // DAPQ_TESTS_UTIL_ETCD_SERVER_H_
