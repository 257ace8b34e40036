// Linear layers at a compute precision on the GPU: framework/precision.h's semantics (read there),
// on device memory. y[M,out] (+)= x W^T; dx[M,in] (+)= dy W (skipped when dx is null);
// dW[out,in] += dy^T x (skipped when dW is null).
//   fp32  f32 cuBLASLt GEMMs.
//   bf16  x, W, dy cast to bf16 storage (round to nearest even, as the CPU's round_bf16) and
//         cuBLASLt bf16 x bf16 -> f32: products of bf16 values are exact in f32, so this is the CPU
//         emulation up to the order of the f32 accumulation.
//   fp8   DeepSeek-V3's recipe as real FP8 GEMMs (fp8_gemm.h): E4M3 codes and scales of the same
//         tiles as precision.cpp (bit for bit) through cuBLASLt's block-scaled matmul, f32
//         accumulation: the CPU emulation up to the order of the f32 accumulation. forward and
//         dgrad read their activation as E4M3 rows (kernels/fp8_rows.h): rows up to the last
//         multiple of 16 in place, the last few through a 16-row copy padded with zero codes, so
//         expert groups of any size take the FP8 path. Shapes outside fp8_gemm_shape_ok (or that
//         cuBLASLt declines) run the fake-quantised values through f32 GEMMs instead: the same
//         result to accumulation order.
// Grouped: rows offsets[g]..offsets[g+1] of x go through W[g] ([out, in]); y assigned; groups
// without rows are skipped. offsets, W and dW are host arrays (of device pointers).
#pragma once
#include <cstdint>

#include <cuda_runtime_api.h>

#include "framework/kernels/fp8_rows.h"
#include "framework/precision.h"

namespace moe::cuda {

void linear_forward(float* y, const float* x, const float* W, int64_t M, int64_t in, int64_t out, bool accumulate,
                    Precision p, cudaStream_t stream = nullptr);
void linear_backward(float* dx, float* dW, const float* dy, const float* x, const float* W, int64_t M, int64_t in,
                     int64_t out, bool accumulate_dx, Precision p, cudaStream_t stream = nullptr);

// bf16 with x given as bf16 bits (framework/precision.h's linear_forward_bf16): read in place by
// the forward GEMM and by backward's weight gradient.
void linear_forward_bf16(float* y, const uint16_t* x, const float* W, int64_t M, int64_t in, int64_t out,
                         bool accumulate, cudaStream_t stream = nullptr);
void linear_backward_bf16(float* dx, float* dW, const float* dy, const uint16_t* x, const float* W, int64_t M,
                          int64_t in, int64_t out, bool accumulate_dx, cudaStream_t stream = nullptr);
void grouped_linear_forward_bf16(float* y, const uint16_t* x, const float* const* W, const int64_t* offsets,
                                 int64_t G, int64_t in, int64_t out, cudaStream_t stream = nullptr);
void grouped_linear_backward_bf16(float* dx, float* const* dW, const float* dy, const uint16_t* x,
                                  const float* const* W, const int64_t* offsets, int64_t G, int64_t in, int64_t out,
                                  bool accumulate_dx, cudaStream_t stream = nullptr);

// fp32 and bf16: one grouped cuBLAS call per GEMM kind (grouped_gemm.h); fp8: the per-group loop
// (each group's GEMMs real FP8 where its row count qualifies).
void grouped_linear_forward(float* y, const float* x, const float* const* W, const int64_t* offsets, int64_t G,
                            int64_t in, int64_t out, Precision p, cudaStream_t stream = nullptr);
void grouped_linear_backward(float* dx, float* const* dW, const float* dy, const float* x, const float* const* W,
                             const int64_t* offsets, int64_t G, int64_t in, int64_t out, bool accumulate_dx,
                             Precision p, cudaStream_t stream = nullptr);

// The fp8 forward GEMMs on rows quantised by their producer (kernels/fp8_rows.h): y[x.rows, out]
// (+)= x W^T with in = x.cols, the codes read in place. A real FP8 GEMM where the shape qualifies,
// else the de-quantised rows through an f32 GEMM (linear_forward's fp8 fallback, the same values).
void linear_forward_fp8(float* y, const kern::Fp8Rows& x, const float* W, int64_t out, bool accumulate,
                        cudaStream_t stream = nullptr);
void grouped_linear_forward_fp8(float* y, const kern::Fp8Rows& x, const float* const* W, const int64_t* offsets,
                                int64_t G, int64_t out, cudaStream_t stream = nullptr);

// The same as one linear_forward/backward per group: the fallback for fp8 and the reference the
// GPU test compares the grouped calls with.
void grouped_linear_forward_loop(float* y, const float* x, const float* const* W, const int64_t* offsets, int64_t G,
                                 int64_t in, int64_t out, Precision p, cudaStream_t stream = nullptr);
void grouped_linear_backward_loop(float* dx, float* const* dW, const float* dy, const float* x, const float* const* W,
                                  const int64_t* offsets, int64_t G, int64_t in, int64_t out, bool accumulate_dx,
                                  Precision p, cudaStream_t stream = nullptr);

}  // namespace moe::cuda
