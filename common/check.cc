// File: common/check.cc
// Implementation of the CHECK failure path: print file:line, the condition and the message, abort.
#include "common/check.h"

#include <cstdio>
#include <cstdlib>

namespace dapq::internal {

CheckFailure::CheckFailure(const char* file, int line, const char* condition) {
  stream_ << file << ":" << line << ": DAPQ_CHECK failed: " << condition << " ";
}

CheckFailure::~CheckFailure() {
  std::fprintf(stderr, "%s\n", stream_.str().c_str());
  std::fflush(stderr);
  std::abort();
}

}  // namespace dapq::internal
