// Row moves and sums of the compute backends (framework/backend.h), single source: the CUDA
// backend runs these per element or per column; tests/unit checks them against plain loops.
// Every function writes one output element (or one column), reading its inputs in a fixed order,
// so the result does not depend on how a launcher spreads the work.
#pragma once
#include <stdint.h>

#include "framework/kernels/hd.h"

namespace moe::kern {

// Element c of row r of dst[rows, cols] (row stride ld_dst) = element c of src row r / src_repeat.
MOE_HD inline void copy_rows_element(float* dst, int64_t ld_dst, const float* src, int64_t ld_src, int64_t src_repeat,
                                     int64_t r, int64_t c) {
  dst[r * ld_dst + c] = src[(r / src_repeat) * ld_src + c];
}

// Element c of dst row r = sum over j < group, in j order, of element c of src row r * group + j
// (the CPU backend's order: start at 0, add each row).
MOE_HD inline void sum_row_groups_element(float* dst, int64_t ld_dst, const float* src, int64_t ld_src, int64_t group,
                                          int64_t r, int64_t c) {
  float s = 0.f;
  for (int64_t j = 0; j < group; ++j) s += src[(r * group + j) * ld_src + c];
  dst[r * ld_dst + c] = s;
}

// Element i of out[N, D] = table[ids[i / D], i % D].
MOE_HD inline void embedding_forward_element(float* out, const int32_t* ids, const float* table, int64_t D, int64_t i) {
  out[i] = table[int64_t(ids[i / D]) * D + i % D];
}

// Columns [d0, d1) of the embedding's gradient: dtable[ids[n], d] += dout[n, d] for n = 0 .. N-1
// in order. One walker per column range owns every dtable[:, d0:d1], so repeated ids need no
// atomics and each element's sum runs in token order, whatever the ranges (the GPU walks one
// column per thread, the CPU a contiguous range per task, reading rows along memory).
MOE_HD inline void embedding_backward_columns(float* dtable, const int32_t* ids, const float* dout, int64_t N,
                                              int64_t D, int64_t d0, int64_t d1) {
  for (int64_t n = 0; n < N; ++n)
    for (int64_t d = d0; d < d1; ++d) dtable[int64_t(ids[n]) * D + d] += dout[n * D + d];
}

// Sum of x[begin, end) (or of its squares) in f64 over the lanes of a row policy (row.h): each
// lane sums its stride in order, then r.sum combines the lanes in a fixed order. A backend cuts
// x into a fixed number of segments and adds the segments' sums in order, so the result depends
// only on n, the segment count and the lane width.
template <class R>
MOE_HD inline double sum_span_f64(R& r, const float* x, int64_t begin, int64_t end, bool squares) {
  double s = 0;
  for (int64_t i = begin + r.lane(); i < end; i += r.width()) {
    const double v = x[i];
    s += squares ? v * v : v;
  }
  return r.sum(s);
}

}  // namespace moe::kern
