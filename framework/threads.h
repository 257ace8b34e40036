// A small fork-join thread pool. parallel_for splits [0, n) into one contiguous chunk per thread;
// the calling thread runs chunk 0, so with 1 thread there is no synchronisation at all.
// OpenBLAS runs single-threaded inside each chunk (set once in set_num_threads): we decide the
// split, so BLAS threads and ours never fight over the cores.
#pragma once
#include <cstdint>
#include "framework/function_ref.h"

namespace moe {

void set_num_threads(int n);  // 0 = hardware concurrency (or $MOE_NUM_THREADS)
int num_threads();
// Whether the calling thread is running a chunk of a parallel_for (nested calls run inline).
bool in_parallel_region();

// While alive, parallel_for runs inline on the calling thread: for work too small to split (a
// decode step of one sequence), where waking the pool costs more than it saves.
class SerialScope {
 public:
  SerialScope();
  ~SerialScope();
  SerialScope(const SerialScope&) = delete;
  SerialScope& operator=(const SerialScope&) = delete;

 private:
  bool was_ = false;
};

// fn(begin, end) on disjoint chunks covering [0, n); chunks hold at least `grain` items.
void parallel_for(int64_t n, FunctionRef<void(int64_t, int64_t)> fn, int64_t grain = 1);

}  // namespace moe
