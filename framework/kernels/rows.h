// Row and element math shared by the CPU and CUDA backends (single source). Each function handles
// one row (or one element); the backends decide how rows map onto threads.
// Conventions (llm.c): outputs first, saved state explicit, dimensions last. Parameter gradients are
// accumulated (+=), activation gradients are assigned.
#pragma once
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "framework/kernels/hd.h"

namespace moe::kern {

// exp(x) to ~2 ulp without a libm call, so loops over it vectorise (Cephes expf: x = n ln2 + f,
// e^f by a degree-6 polynomial, 2^n by building the exponent bits). Inputs are clamped to the
// finite range: below -87.3 it returns ~1e-38 instead of 0, which no softmax or sigmoid notices.
MOE_HD inline float fast_expf(float x) {
  // Comparisons, not fminf/fmaxf: those must honour NaN operands and would stay library calls.
  x = x < -87.3f ? -87.3f : x;
  x = x > 88.7f ? 88.7f : x;
  float n = floorf(x * 1.44269504088896341f + 0.5f);
  float f = x - n * 0.693359375f + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * f + 1.3981999507e-3f;
  p = p * f + 8.3334519073e-3f;
  p = p * f + 4.1665795894e-2f;
  p = p * f + 1.6666665459e-1f;
  p = p * f + 5.0000001201e-1f;
  p = p * f * f + f + 1.0f;
  int32_t bits = (int32_t(n) + 127) << 23;
  float scale;
  memcpy(&scale, &bits, 4);
  return p * scale;
}

// The router's sigmoid uses libm's expf (its scores decide top-k ties, as in Hugging Face);
// SwiGLU, evaluated N*I times per layer, uses the vectorisable one.
MOE_HD inline float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }
MOE_HD inline float fast_sigmoidf(float x) { return 1.0f / (1.0f + fast_expf(-x)); }

// RMSNorm over one row of D: y = w * x / sqrt(mean(x^2) + eps). Saves rstd for backward.
MOE_HD inline void rmsnorm_row_forward(float* y, float* rstd, const float* x, const float* w, int64_t D,
                                       float eps) {
  float ss = 0.f;
  for (int64_t i = 0; i < D; ++i) ss += x[i] * x[i];
  float r = 1.0f / sqrtf(ss / float(D) + eps);
  *rstd = r;
  for (int64_t i = 0; i < D; ++i) y[i] = w[i] * (x[i] * r);
}

// dx = r * (w*dy - xhat * mean(w*dy*xhat)), xhat = x*r;  dw += dy * xhat (into dw_row, a per-thread
// partial the backend reduces).
MOE_HD inline void rmsnorm_row_backward(float* dx, float* dw, const float* dy, const float* x,
                                        const float* w, float rstd, int64_t D) {
  float dot = 0.f;
  for (int64_t i = 0; i < D; ++i) dot += w[i] * dy[i] * x[i] * rstd;
  dot /= float(D);
  for (int64_t i = 0; i < D; ++i) {
    float xhat = x[i] * rstd;
    dx[i] = rstd * (w[i] * dy[i] - xhat * dot);
    dw[i] += dy[i] * xhat;
  }
}

// SwiGLU on one element: h = silu(g) * u.
MOE_HD inline float swiglu(float g, float u) { return g * fast_sigmoidf(g) * u; }
// dsilu/dg = s * (1 + g * (1 - s)), s = sigmoid(g).
MOE_HD inline void swiglu_backward(float* dg, float* du, float dh, float g, float u) {
  float s = fast_sigmoidf(g);
  *du = dh * g * s;
  *dg = dh * u * s * (1.f + g * (1.f - s));
}

// RoPE on one head vector of `dim` (even) rope dims, Hugging Face DeepseekV3 with rope_interleave:
// pairs (x[2i], x[2i+1]) are de-interleaved into halves and rotated by angle pos * inv_freq[i]:
//   out[i] = x[2i] cos - x[2i+1] sin,  out[i + dim/2] = x[2i+1] cos + x[2i] sin.
// In place; tmp holds `dim` floats.
MOE_HD inline void rope_forward(float* x, const float* cos_row, const float* sin_row, int dim, float* tmp) {
  int half = dim / 2;
  for (int i = 0; i < half; ++i) {
    float x0 = x[2 * i], x1 = x[2 * i + 1];
    tmp[i] = x0 * cos_row[i] - x1 * sin_row[i];
    tmp[i + half] = x1 * cos_row[i] + x0 * sin_row[i];
  }
  for (int i = 0; i < dim; ++i) x[i] = tmp[i];
}

// Transpose of rope_forward (a rotation plus permutation): grad in halves layout → interleaved.
MOE_HD inline void rope_backward(float* g, const float* cos_row, const float* sin_row, int dim, float* tmp) {
  int half = dim / 2;
  for (int i = 0; i < half; ++i) {
    float a = g[i], b = g[i + half];
    tmp[2 * i] = a * cos_row[i] + b * sin_row[i];
    tmp[2 * i + 1] = -a * sin_row[i] + b * cos_row[i];
  }
  for (int i = 0; i < dim; ++i) g[i] = tmp[i];
}

// Log-sum-exp of a row (numerically stable).
MOE_HD inline float logsumexp_row(const float* x, int64_t n) {
  float m = -INFINITY;
  for (int64_t i = 0; i < n; ++i) m = fmaxf(m, x[i]);
  float s = 0.f;
  for (int64_t i = 0; i < n; ++i) s += expf(x[i] - m);
  return m + logf(s);
}

// Cross-entropy gradient of one row, given its log-sum-exp: d = scale * (softmax(x) - onehot(target)).
// d may alias x.
MOE_HD inline void cross_entropy_row_backward(float* d, const float* x, float lse, int32_t target,
                                              float scale, int64_t V) {
  for (int64_t i = 0; i < V; ++i) d[i] = scale * (expf(x[i] - lse) - (i == target ? 1.f : 0.f));
}

}  // namespace moe::kern
