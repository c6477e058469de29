// File: common/logging.cc
// Leveled stderr logging: one fwrite per message so concurrent lines do not interleave.
#include "common/logging.h"

#include <atomic>
#include <cstdio>
#include <cstring>

namespace dapq {
namespace {
std::atomic<int> g_min_level{static_cast<int>(LogLevel::kInfo)};
constexpr const char* kLevelNames[] = {"D", "I", "W", "E"};
}  // namespace

void SetMinLogLevel(LogLevel level) { g_min_level.store(static_cast<int>(level)); }
LogLevel MinLogLevel() { return static_cast<LogLevel>(g_min_level.load()); }

namespace internal {
LogMessage::LogMessage(LogLevel level, const char* file, int line) : level_(level) {
  const char* base = std::strrchr(file, '/');
  stream_ << kLevelNames[static_cast<int>(level)] << " " << (base ? base + 1 : file) << ":" << line
          << "] ";
}

LogMessage::~LogMessage() {
  stream_ << "\n";
  const std::string s = stream_.str();
  std::fwrite(s.data(), 1, s.size(), stderr);
  (void)level_;
}
}  // namespace internal

}  // namespace dapq
