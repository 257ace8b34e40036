// CUDA ops: the GPU counterparts of framework/ops.h and framework/moe_ops.h, with the same
// arguments (device pointers) plus the stream they run on. Each runs the same single-source kernel
// as its CPU op (framework/kernels/), so the CPU tests cover their math; tests/gpu compares every
// op with its CPU op. Results match the CPU to rounding (reductions run in another order; nvcc
// fuses multiply-adds), not bit for bit. Letters as in framework/ops.h.
#pragma once
#include <cstdint>

#include <cuda_runtime_api.h>

#include "framework/kernels/adamw.h"
#include "framework/kernels/fp8_rows.h"
#include "framework/kernels/router.h"

namespace moe::cuda {

// RMSNorm (kernels/norm.h). backward: dx assigned (or added), dw accumulated through per-block
// partials summed in a fixed order (deterministic).
void rmsnorm_forward(float* y, float* rstd, const float* x, const float* w, int64_t N, int64_t D, float eps,
                     cudaStream_t stream = nullptr);
void rmsnorm_backward(float* dx, float* dw, const float* dy, const float* x, const float* w, const float* rstd,
                      int64_t N, int64_t D, bool accumulate_dx, cudaStream_t stream = nullptr);

// The element-wise ops of framework/backend_ops.inc (add, swiglu_forward/backward,
// embedding_forward, ...), generated from their entries there (elementwise.cu): the CPU op's
// arguments plus the stream, one thread per element.
#define MOE_WITH_STREAM(...) (__VA_ARGS__, cudaStream_t stream)
#define MOE_WITH_DEFAULT_STREAM(...) (__VA_ARGS__, cudaStream_t stream = nullptr)
#define MOE_OP(ret, name, params, args, device)
#define MOE_ELEMENTWISE_OP(name, params, args, n, ...) void name MOE_WITH_DEFAULT_STREAM params;
#include "framework/backend_ops.inc"
#undef MOE_OP
#undef MOE_ELEMENTWISE_OP

// RoPE in place (kernels/rope.h); cos/sin[T, dim/2] in device memory; layout as framework/ops.h.
void rope_apply(float* x, const float* cos, const float* sin, int64_t B, int64_t T, int64_t heads, int64_t row_stride,
                int64_t head_stride, int dim, bool backward, cudaStream_t stream = nullptr);

// Softmax and cross-entropy (kernels/softmax.h). cross_entropy_forward leaves the mean to the
// caller (losses[N] stay on the device).
void softmax_forward(float* y, float* lse, const float* x, int64_t N, int64_t V, bool causal = false, int64_t q0 = 0,
                     cudaStream_t stream = nullptr);
void softmax_backward(float* dx, const float* y, const float* dy, int64_t N, int64_t V, bool causal = false,
                      int64_t q0 = 0, cudaStream_t stream = nullptr);
void cross_entropy_forward(float* losses, float* lse, const float* logits, const int32_t* targets, int64_t N, int64_t V,
                           cudaStream_t stream = nullptr);
void cross_entropy_backward(float* dlogits, const float* logits, const float* lse, const int32_t* targets, float scale,
                            int64_t N, int64_t V, cudaStream_t stream = nullptr);
void target_ranks(int32_t* ranks, const float* logits, const int32_t* targets, int64_t N, int64_t V,
                  cudaStream_t stream = nullptr);

// Router (kernels/router.h); one thread per token.
void router_forward(float* scores, int32_t* idx, float* w, const float* logits, const float* bias, int64_t N,
                    const kern::RouterSpec& sp, cudaStream_t stream = nullptr);
void router_backward(float* dlogits, const float* scores, const float* logits, const int32_t* idx, const float* dw,
                     const float* f_BE, int64_t T, kern::RouterLossGrad lg, int64_t N, const kern::RouterSpec& sp,
                     cudaStream_t stream = nullptr);
void router_bias_update(float* bias, const float* load, int64_t E, float rate, cudaStream_t stream = nullptr);
// The router's losses on the device (three launches, no host copy; backend_ops.inc).
void router_loss_stats(float* losses, float* f_BE, const float* scores, const float* logits, const int32_t* idx,
                       int64_t B, int64_t T, float aux_coef, float z_coef, const kern::RouterSpec& sp,
                       cudaStream_t stream = nullptr);

// MoE dispatch (kernels/permute.h).
void moe_dispatch_plan(int64_t* offsets, int32_t* slot_of, int32_t* pos_of, const int32_t* idx, int64_t P, int64_t E,
                       cudaStream_t stream = nullptr);
void moe_permute(float* xs, const float* x, const int32_t* slot_of, int64_t P, int64_t K, int64_t D,
                 cudaStream_t stream = nullptr);
void moe_permute_backward(float* dx, const float* dxs, const int32_t* pos_of, int64_t N, int64_t K, int64_t D,
                          cudaStream_t stream = nullptr);
void moe_unpermute(float* y, const float* ys, const int32_t* pos_of, const float* w, int64_t N, int64_t K, int64_t D,
                   bool accumulate, cudaStream_t stream = nullptr);
void moe_unpermute_backward(float* dw, float* dys, const float* dy, const float* ys, const int32_t* pos_of,
                            const float* w, int64_t N, int64_t K, int64_t D, cudaStream_t stream = nullptr);
void moe_unpermute_bf16(float* y, const uint16_t* ys, const int32_t* pos_of, const float* w, int64_t N, int64_t K,
                        int64_t D, bool accumulate, cudaStream_t stream = nullptr);
void moe_unpermute_backward_bf16(float* dw, float* dys, const float* dy, const uint16_t* ys, const int32_t* pos_of,
                                 const float* w, int64_t N, int64_t K, int64_t D, cudaStream_t stream = nullptr);

// AdamW over n elements (kernels/adamw.h).
void adamw_update(float* w, float* m, float* v, const float* g, int64_t n, const kern::AdamWStep& s,
                  cudaStream_t stream = nullptr);
// All segments of the flat buffers in one launch (multi-tensor AdamW; segs on the host).
void adamw_update_segments(float* w, float* m, float* v, const float* g, const kern::AdamWSegment* segs,
                           int64_t count, const kern::AdamWStep& s, cudaStream_t stream = nullptr);

// Row moves and the embedding's backward (kernels/moves.h); shapes as framework/backend_ops.inc.
// embedding_backward runs one thread per column walking the tokens in order (no atomics): bit for
// bit the CPU's sums.
void copy_rows(float* dst, int64_t ld_dst, const float* src, int64_t ld_src, int64_t rows, int64_t cols,
               int64_t src_repeat, cudaStream_t stream = nullptr);
void sum_row_groups(float* dst, int64_t ld_dst, const float* src, int64_t ld_src, int64_t rows, int64_t cols,
                    int64_t group, cudaStream_t stream = nullptr);
void embedding_backward(float* dtable, const int32_t* ids, const float* dout, int64_t N, int64_t D,
                        cudaStream_t stream = nullptr);
// Sum of x[n] (or of its squares) in f64: kSumSegments partial sums of fixed-width blocks,
// downloaded and added in order on the host, so the result depends on n only, not on the GPU.
// Synchronises (the value comes back to the host).
constexpr int64_t kSumSegments = 128;
constexpr int kSumThreads = 256;
double sum_f64(const float* x, int64_t n, bool squares, cudaStream_t stream = nullptr);
inline double sum(const float* x, int64_t n, cudaStream_t stream = nullptr) { return sum_f64(x, n, false, stream); }
inline double sum_squares(const float* x, int64_t n, cudaStream_t stream = nullptr) {
  return sum_f64(x, n, true, stream);
}
// sum_f64(x + begin[i], length[i], true) for every segment, added in segment order (the same bits
// as that loop); all segments run before one wait. begin/length are host arrays.
double sum_squares_segments_f64(const float* x, const int64_t* begin, const int64_t* length, int64_t count,
                                cudaStream_t stream = nullptr);

// Fake quantisation of x[R,C] to E4M3 in tr x tc tiles (kernels/fp8_tiles.h): the values of
// framework/precision.h's fp8_quantize, bit for bit. xq may alias x.
void fp8_quantize(float* xq, const float* x, int64_t R, int64_t C, int64_t tr, int64_t tc,
                  cudaStream_t stream = nullptr);
// FP8 activation rows (kernels/fp8_rows.h, framework/fp8_rows.h): the producers with their output
// quantised in the same kernel (one block per row), and the de-quantised values (the f32 fallback).
void quantize_rows(const kern::Fp8Rows& q, const float* x, cudaStream_t stream = nullptr);
void rmsnorm_forward_fp8(float* y, float* rstd, const kern::Fp8Rows& q, const float* x, const float* w, float eps,
                         cudaStream_t stream = nullptr);
void swiglu_forward_fp8(float* h, const kern::Fp8Rows& q, const float* g, const float* u,
                        cudaStream_t stream = nullptr);
void moe_permute_fp8(float* xs, const kern::Fp8Rows& qs, const float* x, const kern::Fp8Rows& q,
                     const int32_t* slot_of, int64_t K, cudaStream_t stream = nullptr);
void dequantize_rows(float* x, const kern::Fp8Rows& q, cudaStream_t stream = nullptr);


}  // namespace moe::cuda
