// File: common/ready_fd.h
// Readiness reports of the long-running processes: started with `--ready_fd N` (by `dapq serve`
// or a test, through launcher/child_process.h), a process writes one line to descriptor N once it
// serves — the ports it actually bound — and closes it. The parent reads the line instead of
// guessing free ports or polling.
#ifndef DAPQ_COMMON_READY_FD_H_
#define DAPQ_COMMON_READY_FD_H_

#include <unistd.h>

#include <string>

namespace dapq {

// Writes `line` + '\n' to `fd` (>= 0) and closes it; a no-op for fd < 0.
inline void ReportReady(int fd, const std::string& line) {
  if (fd < 0) return;
  const std::string text = line + "\n";
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = write(fd, text.data() + done, text.size() - done);
    if (n <= 0) break;
    done += static_cast<size_t>(n);
  }
  close(fd);
}

}  // namespace dapq

#endif  // DAPQ_COMMON_READY_FD_H_
