// CPU launchers: run single-source kernels (framework/kernels/) over the thread pool. They mirror
// the CUDA launchers (framework/cuda/launch.cuh) one for one, so an op reads the same on both
// backends:
//   launch_elements(n, grain, f)            f(i) for i in [0, n)
//   launch_rows(rows, grain, f)             f(r, row) for every row, r a kern::SerialRow
//   launch_segments(rows, S, f)             rows cut into S contiguous runs s = [begin, end):
//                                           f(r, s, begin, end); a run owns a partial result
//                                           (e.g. a weight gradient) that is reduced afterwards in
//                                           run order, so the sum does not depend on timing
// `grain` is the fewest items a thread takes (small rows want more of them per thread).
#pragma once
#include <cstdint>

#include "framework/kernels/row.h"
#include "framework/threads.h"

namespace moe {

template <class F>
void launch_elements(int64_t n, int64_t grain, F&& f) {
  parallel_for(n, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) f(i);
  }, grain);
}

template <class F>
void launch_rows(int64_t rows, int64_t grain, F&& f) {
  parallel_for(rows, [&](int64_t r0, int64_t r1) {
    kern::SerialRow r;
    for (int64_t row = r0; row < r1; ++row) f(r, row);
  }, grain);
}

// Run s of S covers rows [rows*s/S, rows*(s+1)/S).
inline int64_t segment_begin(int64_t rows, int64_t S, int64_t s) { return rows * s / S; }

template <class F>
void launch_segments(int64_t rows, int64_t S, F&& f) {
  parallel_for(S, [&](int64_t s0, int64_t s1) {
    kern::SerialRow r;
    for (int64_t s = s0; s < s1; ++s) f(r, s, segment_begin(rows, S, s), segment_begin(rows, S, s + 1));
  });
}

}  // namespace moe
