// Element math of the activations (single source: framework/kernels/row.h explains the scheme).
#pragma once
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "framework/kernels/hd.h"

namespace moe::kern {

// exp(x) to ~2 ulp without a libm call, so loops over it vectorise (Cephes expf: x = n ln2 + f,
// e^f by a degree-6 polynomial, 2^n by building the exponent bits). Inputs are clamped to
// [-87.3, 88.7]: below, it returns ~1e-38 instead of 0, which no softmax or sigmoid notices; at
// the top, 2^128 overflows to inf as expf does just past 88.72.
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
  // A NaN x has made p NaN already; converting NaN to an integer is undefined (clang's UBSan
  // flags it), so it builds the exponent from 0 instead, and the result stays NaN.
  n = n != n ? 0.f : n;
  int32_t bits = (int32_t(n) + 127) << 23;
  float scale;
  memcpy(&scale, &bits, 4);
  return p * scale;
}

// The router's sigmoid uses libm's expf (its scores decide top-k ties, as in Hugging Face);
// SwiGLU, evaluated N*I times per layer, uses the vectorisable one.
MOE_HD inline float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }
MOE_HD inline float fast_sigmoidf(float x) { return 1.0f / (1.0f + fast_expf(-x)); }

// SwiGLU on one element: h = silu(g) * u.
MOE_HD inline float swiglu(float g, float u) { return g * fast_sigmoidf(g) * u; }
// dsilu/dg = s * (1 + g * (1 - s)), s = sigmoid(g).
MOE_HD inline void swiglu_backward(float* dg, float* du, float dh, float g, float u) {
  float s = fast_sigmoidf(g);
  *du = dh * g * s;
  *dg = dh * u * s * (1.f + g * (1.f - s));
}

}  // namespace moe::kern
