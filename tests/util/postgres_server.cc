// File: tests/util/postgres_server.cc
// initdb + postgres as child processes (as the `postgres` user when we are root), readiness and
// shutdown from the server's stderr pipe, a crash as SIGKILL to the postmaster and its children.
#include "tests/util/postgres_server.h"

#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/mutex.h"
#include "tests/util/redis_server.h"
#include "tests/util/test_paths.h"

namespace dapq::testing {
namespace {

constexpr char kReadyLine[] = "database system is ready to accept connections";
constexpr std::chrono::milliseconds kStartTimeout(60'000);  // includes crash recovery
constexpr std::chrono::milliseconds kStopTimeout(30'000);
constexpr size_t kMaxLogBytes = 1 << 20;  // kept in memory; the file has everything

bool IsExecutable(const std::string& path) { return ::access(path.c_str(), X_OK) == 0; }

// The directory holding both initdb and postgres: PATH first, then Debian's versioned dir.
std::string FindBinDir() {
  if (const char* path = std::getenv("PATH"); path != nullptr) {
    for (absl::string_view dir : absl::StrSplit(path, ':', absl::SkipEmpty())) {
      std::string d(dir);
      if (IsExecutable(d + "/initdb") && IsExecutable(d + "/postgres")) return d;
    }
  }
  std::string debian = "/usr/lib/postgresql/15/bin";
  if (IsExecutable(debian + "/initdb") && IsExecutable(debian + "/postgres")) return debian;
  return "";
}

// Forks and execs `args` with stdout and stderr on `out_fd` and stdin from /dev/null, in `cwd`,
// as uid/gid when uid != 0. Returns the pid, or -1.
pid_t Spawn(std::vector<std::string> args, int out_fd, const std::string& cwd, uid_t uid,
            gid_t gid) {
  std::vector<char*> argv;
  argv.reserve(args.size() + 1);
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const pid_t pid = ::fork();
  if (pid != 0) return pid;
  // Child: only async-signal-safe calls until exec.
  if (uid != 0) {
    if (::setgroups(1, &gid) != 0 || ::setgid(gid) != 0 || ::setuid(uid) != 0) ::_exit(126);
  }
  if (::chdir(cwd.c_str()) != 0) ::_exit(126);
  const int null_fd = ::open("/dev/null", O_RDONLY);
  if (null_fd >= 0) ::dup2(null_fd, STDIN_FILENO);
  ::dup2(out_fd, STDOUT_FILENO);
  ::dup2(out_fd, STDERR_FILENO);
  ::execv(argv[0], argv.data());
  ::_exit(127);
}

// Runs `args` to completion; Internal with its output unless it exits 0.
absl::Status RunToCompletion(const std::vector<std::string>& args, const std::string& cwd,
                             uid_t uid, gid_t gid) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return absl::InternalError("pipe2 failed");
  const pid_t pid = Spawn(args, fds[1], cwd, uid, gid);
  ::close(fds[1]);
  if (pid < 0) {
    ::close(fds[0]);
    return absl::InternalError("fork failed");
  }
  std::string out;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::read(fds[0], buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fds[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return absl::InternalError(absl::StrCat(args[0], " failed (wait status ", status, "): ", out));
  }
  return absl::OkStatus();
}

// Pids whose parent is `parent` (from /proc/<pid>/stat).
std::vector<pid_t> ChildrenOf(pid_t parent) {
  std::vector<pid_t> children;
  DIR* proc = ::opendir("/proc");
  if (proc == nullptr) return children;
  while (dirent* e = ::readdir(proc)) {
    char* end = nullptr;
    const long pid = std::strtol(e->d_name, &end, 10);
    if (pid <= 0 || *end != '\0') continue;
    std::ifstream in(absl::StrCat("/proc/", pid, "/stat"));
    std::string stat((std::istreambuf_iterator<char>(in)), {});
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
    const size_t close = stat.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream rest(stat.substr(close + 1));
    std::string state;
    long ppid = 0;
    if (rest >> state >> ppid && ppid == parent) children.push_back(static_cast<pid_t>(pid));
  }
  ::closedir(proc);
  return children;
}

}  // namespace

// One run of the postmaster and the thread that drains its stderr.
struct PostgresServer::Process {
  pid_t pid = -1;
  int fd = -1;      // read end of the server's stderr pipe
  int log_fd = -1;  // <dir>/postgres.log
  std::thread drainer;
  mutable Mutex mu;
  CondVar cv;
  std::string log ABSL_GUARDED_BY(mu);
  bool ready ABSL_GUARDED_BY(mu) = false;
  bool eof ABSL_GUARDED_BY(mu) = false;  // every holder of the pipe's write end is gone

  void Drain() {
    char buf[4096];
    for (;;) {
      const ssize_t n = ::read(fd, buf, sizeof(buf));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      if (log_fd >= 0 && ::write(log_fd, buf, static_cast<size_t>(n)) < 0) {
        ::close(log_fd);  // keep draining even when the file cannot be written
        log_fd = -1;
      }
      MutexLock lock(&mu);
      log.append(buf, static_cast<size_t>(n));
      if (!ready && log.find(kReadyLine) != std::string::npos) ready = true;
      if (log.size() > kMaxLogBytes) log.erase(0, log.size() - kMaxLogBytes / 2);
      cv.SignalAll();
    }
    MutexLock lock(&mu);
    eof = true;
    cv.SignalAll();
  }
};

absl::StatusOr<std::unique_ptr<PostgresServer>> PostgresServer::Start(const std::string& name) {
  static std::atomic<int> counter{0};
  auto server = std::unique_ptr<PostgresServer>(new PostgresServer());
  server->bin_dir_ = FindBinDir();
  if (server->bin_dir_.empty()) {
    return absl::FailedPreconditionError(
        "PostgreSQL server binaries (initdb, postgres) not found on PATH or in "
        "/usr/lib/postgresql/15/bin (scripts/setup.sh installs the postgresql package)");
  }
  server->dir_ = MakeTempDir(absl::StrCat(name, "_", counter++));
  server->data_dir_ = server->dir_ + "/data";
  if (::geteuid() == 0) {
    // PostgreSQL refuses to run as root: hand the directory to the postgres user.
    const passwd* pw = ::getpwnam("postgres");
    if (pw == nullptr) {
      return absl::FailedPreconditionError(
          "running as root, and there is no `postgres` user to run PostgreSQL as (Debian's "
          "postgresql package creates it)");
    }
    server->uid_ = pw->pw_uid;
    server->gid_ = pw->pw_gid;
    if (::chown(server->dir_.c_str(), server->uid_, server->gid_) != 0 ||
        ::chmod(server->dir_.c_str(), 0755) != 0) {
      return absl::InternalError(
          absl::StrCat("chown ", server->dir_, " to postgres: ", std::strerror(errno)));
    }
  }
  // --no-sync: skips only initdb's sync of the fresh cluster; the server runs with fsync on.
  absl::Status init =
      RunToCompletion({server->bin_dir_ + "/initdb", "-D", server->data_dir_, "-U", "postgres",
                       "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"},
                      server->dir_, server->uid_, server->gid_);
  if (!init.ok()) return init;
  // A port that was free a moment ago may be taken by now (tests run in parallel): another.
  for (int tries = 0;; ++tries) {
    absl::StatusOr<int> port = PickFreePort();
    if (!port.ok()) return port.status();
    server->port_ = *port;
    absl::Status launched = server->Launch();
    if (launched.ok()) return server;
    if (tries == 4 || !absl::StrContains(launched.message(), "could not bind")) return launched;
  }
}

absl::Status PostgresServer::Launch() {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return absl::InternalError("pipe2 failed");
  auto p = std::make_unique<Process>();
  p->fd = fds[0];
  p->log_fd =
      ::open((dir_ + "/postgres.log").c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  p->pid = Spawn({bin_dir_ + "/postgres",
                  "-D",
                  data_dir_,
                  "-p",
                  std::to_string(port_),
                  "-c",
                  "listen_addresses=127.0.0.1",
                  "-c",
                  "unix_socket_directories=" + dir_,
                  "-c",
                  "fsync=on",
                  "-c",
                  "synchronous_commit=on",
                  "-c",
                  "full_page_writes=on",
                  "-c",
                  "shared_buffers=16MB",
                  "-c",
                  "max_connections=50",
                  "-c",
                  "wal_level=minimal",
                  "-c",
                  "max_wal_senders=0",
                  "-c",
                  "logging_collector=off",
                  "-c",
                  "huge_pages=off",
                  "-c",
                  "lc_messages=C",
                  "-c",
                  "TimeZone=UTC"},
                 fds[1], dir_, uid_, gid_);
  ::close(fds[1]);
  if (p->pid < 0) {
    ::close(p->fd);
    if (p->log_fd >= 0) ::close(p->log_fd);
    return absl::InternalError("fork failed");
  }
  Process* raw = p.get();
  p->drainer = std::thread([raw] { raw->Drain(); });
  process_ = std::move(p);
  bool ready = false, eof = false;
  std::string log;
  {
    MutexLock lock(&raw->mu);
    raw->cv.WaitFor(&raw->mu, kStartTimeout, [&] { return raw->ready || raw->eof; });
    ready = raw->ready;
    eof = raw->eof;
    log = raw->log;
  }
  if (ready) return absl::OkStatus();
  if (!eof) {
    absl::Status killed = Kill();
    return absl::DeadlineExceededError(absl::StrCat("postgres on port ", port_, " not ready in ",
                                                    kStartTimeout.count() / 1000, " s (",
                                                    killed.ToString(), "): ", log));
  }
  WaitGone().IgnoreError();
  return absl::InternalError(absl::StrCat("postgres exited before it was ready: ", log));
}

absl::Status PostgresServer::WaitGone() {
  if (process_ == nullptr) return absl::OkStatus();
  Process* p = process_.get();
  bool gone = false;
  {
    MutexLock lock(&p->mu);
    gone = p->cv.WaitFor(&p->mu, kStopTimeout, [&] { return p->eof; });
  }
  if (!gone) {
    // Something still holds the log pipe: kill the rest and stop draining.
    for (pid_t child : ChildrenOf(p->pid)) ::kill(child, SIGKILL);
    ::kill(p->pid, SIGKILL);
  }
  while (::waitpid(p->pid, nullptr, 0) < 0 && errno == EINTR) {
  }
  p->drainer.join();  // the SIGKILLs above ended any writer left
  {
    MutexLock lock(&p->mu);
    last_log_ = p->log;
  }
  ::close(p->fd);
  if (p->log_fd >= 0) ::close(p->log_fd);
  process_.reset();
  if (!gone) {
    return absl::DeadlineExceededError(absl::StrCat("postgres on port ", port_,
                                                    " did not exit within ",
                                                    kStopTimeout.count() / 1000, " s; killed"));
  }
  return absl::OkStatus();
}

absl::Status PostgresServer::Kill() {
  if (process_ == nullptr) return absl::OkStatus();
  const pid_t pid = process_->pid;
  // Stopped, the postmaster forks no new backends while we collect and kill its children.
  ::kill(pid, SIGSTOP);
  for (pid_t child : ChildrenOf(pid)) ::kill(child, SIGKILL);
  ::kill(pid, SIGKILL);
  return WaitGone();
}

absl::Status PostgresServer::Stop() {
  if (process_ == nullptr) return absl::OkStatus();
  ::kill(process_->pid, SIGINT);  // fast shutdown: ends sessions, checkpoints, exits
  return WaitGone();
}

absl::Status PostgresServer::Restart() {
  if (process_ != nullptr) {
    absl::Status stopped = Stop();
    if (!stopped.ok()) return stopped;
  }
  return Launch();
}

bool PostgresServer::running() const { return process_ != nullptr; }

std::string PostgresServer::url(const std::string& database) const {
  return absl::StrCat("postgres://postgres@127.0.0.1:", port_, "/", database);
}

std::string PostgresServer::log() const {
  if (process_ == nullptr) return last_log_;
  MutexLock lock(&process_->mu);
  return process_->log;
}

PostgresServer::~PostgresServer() {
  Kill().IgnoreError();
  // The cluster is disposable; its log stays beside it for debugging.
  std::error_code ec;
  std::filesystem::remove_all(data_dir_, ec);
}

}  // namespace dapq::testing
