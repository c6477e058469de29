// File: common/logging.h
// Minimal leveled logging to stderr (Abseil 20220623 has no absl/log).
// Usage: DAPQ_LOG(INFO) << "loaded " << n << " tensors";  Thread-safe: one write per message.
#ifndef DAPQ_COMMON_LOGGING_H_
#define DAPQ_COMMON_LOGGING_H_

#include <sstream>

namespace dapq {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

// Messages below this level are dropped. Default kInfo. Set once at startup (main.cc).
void SetMinLogLevel(LogLevel level);
LogLevel MinLogLevel();

namespace internal {
class LogMessage {
 public:
  LogMessage(LogLevel level, const char* file, int line);
  ~LogMessage();
  std::ostream& stream() { return stream_; }

 private:
  LogLevel level_;
  std::ostringstream stream_;
};
}  // namespace internal

}  // namespace dapq

#define DAPQ_LOG_LEVEL_DEBUG ::dapq::LogLevel::kDebug
#define DAPQ_LOG_LEVEL_INFO ::dapq::LogLevel::kInfo
#define DAPQ_LOG_LEVEL_WARNING ::dapq::LogLevel::kWarning
#define DAPQ_LOG_LEVEL_ERROR ::dapq::LogLevel::kError

#define DAPQ_LOG(level)                                   \
  switch (0)                                              \
  case 0:                                                 \
  default:                                                \
    if (DAPQ_LOG_LEVEL_##level < ::dapq::MinLogLevel()) { \
    } else                                                \
      ::dapq::internal::LogMessage(DAPQ_LOG_LEVEL_##level, __FILE__, __LINE__).stream()

#endif  // DAPQ_COMMON_LOGGING_H_
