// CPU ops over whole tensors (raw pointers + dimensions). Each op runs a single-source kernel
// (framework/kernels/) through a CPU launcher (framework/launch.h); the CUDA backend has the same
// ops over the same kernels (framework/cuda/ops.h). Letters: N rows (tokens), D features,
// V vocabulary (or keys), B sequences of T positions.
#pragma once
#include <cstdint>

#include "framework/kernels/adamw.h"

namespace moe {

// y[N,D] = rmsnorm(x[N,D]) * w[D]; rstd[N] saved.
void rmsnorm_forward(float* y, float* rstd, const float* x, const float* w, int64_t N, int64_t D, float eps);
// dx[N,D] assigned (or added when accumulate), dw[D] accumulated.
void rmsnorm_backward(float* dx, float* dw, const float* dy, const float* x, const float* w, const float* rstd,
                      int64_t N, int64_t D, bool accumulate_dx = false);

// The element-wise ops of framework/backend_ops.inc (add, swiglu_forward/backward,
// embedding_forward, ...), generated from their entries there (ops.cpp).
#define MOE_OP(ret, name, params, args, device)
#define MOE_ELEMENTWISE_OP(name, params, args, n, ...) void name params;
#include "framework/backend_ops.inc"
#undef MOE_OP
#undef MOE_ELEMENTWISE_OP

// dst row r (cols elements, row stride ld_dst) = src row r / src_repeat (row stride ld_src).
void copy_rows(float* dst, int64_t ld_dst, const float* src, int64_t ld_src, int64_t rows, int64_t cols,
               int64_t src_repeat = 1);
// dst row r = sum over j < group, in j order, of src row r * group + j.
void sum_row_groups(float* dst, int64_t ld_dst, const float* src, int64_t ld_src, int64_t rows, int64_t cols,
                    int64_t group);

// dtable[ids[n], :] += dout[n, :]
void embedding_backward(float* dtable, const int32_t* ids, const float* dout, int64_t N, int64_t D);

// y[N,V] = softmax of each row of x[N,V] (y may alias x); lse[N] saved. Causal: row r takes part
// only in its first q0 + r + 1 entries (query q0 + r over keys 0..), the rest of y is zero.
void softmax_forward(float* y, float* lse, const float* x, int64_t N, int64_t V, bool causal = false,
                     int64_t q0 = 0);
// dx[N,V] = y * (dy - rowsum(y * dy)) (dx may alias dy); same mask as forward.
void softmax_backward(float* dx, const float* y, const float* dy, int64_t N, int64_t V, bool causal = false,
                      int64_t q0 = 0);

// Cross-entropy of logits[N,V] against targets[N]: losses[N] and lse[N] saved; returns the mean.
double cross_entropy_forward(float* losses, float* lse, const float* logits, const int32_t* targets, int64_t N,
                             int64_t V);
// dlogits[N,V] = scale * (softmax - onehot); may alias logits.
void cross_entropy_backward(float* dlogits, const float* logits, const float* lse, const int32_t* targets,
                            float scale, int64_t N, int64_t V);

// ranks[N] = the rank of targets[n] among the logits[n, :] (0 = the first arg-max; ties go to
// the lower id), for top-k accuracy.
void target_ranks(int32_t* ranks, const float* logits, const int32_t* targets, int64_t N, int64_t V);

// RoPE tables for positions [0, T): cos/sin[T, dim/2], inv_freq[i] = theta^(-2i/dim).
void rope_tables(float* cos, float* sin, int64_t T, int dim, double theta);
// Applies RoPE in place to x viewed as [B, T, heads] vectors: element i of (b, t, h) sits at
// x[(b*T + t)*row_stride + h*head_stride + i], i < dim. backward applies the transpose.
void rope_apply(float* x, const float* cos, const float* sin, int64_t B, int64_t T, int64_t heads,
                int64_t row_stride, int64_t head_stride, int dim, bool backward);

// One AdamW step over n elements: w, m, v updated in place from g (kern::adamw_update).
void adamw_update(float* w, float* m, float* v, const float* g, int64_t n, const kern::AdamWStep& s);
// adamw_update over the segments of the flat buffers, s.decay where a segment decays, else no
// decay (backend_ops.inc: the GPU does all segments in one launch).
void adamw_update_segments(float* w, float* m, float* v, const float* g, const kern::AdamWSegment* segs,
                           int64_t count, const kern::AdamWStep& s);


// y += a * x
void axpy(float* y, const float* x, float a, int64_t n);
// Sums in f64, in index order.
double sum(const float* x, int64_t n);
double sum_squares(const float* x, int64_t n);

}  // namespace moe
