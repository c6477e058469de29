// File: tests/util/postgres_server.h
// Starts a real PostgreSQL server (Debian's postgresql-15 package: initdb and postgres, found
// on PATH or in /usr/lib/postgresql/15/bin) for a test: a fresh cluster in a temp directory,
// listening on a free loopback port and on a unix socket inside that directory, trust
// authentication, fsync on (durability is what the tests check; only initdb skips its final
// sync of the fresh cluster), small shared_buffers so it starts fast. Readiness comes from its
// log line "database system is ready to accept connections" (read from its stderr on a pipe,
// no sleeps); a thread keeps draining that pipe into `<dir>/postgres.log` for the server's
// lifetime. PostgreSQL refuses to run as root: when the test runs as root (CI), the directory
// is handed to the `postgres` user and initdb/postgres run as that user (fork, setgroups,
// setgid, setuid, exec; never sudo).
//   Kill():    SIGKILL to the postmaster and every backend (a crash of the whole server); the
//              data directory is left as the crash left it.
//   Stop():    fast shutdown (SIGINT), waiting until every server process has exited.
//   Restart(): stops (if running) and starts again on the same data directory and port; after
//              Kill() that runs PostgreSQL's crash recovery.
// Both wait until the server's last process has closed its end of the log pipe (so the port,
// the shared memory and postmaster.pid are free), with a bounded deadline.
// No GTEST_SKIP: missing binaries are a FailedPrecondition the test reports.
// Thread-safety: not thread-safe; one test thread drives it. The destructor stops the server.
#ifndef DAPQ_TESTS_UTIL_POSTGRES_SERVER_H_
#define DAPQ_TESTS_UTIL_POSTGRES_SERVER_H_

#include <sys/types.h>

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace dapq::testing {

class PostgresServer {
 public:
  // `name` names the temp directory (unique per process with a counter).
  static absl::StatusOr<std::unique_ptr<PostgresServer>> Start(const std::string& name = "pg");
  ~PostgresServer();
  PostgresServer(const PostgresServer&) = delete;
  PostgresServer& operator=(const PostgresServer&) = delete;

  int port() const { return port_; }
  const std::string& dir() const { return dir_; }
  // "postgres://postgres@127.0.0.1:PORT/postgres", or another database of the cluster.
  std::string url(const std::string& database = "postgres") const;
  bool running() const;

  absl::Status Kill();
  absl::Status Stop();
  absl::Status Restart();

  // What the server logged so far (the current or last run), for failure messages.
  std::string log() const;

  struct Process;  // one run of the postmaster (defined in the .cc)

 private:
  PostgresServer() = default;
  absl::Status Launch();
  // Waits for the pipe to close (every server process gone), then reaps the postmaster.
  absl::Status WaitGone();

  std::string bin_dir_;  // holds initdb and postgres
  std::string dir_;      // owned by the server's user; the socket lives here
  std::string data_dir_;
  int port_ = 0;
  uid_t uid_ = 0;  // the user the server runs as (0: as ourselves)
  gid_t gid_ = 0;
  std::unique_ptr<Process> process_;
  std::string last_log_;  // of the last run, once it has ended
};

}  // namespace dapq::testing

#endif  // DAPQ_TESTS_UTIL_POSTGRES_SERVER_H_
