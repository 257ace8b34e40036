// AdamW with decoupled weight decay, one element (single source: framework/kernels/row.h).
#pragma once
#include <math.h>

#include "framework/kernels/hd.h"

namespace moe::kern {

// The per-step constants: bias corrections bc1 = 1 - beta1^t, bc2 = 1 - beta2^t, step_size = lr / bc1,
// decay = 1 - lr * weight_decay (1 for parameters without decay), grad_scale from clipping.
struct AdamWStep {
  float beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f, bc2 = 1.f, step_size = 0.f, decay = 1.f, grad_scale = 1.f;
};

//   m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;  w = w * decay - step_size * m / (sqrt(v / bc2) + eps)
MOE_HD inline void adamw_update(float* w, float* m, float* v, float g, const AdamWStep& s) {
  const float gi = g * s.grad_scale;
  *m = s.beta1 * *m + (1.f - s.beta1) * gi;
  *v = s.beta2 * *v + (1.f - s.beta2) * gi * gi;
  *w = *w * s.decay - s.step_size * *m / (sqrtf(*v / s.bc2) + s.eps);
}

// A run of trainable elements [begin, begin + n) of a flat buffer, all with or all without decay
// (none on norms and biases): the optimizer's segments (framework/optimizer.h's OptSegment).
struct AdamWSegment {
  int64_t begin = 0, n = 0;
  bool decay = true;
};

// Multi-tensor passes lay the segments end to end: start[s] is where segment s begins in that flat
// index space (start[0] = 0, start[count] = the total). The segment of flat index i < total: the
// last s with start[s] <= i (binary search; empty segments are skipped over).
MOE_HD inline int64_t segment_of(const int64_t* start, int64_t count, int64_t i) {
  int64_t lo = 0, hi = count;  // start[lo] <= i < start[hi]
  while (hi - lo > 1) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (start[mid] <= i)
      lo = mid;
    else
      hi = mid;
  }
  return lo;
}

}  // namespace moe::kern
