#include "framework/grouped_linear.h"

#include <algorithm>

#include "framework/fp8_rows.h"
#include "framework/threads.h"

namespace moe {
namespace {

// Runs fn(g, row_begin, rows) for each group with rows. Groups are spread over the thread pool in
// contiguous runs of about equal rows (a group goes to the thread its middle row falls in), and
// each group's GEMM runs whole on that thread: one large single-threaded call beats two halves.
template <class F>
void for_each_group(const int64_t* offsets, int64_t G, F&& fn) {
  const int64_t P = offsets[G] - offsets[0];
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(num_threads(), G));
  parallel_for(chunks, [&](int64_t c0, int64_t c1) {
    for (int64_t g = 0; g < G; ++g) {
      if (offsets[g + 1] == offsets[g]) continue;
      const int64_t mid = (offsets[g] + offsets[g + 1]) / 2 - offsets[0];
      const int64_t owner = std::min(chunks - 1, mid * chunks / std::max<int64_t>(P, 1));
      if (owner >= c0 && owner < c1) fn(g, offsets[g], offsets[g + 1] - offsets[g]);
    }
  });
}

}  // namespace

void grouped_linear_forward(float* y, const float* x, const float* const* W, const int64_t* offsets, int64_t G,
                            int64_t in, int64_t out, Precision p) {
  for_each_group(offsets, G, [&](int64_t g, int64_t r0, int64_t n) {
    linear_forward(y + r0 * out, x + r0 * in, W[g], n, in, out, false, p);
  });
}

void grouped_linear_backward(float* dx, float* const* dW, const float* dy, const float* x, const float* const* W,
                             const int64_t* offsets, int64_t G, int64_t in, int64_t out, bool accumulate_dx,
                             Precision p) {
  for_each_group(offsets, G, [&](int64_t g, int64_t r0, int64_t n) {
    if (!dx && !dW[g]) return;  // a group without work (rows another call owns)
    linear_backward(dx ? dx + r0 * in : nullptr, dW[g], dy + r0 * out, x + r0 * in, W[g], n, in, out, accumulate_dx,
                    p);
  });
}

void grouped_linear_forward_bf16(float* y, const uint16_t* x, const float* const* W, const int64_t* offsets,
                                 int64_t G, int64_t in, int64_t out) {
  for_each_group(offsets, G, [&](int64_t g, int64_t r0, int64_t n) {
    linear_forward_bf16(y + r0 * out, x + r0 * in, W[g], n, in, out, false);
  });
}

void grouped_linear_backward_bf16(float* dx, float* const* dW, const float* dy, const uint16_t* x,
                                  const float* const* W, const int64_t* offsets, int64_t G, int64_t in, int64_t out,
                                  bool accumulate_dx) {
  for_each_group(offsets, G, [&](int64_t g, int64_t r0, int64_t n) {
    if (!dx && !dW[g]) return;
    linear_backward_bf16(dx ? dx + r0 * in : nullptr, dW[g], dy + r0 * out, x + r0 * in, W[g], n, in, out,
                         accumulate_dx);
  });
}

void grouped_linear_forward_fp8(float* y, const kern::Fp8Rows& x, const float* const* W, const int64_t* offsets,
                                int64_t G, int64_t out) {
  for_each_group(offsets, G, [&](int64_t g, int64_t r0, int64_t n) {
    linear_forward_fp8(y + r0 * out, x.slice(r0, n), W[g], out, false);
  });
}

}  // namespace moe
