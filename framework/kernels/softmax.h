// Softmax and cross-entropy of one row (single source: framework/kernels/row.h explains R).
// A row may be causally masked: only its first n of n_total entries take part, the rest of the
// output is zero (attention's query t sees keys 0..t).
#pragma once
#include <math.h>
#include <stdint.h>

#include "framework/kernels/activation.h"
#include "framework/kernels/hd.h"
#include "framework/kernels/row.h"

namespace moe::kern {

// Entries of row n of a softmax over V that take part: all, or under a causal mask the keys
// 0 .. q0 + n of query q0 + n.
MOE_HD inline int64_t softmax_valid(int64_t n, int64_t V, bool causal, int64_t q0) {
  return causal ? (q0 + n + 1 < V ? q0 + n + 1 : V) : V;
}

// exp through libm's expf, or through fast_expf where the caller runs it N*T*T times (attention).
MOE_HD inline float softmax_exp(float x, bool fast) { return fast ? fast_expf(x) : expf(x); }

// max(m, x): a comparison, not fmaxf, which must honour NaN operands and stays a library call on the
// CPU (7% of the attention core). Same result: a NaN x leaves m, and m starts at -inf, never NaN.
MOE_HD inline float running_max(float m, float x) { return x > m ? x : m; }

// log(sum_i exp(x[i])) over x[n], numerically stable.
template <class R>
MOE_HD inline float logsumexp_row(R& r, const float* x, int64_t n) {
  float m = -INFINITY;
  for (int64_t i = r.lane(); i < n; i += r.width()) m = running_max(m, x[i]);
  m = r.max(m);
  float s = 0.f;
  for (int64_t i = r.lane(); i < n; i += r.width()) s += expf(x[i] - m);
  return m + logf(r.sum(s));
}

// p[0..n) = softmax(x[0..n)), p[n..n_total) = 0; returns the row's log-sum-exp. p may alias x.
template <class R>
MOE_HD inline float softmax_row_forward(R& r, float* p, const float* x, int64_t n, int64_t n_total, bool fast) {
  float m = -INFINITY;
  for (int64_t i = r.lane(); i < n; i += r.width()) m = running_max(m, x[i]);
  m = r.max(m);
  float sum = 0.f;
  for (int64_t i = r.lane(); i < n; i += r.width()) {
    float e = softmax_exp(x[i] - m, fast);
    p[i] = e;
    sum += e;
  }
  sum = r.sum(sum);
  const float inv = 1.f / sum;
  for (int64_t i = r.lane(); i < n; i += r.width()) p[i] *= inv;
  for (int64_t i = n + r.lane(); i < n_total; i += r.width()) p[i] = 0.f;
  return m + logf(sum);
}

// The probabilities again from the saved log-sum-exp: p[i] = exp(x[i] - lse) for i < n, else 0.
// p may alias x.
template <class R>
MOE_HD inline void softmax_row_recompute(R& r, float* p, const float* x, float lse, int64_t n, int64_t n_total,
                                         bool fast) {
  for (int64_t i = r.lane(); i < n; i += r.width()) p[i] = softmax_exp(x[i] - lse, fast);
  for (int64_t i = n + r.lane(); i < n_total; i += r.width()) p[i] = 0.f;
}

// dx = p * (dy - sum_j p_j dy_j) for i < n, else 0. dx may alias dy.
template <class R>
MOE_HD inline void softmax_row_backward(R& r, float* dx, const float* p, const float* dy, int64_t n, int64_t n_total) {
  float d = 0.f;
  for (int64_t i = r.lane(); i < n; i += r.width()) d += p[i] * dy[i];
  d = r.sum(d);
  for (int64_t i = r.lane(); i < n; i += r.width()) dx[i] = p[i] * (dy[i] - d);
  for (int64_t i = n + r.lane(); i < n_total; i += r.width()) dx[i] = 0.f;
}

// Document-masked rows (data.document_mask): only entries [lo, n) take part, where lo is the first
// key of the query's document; [0, lo) and [n, n_total) of the output are zero. With lo = 0 these
// are the rows above, operation for operation.
template <class R>
MOE_HD inline float softmax_span_forward(R& r, float* p, const float* x, int64_t lo, int64_t n, int64_t n_total,
                                         bool fast) {
  for (int64_t i = r.lane(); i < lo; i += r.width()) p[i] = 0.f;
  return softmax_row_forward(r, p + lo, x + lo, n - lo, n_total - lo, fast);
}
template <class R>
MOE_HD inline void softmax_span_recompute(R& r, float* p, const float* x, float lse, int64_t lo, int64_t n,
                                          int64_t n_total, bool fast) {
  for (int64_t i = r.lane(); i < lo; i += r.width()) p[i] = 0.f;
  softmax_row_recompute(r, p + lo, x + lo, lse, n - lo, n_total - lo, fast);
}
template <class R>
MOE_HD inline void softmax_span_backward(R& r, float* dx, const float* p, const float* dy, int64_t lo, int64_t n,
                                         int64_t n_total) {
  for (int64_t i = r.lane(); i < lo; i += r.width()) dx[i] = 0.f;
  softmax_row_backward(r, dx + lo, p + lo, dy + lo, n - lo, n_total - lo);
}

// Cross-entropy of one row of logits x[V] against `target`: loss = lse - x[target]; saves lse.
template <class R>
MOE_HD inline void cross_entropy_row_forward(R& r, float* loss, float* lse, const float* x, int32_t target, int64_t V) {
  float l = logsumexp_row(r, x, V);
  if (r.leader()) {
    *lse = l;
    *loss = l - x[target];
  }
}

// d = scale * (softmax(x) - onehot(target)), given the row's log-sum-exp. d may alias x.
template <class R>
MOE_HD inline void cross_entropy_row_backward(R& r, float* d, const float* x, float lse, int32_t target, float scale,
                                              int64_t V) {
  for (int64_t i = r.lane(); i < V; i += r.width()) d[i] = scale * (expf(x[i] - lse) - (i == target ? 1.f : 0.f));
}

// The rank of `target` among the logits x[V] (0 = the arg-max): how many logits are larger, plus
// how many equal ones have a lower id, so that ranks are a permutation of 0..V-1 and the top-1
// prediction is the first arg-max. Top-k accuracy counts rank < k. NaN logits never count as larger.
template <class R>
MOE_HD inline void target_rank_row(R& r, int32_t* rank, const float* x, int32_t target, int64_t V) {
  const float xt = x[target];
  int32_t above = 0;
  for (int64_t i = r.lane(); i < V; i += r.width()) above += (x[i] > xt || (x[i] == xt && i < target)) ? 1 : 0;
  above = r.sum(above);
  if (r.leader()) *rank = above;
}

}  // namespace moe::kern
