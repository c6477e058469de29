// File: tests/util/fork_ranks.h
// ForkRanks: runs one body per rank in forked child processes, for real multi-process tests
// (Gloo collectives over loopback, multi-process engines). Call it at the start of a test, before
// the test creates threads of its own (fork copies only the calling thread). Each child runs
// body(rank), writes the returned status to <dir>/rank<r>.status and _exits (0 when OK); the
// parent waits for every child. A watchdog alarm kills a child that hangs, so a test fails
// instead of blocking forever. Children report through files (WriteBytes / ReadBytes), never
// through gtest assertions, which would be lost with the child.
// Header-only; thread-compatible.
#ifndef DAPQ_TESTS_UTIL_FORK_RANKS_H_
#define DAPQ_TESTS_UTIL_FORK_RANKS_H_

#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace dapq::testing {

struct RankOutcome {
  int rank = 0;
  bool exited = false;  // exited normally (else killed by `signal`)
  int exit_code = -1;
  int signal = 0;
  std::string status;  // the body's status as text; empty when the child wrote none
  bool ok() const { return exited && exit_code == 0; }
  std::string DebugString() const {
    return absl::StrCat(
        "rank ", rank,
        exited ? absl::StrCat(" exited ", exit_code) : absl::StrCat(" killed by signal ", signal),
        ": ", status.empty() ? "(no status)" : status);
  }
};

inline bool WriteBytes(const std::string& path, const void* data, size_t bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(static_cast<const char*>(data), static_cast<std::streamsize>(bytes));
  return static_cast<bool>(out);
}

inline std::string ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

template <typename T>
bool WriteVector(const std::string& path, const std::vector<T>& v) {
  return WriteBytes(path, v.data(), v.size() * sizeof(T));
}

template <typename T>
std::vector<T> ReadVector(const std::string& path) {
  const std::string bytes = ReadBytes(path);
  std::vector<T> v(bytes.size() / sizeof(T));
  if (!v.empty()) std::memcpy(v.data(), bytes.data(), v.size() * sizeof(T));
  return v;
}

// Forks `size` children running body(rank); `parent_after_fork` (optional) runs in the parent
// once every child has started (e.g. to compute a reference meanwhile, or close pipe ends).
// Returns one outcome per rank, in rank order.
inline std::vector<RankOutcome> ForkRanks(const std::string& dir, int size,
                                          const std::function<absl::Status(int rank)>& body,
                                          const std::function<void()>& parent_after_fork = nullptr,
                                          int watchdog_seconds = 120) {
  std::fflush(nullptr);  // no buffered output duplicated into the children
  std::vector<pid_t> pids(size, -1);
  for (int r = 0; r < size; ++r) {
    const pid_t pid = fork();
    if (pid == 0) {
      alarm(watchdog_seconds);
      const absl::Status s = body(r);
      const std::string text = s.ok() ? "OK" : s.ToString();
      WriteBytes(absl::StrCat(dir, "/rank", r, ".status"), text.data(), text.size());
      std::fflush(nullptr);
      _exit(s.ok() ? 0 : 1);
    }
    pids[r] = pid;
  }
  if (parent_after_fork) parent_after_fork();
  std::vector<RankOutcome> outcomes(size);
  for (int r = 0; r < size; ++r) {
    RankOutcome& o = outcomes[r];
    o.rank = r;
    if (pids[r] < 0) {
      o.status = "fork failed";
      continue;
    }
    int wstatus = 0;
    pid_t waited;
    do {
      waited = waitpid(pids[r], &wstatus, 0);
    } while (waited < 0 && errno == EINTR);
    if (waited < 0) {
      o.status = "waitpid failed";
      continue;
    }
    o.exited = WIFEXITED(wstatus);
    o.exit_code = o.exited ? WEXITSTATUS(wstatus) : -1;
    o.signal = WIFSIGNALED(wstatus) ? WTERMSIG(wstatus) : 0;
    o.status = ReadBytes(absl::StrCat(dir, "/rank", r, ".status"));
  }
  return outcomes;
}

}  // namespace dapq::testing

#endif  // DAPQ_TESTS_UTIL_FORK_RANKS_H_
