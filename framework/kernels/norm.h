// RMSNorm of one row (single source: framework/kernels/row.h explains the scheme and R).
// Conventions (llm.c): outputs first, saved state explicit, dimensions last. Parameter gradients are
// accumulated (+=), activation gradients are assigned (or added when `accumulate` says so).
#pragma once
#include <math.h>
#include <stdint.h>

#include "framework/kernels/hd.h"
#include "framework/kernels/row.h"

namespace moe::kern {

// y[D] = w * x / sqrt(mean(x^2) + eps); saves rstd = 1 / sqrt(mean(x^2) + eps).
template <class R>
MOE_HD inline void rmsnorm_row_forward(R& r, float* y, float* rstd, const float* x, const float* w, int64_t D,
                                       float eps) {
  float ss = 0.f;
  for (int64_t i = r.lane(); i < D; i += r.width()) ss += x[i] * x[i];
  ss = r.sum(ss);
  float rs = 1.0f / sqrtf(ss / float(D) + eps);
  if (r.leader()) *rstd = rs;
  for (int64_t i = r.lane(); i < D; i += r.width()) y[i] = w[i] * (x[i] * rs);
}

// dx = rstd * (w*dy - xhat * mean(w*dy*xhat)), xhat = x*rstd (assigned, or added when accumulate);
// dw += dy * xhat into dw, a partial the backend owns for a run of rows and reduces afterwards.
template <class R>
MOE_HD inline void rmsnorm_row_backward(R& r, float* dx, float* dw, const float* dy, const float* x, const float* w,
                                        float rstd, int64_t D, bool accumulate) {
  float dot = 0.f;
  for (int64_t i = r.lane(); i < D; i += r.width()) dot += w[i] * dy[i] * x[i] * rstd;
  dot = r.sum(dot) / float(D);
  for (int64_t i = r.lane(); i < D; i += r.width()) {
    float xhat = x[i] * rstd;
    float g = rstd * (w[i] * dy[i] - xhat * dot);
    dx[i] = accumulate ? dx[i] + g : g;
    dw[i] += dy[i] * xhat;
  }
}

// out[i] += sum over c of part[c*D + i], c = 0..C-1 in order: the fixed-order reduction of the
// per-run partials of rmsnorm_row_backward (element i of D).
MOE_HD inline void sum_partials(float* out, const float* part, int64_t C, int64_t D, int64_t i) {
  float s = out[i];
  for (int64_t c = 0; c < C; ++c) s += part[c * D + i];
  out[i] = s;
}

}  // namespace moe::kern
