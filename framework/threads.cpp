#include "framework/threads.h"

#include <cblas.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

namespace moe {
namespace {

// True while this thread runs a chunk of a parallel_for: a nested parallel_for (or threaded gemm)
// then runs inline on this thread instead of waiting for workers that are all busy.
thread_local bool t_in_parallel = false;

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

struct ParallelRegion {
  bool saved = t_in_parallel;
  ParallelRegion() { t_in_parallel = true; }
  ~ParallelRegion() { t_in_parallel = saved; }
};

// Waits until ready() holds: first by spinning for up to kSpin (a parallel_for is typically followed
// by the next within microseconds, and a futex sleep and wake-up costs tens of microseconds on a
// virtual machine, more than many of the ops take), then by sleeping on cv under mu. The waker
// changes the state ready() reads, then calls wake(): it takes the mutex only when someone sleeps.
// Both sides use sequentially consistent atomics (the state, and sleepers), so either the waker
// sees the sleeper or the sleeper sees the new state: no wake-up is lost.
constexpr auto kSpin = std::chrono::microseconds(50);

template <class Ready>
void spin_then_wait(Ready ready, std::mutex& mu, std::condition_variable& cv, std::atomic<int>& sleepers) {
  const auto until = std::chrono::steady_clock::now() + kSpin;
  for (int i = 1; !ready(); ++i) {
    cpu_relax();
    if (i % 64 == 0 && std::chrono::steady_clock::now() > until) {
      std::unique_lock<std::mutex> lk(mu);
      sleepers.fetch_add(1);
      cv.wait(lk, ready);
      sleepers.fetch_sub(1);
      return;
    }
  }
}

void wake(std::mutex& mu, std::condition_variable& cv, std::atomic<int>& sleepers) {
  if (sleepers.load() == 0) return;
  std::lock_guard<std::mutex> lk(mu);  // a sleeper between its check and its wait holds mu
  cv.notify_all();
}

class Pool {
 public:
  explicit Pool(int n) : n_(std::max(1, n)) {
    for (int i = 1; i < n_; ++i) workers_.emplace_back([this, i] { loop(i); });
  }
  ~Pool() {
    stop_.store(true);
    generation_.fetch_add(1);
    wake(mu_, cv_, sleeping_workers_);
    for (auto& t : workers_) t.join();
  }
  int size() const { return n_; }

  void run(int chunks, FunctionRef<void(int)> task) {
    if (chunks <= 1) {
      task(0);
      return;
    }
    // Every worker acknowledges every generation (pending_ counts all of them, not only those
    // with a chunk), so none still reads task_ or chunks_ when the next run writes them.
    task_ = &task;
    chunks_ = chunks;
    pending_.store(n_ - 1);
    generation_.fetch_add(1);
    wake(mu_, cv_, sleeping_workers_);
    {
      ParallelRegion region;
      task(0);
    }
    spin_then_wait([&] { return pending_.load() == 0; }, mu_, done_cv_, sleeping_caller_);
    task_ = nullptr;
  }

 private:
  void loop(int id) {
    uint64_t seen = 0;
    for (;;) {
      spin_then_wait([&] { return generation_.load() != seen; }, mu_, cv_, sleeping_workers_);
      seen = generation_.load();
      if (stop_.load()) return;
      if (id < chunks_) {
        ParallelRegion region;
        (*task_)(id);
      }
      if (pending_.fetch_sub(1) == 1) wake(mu_, done_cv_, sleeping_caller_);
    }
  }

  int n_;
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable cv_, done_cv_;
  std::atomic<int> sleeping_workers_{0}, sleeping_caller_{0};
  const FunctionRef<void(int)>* task_ = nullptr;
  int chunks_ = 0;
  std::atomic<int> pending_{0};
  std::atomic<uint64_t> generation_{0};
  std::atomic<bool> stop_{false};
};

int default_threads() {
  if (const char* env = std::getenv("MOE_NUM_THREADS")) {
    int n = std::atoi(env);
    if (n > 0) return n;
  }
  return std::max(1u, std::thread::hardware_concurrency());
}

std::unique_ptr<Pool>& pool() {
  static std::unique_ptr<Pool> p;
  return p;
}

Pool& get_pool() {
  if (!pool()) set_num_threads(0);
  return *pool();
}

}  // namespace

void set_num_threads(int n) {
  if (n <= 0) n = default_threads();
  openblas_set_num_threads(1);
  if (pool() && pool()->size() == n) return;
  pool() = std::make_unique<Pool>(n);
}

int num_threads() { return get_pool().size(); }

bool in_parallel_region() { return t_in_parallel; }

SerialScope::SerialScope() : was_(t_in_parallel) { t_in_parallel = true; }
SerialScope::~SerialScope() { t_in_parallel = was_; }

void parallel_for(int64_t n, FunctionRef<void(int64_t, int64_t)> fn, int64_t grain) {
  if (n <= 0) return;
  if (t_in_parallel) {
    fn(0, n);
    return;
  }
  Pool& p = get_pool();
  int64_t chunks = std::min<int64_t>(p.size(), std::max<int64_t>(1, n / std::max<int64_t>(1, grain)));
  if (chunks <= 1) {
    fn(0, n);
    return;
  }
  p.run(int(chunks), [&](int c) {
    int64_t begin = n * c / chunks, end = n * (c + 1) / chunks;
    if (begin < end) fn(begin, end);
  });
}

}  // namespace moe
