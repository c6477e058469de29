// File: kernels/ref/parallel_for.cc
// The pool: workers wait on a condition variable for a generation number; a loop hands each
// worker its range and waits for a countdown.
#include "kernels/ref/parallel_for.h"

#include <cblas.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

namespace dapq::kernels::ref {
namespace {

class Pool {
 public:
  explicit Pool(int threads) : threads_(std::max(1, threads)) {
    for (int i = 1; i < threads_; ++i) workers_.emplace_back([this, i] { Work(i); });
  }
  ~Pool() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
      ++generation_;
    }
    wake_.notify_all();
    for (auto& t : workers_) t.join();
  }

  int threads() const { return threads_; }
  int limit() const { return limit_.load(std::memory_order_relaxed); }
  void set_limit(int limit) {
    limit_.store(std::clamp(limit, 1, threads_), std::memory_order_relaxed);
  }

  // false when another loop holds the pool.
  bool TryRun(int n, const std::function<void(int, int)>& fn) {
    std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
    if (!busy.owns_lock()) return false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      fn_ = &fn;
      n_ = n;
      active_ = limit();
      pending_ = threads_ - 1;
      ++generation_;
    }
    wake_.notify_all();
    RunShare(0, n, fn);
    std::unique_lock<std::mutex> lock(mu_);
    done_.wait(lock, [this] { return pending_ == 0; });
    fn_ = nullptr;
    return true;
  }

 private:
  // Workers past the active count (set_limit) get empty shares.
  void RunShare(int index, int n, const std::function<void(int, int)>& fn) const {
    if (index >= active_) return;
    const long begin = static_cast<long>(n) * index / active_;
    const long end = static_cast<long>(n) * (index + 1) / active_;
    if (begin < end) fn(static_cast<int>(begin), static_cast<int>(end));
  }

  void Work(int index) {
    uint64_t seen = 0;
    while (true) {
      const std::function<void(int, int)>* fn;
      int n;
      {
        std::unique_lock<std::mutex> lock(mu_);
        wake_.wait(lock, [&] { return generation_ != seen; });
        seen = generation_;
        if (stop_) return;
        fn = fn_;
        n = n_;
      }
      RunShare(index, n, *fn);
      std::lock_guard<std::mutex> lock(mu_);
      if (--pending_ == 0) done_.notify_one();
    }
  }

  const int threads_;
  std::atomic<int> limit_{threads_};
  int active_ = 1;   // threads sharing the current loop (set under mu_ before the wake-up)
  std::mutex busy_;  // one loop at a time
  std::mutex mu_;
  std::condition_variable wake_, done_;
  uint64_t generation_ = 0;
  bool stop_ = false;
  const std::function<void(int, int)>* fn_ = nullptr;
  int n_ = 0;
  int pending_ = 0;
  std::vector<std::thread> workers_;
};

Pool& ThePool() {
  static Pool* pool = new Pool(std::max(1, openblas_get_num_threads()));  // never destroyed
  return *pool;
}

}  // namespace

int KernelThreads() { return ThePool().limit(); }

void SetKernelThreads(int threads) { ThePool().set_limit(threads); }

void ParallelFor(int n, const std::function<void(int, int)>& fn) {
  if (n <= 0) return;
  Pool& pool = ThePool();
  if (pool.limit() == 1 || n == 1 || !pool.TryRun(n, fn)) fn(0, n);
}

}  // namespace dapq::kernels::ref
