// File: common/mutex.h
// dapq::Mutex / MutexLock / CondVar: std::mutex and std::condition_variable_any behind
// Abseil's thread-safety annotations (ABSL_GUARDED_BY etc. work on them). We use these instead
// of absl::Mutex where ThreadSanitizer must see the synchronisation: Debian's Abseil is not
// built with TSAN, so absl::Mutex's lock/unlock are invisible to it and every guarded access
// would be reported as a race.
// Thread-safety: a Mutex is the synchronisation primitive; CondVar waits release it.
#ifndef DAPQ_COMMON_MUTEX_H_
#define DAPQ_COMMON_MUTEX_H_

#include <chrono>
#include <condition_variable>
#include <mutex>

#include "absl/base/thread_annotations.h"

namespace dapq {

class ABSL_LOCKABLE Mutex {
 public:
  void Lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() { m_.lock(); }
  void Unlock() ABSL_UNLOCK_FUNCTION() { m_.unlock(); }
  // For std::condition_variable_any.
  void lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() { m_.lock(); }
  void unlock() ABSL_UNLOCK_FUNCTION() { m_.unlock(); }

 private:
  std::mutex m_;
};

class ABSL_SCOPED_LOCKABLE MutexLock {
 public:
  explicit MutexLock(Mutex* mu) ABSL_EXCLUSIVE_LOCK_FUNCTION(mu) : mu_(mu) { mu_->Lock(); }
  ~MutexLock() ABSL_UNLOCK_FUNCTION() { mu_->Unlock(); }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

 private:
  Mutex* const mu_;
};

class CondVar {
 public:
  // REQUIRES: *mu held. Returns with *mu held once pred() is true.
  template <typename Pred>
  void Wait(Mutex* mu, Pred pred) {
    cv_.wait(*mu, pred);
  }
  // REQUIRES: *mu held. Waits until pred() or `timeout` passed; returns pred().
  template <typename Pred>
  bool WaitFor(Mutex* mu, std::chrono::milliseconds timeout, Pred pred) {
    return cv_.wait_for(*mu, timeout, pred);
  }
  void SignalAll() { cv_.notify_all(); }

 private:
  std::condition_variable_any cv_;
};

}  // namespace dapq

#endif  // DAPQ_COMMON_MUTEX_H_
