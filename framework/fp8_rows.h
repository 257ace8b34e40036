// FP8 activation rows on the CPU (kernels/fp8_rows.h has the layout and the single-source row
// functions; the CUDA backend runs the same functions in framework/cuda/fp8_rows.cu).
// Producers that quantise their output as they write it, and the forward GEMM of an fp8 linear
// layer that reads those codes: together the same numbers, bit for bit, as the producer followed by
// linear_forward(.., Precision::FP8) (precision.h), which quantises x itself.
// Letters: N rows, D (or cols) features, P routed copies, K choices per token.
#pragma once
#include <cstdint>

#include "framework/kernels/fp8_rows.h"

namespace moe {

using kern::Fp8Rows;

// q = the E4M3 rows of x[q.rows, q.cols].
void quantize_rows(const Fp8Rows& q, const float* x);
// rmsnorm_forward (ops.h) of x[q.rows, q.cols], y's rows quantised into q.
void rmsnorm_forward_fp8(float* y, float* rstd, const Fp8Rows& q, const float* x, const float* w, float eps);
// swiglu_forward (ops.h) of g, u [q.rows, q.cols], h's rows quantised into q.
void swiglu_forward_fp8(float* h, const Fp8Rows& q, const float* g, const float* u);
// moe_permute (moe_ops.h) of x and of its quantised rows q: row p of xs and qs is row slot_of[p] / K
// of x and q (P = qs.rows, D = q.cols).
void moe_permute_fp8(float* xs, const Fp8Rows& qs, const float* x, const Fp8Rows& q, const int32_t* slot_of,
                     int64_t K);
// y[M, out] (+)= x W^T for the fp8 linear layer whose input x[M = x.rows, in = x.cols] was quantised
// into x: linear_forward(.., Precision::FP8) of the original values, bit for bit.
void linear_forward_fp8(float* y, const Fp8Rows& x, const float* W, int64_t out, bool accumulate);
// The de-quantised values of q (the fake-quantised f32 matrix [q.rows, q.cols]).
void dequantize_rows(float* x, const Fp8Rows& q);

}  // namespace moe
