// CPU ops of the MoE layer's routing and dispatch, over the single-source kernels
// kern::router_* (framework/kernels/router.h) and kern::*permute* (framework/kernels/permute.h);
// the CUDA backend has the same ops (framework/cuda/ops.h).
// Letters: N tokens, E routed experts, K experts per token, P = N*K (token, choice) pairs, D features.
#pragma once
#include <cstdint>

#include "framework/kernels/router.h"

namespace moe {

// Per token: scores[N,E] from logits[N,E], the choice idx[N,K] and combine weights w[N,K].
void router_forward(float* scores, int32_t* idx, float* w, const float* logits, const float* bias, int64_t N,
                    const kern::RouterSpec& sp);
// dlogits[N,E] (assigned) from dw[N,K]; `f_BE` (the balance frequencies per sequence of T tokens,
// [N/T, E]) is null without the aux loss. lg.f is ignored (set per token from f_BE).
void router_backward(float* dlogits, const float* scores, const float* logits, const int32_t* idx, const float* dw,
                     const float* f_BE, int64_t T, kern::RouterLossGrad lg, int64_t N, const kern::RouterSpec& sp);
// losses[2] = {aux_coef * balance loss, z_coef * z-loss}, f_BE[B, E] when aux_coef > 0
// (backend_ops.inc; kern::router_token_stats, router_balance_row, router_loss_totals).
void router_loss_stats(float* losses, float* f_BE, const float* scores, const float* logits, const int32_t* idx,
                       int64_t B, int64_t T, float aux_coef, float z_coef, const kern::RouterSpec& sp);
// bias[E] += rate * sign(mean(load) - load[e]).
void router_bias_update(float* bias, const float* load, int64_t E, float rate);

// The dispatch plan of idx[P] over E experts: offsets[E+1], slot_of[P], pos_of[P] (kern/permute.h).
void moe_dispatch_plan(int64_t* offsets, int32_t* slot_of, int32_t* pos_of, const int32_t* idx, int64_t P,
                       int64_t E);
// xs[P,D]: slot p gets token slot_of[p] / K's row of x[N,D].
void moe_permute(float* xs, const float* x, const int32_t* slot_of, int64_t P, int64_t K, int64_t D);
// dx[N,D] += sum_k dxs[pos_of[n*K + k]] (the gather's backward).
void moe_permute_backward(float* dx, const float* dxs, const int32_t* pos_of, int64_t N, int64_t K, int64_t D);
// y[N,D] (=, or += when accumulate) sum_k w[n,k] * ys[pos_of[n*K + k]] (the combine).
void moe_unpermute(float* y, const float* ys, const int32_t* pos_of, const float* w, int64_t N, int64_t K, int64_t D,
                   bool accumulate);
// The combine's backward: dw[N,K] = dy[n] . ys[p], dys[P,D] = w[n,k] * dy[n] at p = pos_of[n*K + k].
void moe_unpermute_backward(float* dw, float* dys, const float* dy, const float* ys, const int32_t* pos_of,
                            const float* w, int64_t N, int64_t K, int64_t D);
// Both on outputs kept as bf16 bits: the f32 ops' bits on their values.
void moe_unpermute_bf16(float* y, const uint16_t* ys, const int32_t* pos_of, const float* w, int64_t N, int64_t K,
                        int64_t D, bool accumulate);
void moe_unpermute_backward_bf16(float* dw, float* dys, const float* dy, const uint16_t* ys, const int32_t* pos_of,
                                 const float* w, int64_t N, int64_t K, int64_t D);

}  // namespace moe
