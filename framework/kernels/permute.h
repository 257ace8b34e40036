// MoE dispatch: the plan that groups the N*K (token, choice) pairs by expert, and the row
// gathers/scatters that move tokens into expert order and back (single source:
// framework/kernels/row.h explains R). Letters: N tokens, K choices per token, P = N*K pairs
// (pair i = token i / K, choice i % K), E experts, D features.
// Plan: expert e's pairs are slots offsets[e] .. offsets[e+1] in the order of i (stable), and
//   slot_of[p] = the pair in slot p,  pos_of[i] = the slot of pair i.
#pragma once
#include <stdint.h>

#include "framework/kernels/cast.h"
#include "framework/kernels/hd.h"
#include "framework/kernels/row.h"

namespace moe::kern {

// counts[e] = #{i < P : idx[i] == e} (segment e of the plan).
template <class R>
MOE_HD inline void dispatch_count_segment(R& r, int64_t* counts, const int32_t* idx, int64_t P, int32_t e) {
  int64_t c = 0;
  for (int64_t i = r.lane(); i < P; i += r.width()) c += idx[i] == e;
  c = r.sum(c);
  if (r.leader()) counts[e] = c;
}

// Segment e of the plan: offsets[e] (and offsets[E] for the last) from counts, then slot_of/pos_of
// for e's pairs in increasing i. A block-wide exclusive scan of the matches keeps the order stable
// whatever the number of lanes.
template <class R>
MOE_HD inline void dispatch_fill_segment(R& r, int64_t* offsets, int32_t* slot_of, int32_t* pos_of,
                                         const int64_t* counts, const int32_t* idx, int64_t P, int32_t e, int32_t E) {
  int64_t base = 0;
  for (int32_t j = 0; j < e; ++j) base += counts[j];
  if (r.leader()) {
    offsets[e] = base;
    if (e == E - 1) offsets[E] = base + counts[e];
  }
  for (int64_t c0 = 0; c0 < P; c0 += r.width()) {
    const int64_t i = c0 + r.lane();
    const int64_t match = i < P && idx[i] == e ? 1 : 0;
    int64_t total;
    const int64_t before = r.exclusive_scan(match, &total);
    if (match) {
      slot_of[base + before] = int32_t(i);
      pos_of[i] = int32_t(base + before);
    }
    base += total;
  }
}

// Slot p's row: xs[p] = x[slot_of[p] / K]. dst and src are the rows.
template <class R>
MOE_HD inline void copy_row(R& r, float* dst, const float* src, int64_t D) {
  for (int64_t i = r.lane(); i < D; i += r.width()) dst[i] = src[i];
}

// Element i of the experts' outputs: f32, or bf16 bits (kept so at bf16), read as their f32 value.
MOE_HD inline float output_value(const float* ys, int64_t i) { return ys[i]; }
MOE_HD inline float output_value(const uint16_t* ys, int64_t i) { return bf16_bits_to_f32(ys[i]); }

// Token n's combine: y[n] (=, or += when accumulate) sum_k w[k] * ys[pos[k]], k in order.
template <class R, class Y>
MOE_HD inline void unpermute_row(R& r, float* y, const Y* ys, const int32_t* pos, const float* w, int64_t K,
                                 int64_t D, bool accumulate) {
  for (int64_t i = r.lane(); i < D; i += r.width()) {
    float acc = accumulate ? y[i] : 0.f;
    for (int64_t k = 0; k < K; ++k) acc += w[k] * output_value(ys, int64_t(pos[k]) * D + i);
    y[i] = acc;
  }
}

// Backward of unpermute_row for token n: dw[k] = dy . ys[pos[k]] (assigned), dys[pos[k]] = w[k] * dy.
template <class R, class Y>
MOE_HD inline void unpermute_row_backward(R& r, float* dw, float* dys, const float* dy, const Y* ys,
                                          const int32_t* pos, const float* w, int64_t K, int64_t D) {
  for (int64_t k = 0; k < K; ++k) {
    const int64_t p = pos[k];
    float dot = 0.f;
    for (int64_t i = r.lane(); i < D; i += r.width()) {
      dot += dy[i] * output_value(ys, p * D + i);
      dys[p * D + i] = w[k] * dy[i];
    }
    dot = r.sum(dot);
    if (r.leader()) dw[k] = dot;
  }
}

// Backward of the gather for token n: dx[n] += sum_k dxs[pos[k]], k in order.
template <class R>
MOE_HD inline void permute_row_backward(R& r, float* dx, const float* dxs, const int32_t* pos, int64_t K, int64_t D) {
  for (int64_t i = r.lane(); i < D; i += r.width()) {
    float acc = dx[i];
    for (int64_t k = 0; k < K; ++k) acc += dxs[int64_t(pos[k]) * D + i];
    dx[i] = acc;
  }
}

}  // namespace moe::kern
