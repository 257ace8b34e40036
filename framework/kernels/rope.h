// Rotary position embedding of one head vector (single source: framework/kernels/row.h).
// Hugging Face DeepseekV3 with rope_interleave: pairs (x[2i], x[2i+1]) are de-interleaved into
// halves and rotated by angle pos * inv_freq[i]:
//   out[i] = x[2i] cos - x[2i+1] sin,  out[i + dim/2] = x[2i+1] cos + x[2i] sin.
#pragma once
#include <stdint.h>

#include "framework/kernels/hd.h"
#include "framework/kernels/row.h"

namespace moe::kern {

// In place on x[dim] (dim even); tmp holds dim floats (shared by the row's lanes).
template <class R>
MOE_HD inline void rope_row_forward(R& r, float* x, const float* cos_row, const float* sin_row, int dim, float* tmp) {
  const int half = dim / 2;
  for (int i = r.lane(); i < half; i += r.width()) {
    float x0 = x[2 * i], x1 = x[2 * i + 1];
    tmp[i] = x0 * cos_row[i] - x1 * sin_row[i];
    tmp[i + half] = x1 * cos_row[i] + x0 * sin_row[i];
  }
  r.sync();
  for (int i = r.lane(); i < dim; i += r.width()) x[i] = tmp[i];
  r.sync();  // tmp is free for the next row
}

// Transpose of rope_row_forward (a rotation plus a permutation): halves layout -> interleaved.
template <class R>
MOE_HD inline void rope_row_backward(R& r, float* g, const float* cos_row, const float* sin_row, int dim, float* tmp) {
  const int half = dim / 2;
  for (int i = r.lane(); i < half; i += r.width()) {
    float a = g[i], b = g[i + half];
    tmp[2 * i] = a * cos_row[i] + b * sin_row[i];
    tmp[2 * i + 1] = -a * sin_row[i] + b * cos_row[i];
  }
  r.sync();
  for (int i = r.lane(); i < dim; i += r.width()) g[i] = tmp[i];
  r.sync();
}

}  // namespace moe::kern
