// Grouped linear layers on the CPU (the routed experts): rows offsets[g]..offsets[g+1] of x go
// through W[g] ([out, in]), one GEMM per group with rows, at precision p (precision.h) or on E4M3
// rows (fp8_rows.h). offsets (G+1) and the pointer arrays are host arrays; groups without rows
// are skipped (their dW untouched). framework/backend_ops.inc documents the ops.
#pragma once
#include <cstdint>

#include "framework/kernels/fp8_rows.h"
#include "framework/precision.h"

namespace moe {

// y assigned.
void grouped_linear_forward(float* y, const float* x, const float* const* W, const int64_t* offsets, int64_t G,
                            int64_t in, int64_t out, Precision p);
// dx (assigned, or added when accumulate_dx; may be null), dW[g] += dy_g^T x_g (skipped where
// dW[g] is null: with dx null too, the group is not computed at all).
void grouped_linear_backward(float* dx, float* const* dW, const float* dy, const float* x, const float* const* W,
                             const int64_t* offsets, int64_t G, int64_t in, int64_t out, bool accumulate_dx,
                             Precision p);
// The two above at bf16 with x given as bf16 bits (precision.h's linear_forward_bf16).
void grouped_linear_forward_bf16(float* y, const uint16_t* x, const float* const* W, const int64_t* offsets,
                                 int64_t G, int64_t in, int64_t out);
void grouped_linear_backward_bf16(float* dx, float* const* dW, const float* dy, const uint16_t* x,
                                  const float* const* W, const int64_t* offsets, int64_t G, int64_t in, int64_t out,
                                  bool accumulate_dx);
// y assigned; in = x.cols.
void grouped_linear_forward_fp8(float* y, const kern::Fp8Rows& x, const float* const* W, const int64_t* offsets,
                                int64_t G, int64_t out);

}  // namespace moe
