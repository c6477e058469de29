// File: common/check.h
// DAPQ_CHECK / DAPQ_DCHECK: abort on programmer errors (never on input, RPC or device results).
// Usage: DAPQ_CHECK(n > 0) << "n=" << n;  Statement-safe (switch form, no dangling else).
#ifndef DAPQ_COMMON_CHECK_H_
#define DAPQ_COMMON_CHECK_H_

#include <sstream>

namespace dapq::internal {

// Collects a message and aborts the process in its destructor.
class CheckFailure {
 public:
  CheckFailure(const char* file, int line, const char* condition);
  [[noreturn]] ~CheckFailure();
  std::ostream& stream() { return stream_; }

 private:
  std::ostringstream stream_;
};

}  // namespace dapq::internal

#define DAPQ_CHECK(cond) \
  switch (0)             \
  case 0:                \
  default:               \
    if (cond) {          \
    } else               \
      ::dapq::internal::CheckFailure(__FILE__, __LINE__, #cond).stream()

#ifdef NDEBUG
#define DAPQ_DCHECK(cond) \
  switch (0)              \
  case 0:                 \
  default:                \
    if (true) {           \
    } else                \
      ::dapq::internal::CheckFailure(__FILE__, __LINE__, #cond).stream()
#else
#define DAPQ_DCHECK(cond) DAPQ_CHECK(cond)
#endif

#endif  // DAPQ_COMMON_CHECK_H_
