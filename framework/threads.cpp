#include "framework/threads.h"

#include <cblas.h>

#include <algorithm>
#include <atomic>
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

struct ParallelRegion {
  bool saved = t_in_parallel;
  ParallelRegion() { t_in_parallel = true; }
  ~ParallelRegion() { t_in_parallel = saved; }
};

class Pool {
 public:
  explicit Pool(int n) : n_(std::max(1, n)) {
    for (int i = 1; i < n_; ++i) workers_.emplace_back([this, i] { loop(i); });
  }
  ~Pool() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      stop_ = true;
      ++generation_;
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
  }
  int size() const { return n_; }

  void run(int chunks, FunctionRef<void(int)> task) {
    if (chunks <= 1) {
      task(0);
      return;
    }
    {
      std::lock_guard<std::mutex> lk(mu_);
      task_ = &task;
      chunks_ = chunks;
      pending_ = chunks - 1;
      ++generation_;
    }
    cv_.notify_all();
    {
      ParallelRegion region;
      task(0);
    }
    std::unique_lock<std::mutex> lk(mu_);
    done_cv_.wait(lk, [&] { return pending_ == 0; });
    task_ = nullptr;
  }

 private:
  void loop(int id) {
    uint64_t seen = 0;
    for (;;) {
      const FunctionRef<void(int)>* task;
      int chunks;
      {
        std::unique_lock<std::mutex> lk(mu_);
        cv_.wait(lk, [&] { return generation_ != seen; });
        seen = generation_;
        if (stop_) return;
        task = task_;
        chunks = chunks_;
      }
      if (id < chunks) {
        ParallelRegion region;
        (*task)(id);
        std::lock_guard<std::mutex> lk(mu_);
        if (--pending_ == 0) done_cv_.notify_one();
      }
    }
  }

  int n_;
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable cv_, done_cv_;
  const FunctionRef<void(int)>* task_ = nullptr;
  int chunks_ = 0, pending_ = 0;
  uint64_t generation_ = 0;
  bool stop_ = false;
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
