#include "framework/attention.h"

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "framework/bf16_gemm.h"
#include "framework/error.h"
#include "framework/gemm.h"
#include "framework/kernels/cast.h"
#include "framework/kernels/softmax.h"
#include "framework/profiler.h"
#include "framework/scratch.h"
#include "framework/threads.h"

namespace moe {

// Causal attention in query blocks of kBlock rows: block [i0, i1) only needs keys [0, i1), which
// skips most of the masked upper triangle (5/8 of the full work at T = 256); under a document mask
// only keys [first_key(i0), i1), as a document's queries never see keys before its start. One (sequence, head)
// per task; each GEMM runs on the task's thread.
//
// At l.bf16 every GEMM reads bf16 operands, as a flash-attention kernel does: q, k, v and dO are
// rounded once per head into packed copies, P and dS once per block; scores, softmax and all
// accumulation stay f32. The operand type T is uint16_t (bf16 bits for the native bf16 GEMM,
// bf16_gemm.h) or float (bf16-rounded values for the emulated one, or the f32 rows in place).
namespace {
constexpr int64_t kBlock = 64;

template <class T>
struct Operand {
  const T* p;
  int64_t ld;
};

template <class T>
T to_operand(float x) {
  if constexpr (std::is_same_v<T, uint16_t>)
    return kern::f32_to_bf16_bits(x);
  else
    return kern::round_bf16(x);
}

// rows x cols of src (row stride ld) as the GEMMs read them: in place when not rounding, else
// rounded into buf (packed, row stride cols). A bf16 source (q, k, v kept as bf16) is already
// rounded: its bits are copied, or widened for the emulated GEMM, into the same packed buffer.
template <class T>
Operand<T> operand(const float* src, int64_t ld, int64_t rows, int64_t cols, T* buf) {
  if constexpr (std::is_same_v<T, float>)
    if (!buf) return {src, ld};
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) buf[r * cols + c] = to_operand<T>(src[r * ld + c]);
  return {buf, cols};
}
template <class T>
Operand<T> operand(const uint16_t* src, int64_t ld, int64_t rows, int64_t cols, T* buf) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      if constexpr (std::is_same_v<T, uint16_t>)
        buf[r * cols + c] = src[r * ld + c];
      else
        buf[r * cols + c] = kern::bf16_bits_to_f32(src[r * ld + c]);
    }
  return {buf, cols};
}

void gemm_head(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
               const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  gemm_serial(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}
void gemm_head(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const uint16_t* A, int64_t lda,
               const uint16_t* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  gemm_bf16_serial(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

// The core's softmax rows. kern::softmax_span_* run each reduction (the row's max, its sum of
// exponentials, backward's sum of P dP) as one serial chain on the CPU: a float sum may not be
// reordered, so the compiler cannot vectorise it, and those chains were half of the core's time
// outside its GEMMs. Here each reduction keeps kLanes partial results, lane j taking elements
// j, j + kLanes, ... (the tail into lane 0), combined in one fixed order: vectorised, and the same
// bits on every run and rank. Entries [lo, n) take part; [0, lo) and [n, n_total) are zero.
constexpr int64_t kLanes = 16;

float lanes_sum(const float* lane) {
  float s = 0.f;
  for (int64_t j = 0; j < kLanes; ++j) s += lane[j];
  return s;
}

// Returns the row's log-sum-exp; p may alias x.
float softmax_row(float* p, const float* x, int64_t lo, int64_t n, int64_t n_total) {
  std::fill(p, p + lo, 0.f);
  const int64_t full = lo + (n - lo) / kLanes * kLanes;
  float m[kLanes], s[kLanes];
  std::fill(m, m + kLanes, -INFINITY);
  for (int64_t i = lo; i < full; i += kLanes)
    for (int64_t j = 0; j < kLanes; ++j) m[j] = kern::running_max(m[j], x[i + j]);
  for (int64_t i = full; i < n; ++i) m[0] = kern::running_max(m[0], x[i]);
  float mx = -INFINITY;
  for (int64_t j = 0; j < kLanes; ++j) mx = kern::running_max(mx, m[j]);
  std::fill(s, s + kLanes, 0.f);
  for (int64_t i = lo; i < full; i += kLanes)
    for (int64_t j = 0; j < kLanes; ++j) {
      const float e = kern::fast_expf(x[i + j] - mx);
      p[i + j] = e;
      s[j] += e;
    }
  for (int64_t i = full; i < n; ++i) {
    const float e = kern::fast_expf(x[i] - mx);
    p[i] = e;
    s[0] += e;
  }
  const float sum = lanes_sum(s), inv = 1.f / sum;
  for (int64_t i = lo; i < n; ++i) p[i] *= inv;
  std::fill(p + n, p + n_total, 0.f);
  return mx + logf(sum);
}

// P again from the saved log-sum-exp (element-wise, as kern::softmax_span_recompute).
void softmax_row_recompute(float* p, const float* x, float lse, int64_t lo, int64_t n, int64_t n_total) {
  std::fill(p, p + lo, 0.f);
  for (int64_t i = lo; i < n; ++i) p[i] = kern::fast_expf(x[i] - lse);
  std::fill(p + n, p + n_total, 0.f);
}

// dS = P (dP - sum_j P_j dP_j), over dP in place.
void softmax_row_backward(float* dp, const float* p, int64_t lo, int64_t n, int64_t n_total) {
  const int64_t full = lo + (n - lo) / kLanes * kLanes;
  float d[kLanes];
  std::fill(d, d + kLanes, 0.f);
  for (int64_t i = lo; i < full; i += kLanes)
    for (int64_t j = 0; j < kLanes; ++j) d[j] += p[i + j] * dp[i + j];
  for (int64_t i = full; i < n; ++i) d[0] += p[i] * dp[i];
  const float dot = lanes_sum(d);
  std::fill(dp, dp + lo, 0.f);
  for (int64_t i = lo; i < n; ++i) dp[i] = p[i] * (dp[i] - dot);
  std::fill(dp + n, dp + n_total, 0.f);
}

// n elements of T from the thread's scratch arena, or null when not rounding.
template <class T>
T* scratch_operand(int64_t n, bool round) {
  return round ? reinterpret_cast<T*>(scratch_floats((n * int64_t(sizeof(T)) + 3) / 4)) : nullptr;
}

// Src: the element type of q, k and v (float, or uint16_t bf16 bits, which needs round).
template <class T, class Src>
void forward_heads(float* o, float* lse, const Src* q, const Src* k, const Src* v, const AttentionLayout& l,
                   bool round) {
  const int64_t T_ = l.T, H = l.H, d = l.dqk, dv = l.dv;
  parallel_for(l.B * H, [&](int64_t i0, int64_t i1) {
    ScratchScope scope;
    float* S = scratch_floats(kBlock * T_);
    T *qbuf = scratch_operand<T>(T_ * d, round), *kbuf = scratch_operand<T>(T_ * d, round);
    T *vbuf = scratch_operand<T>(T_ * dv, round), *pbuf = scratch_operand<T>(kBlock * T_, round);
    for (int64_t bh = i0; bh < i1; ++bh) {
      const int64_t b = bh / H, h = bh % H;
      const Operand<T> qb = operand(q + l.q_at(b, h), l.q_ld, T_, d, qbuf);
      const Operand<T> kb = operand(k + l.k_at(b, h), l.k_ld, T_, d, kbuf);
      const Operand<T> vb = operand(v + l.v_at(b, h), l.v_ld, T_, dv, vbuf);
      float* ob = o + l.o_at(b, h);
      for (int64_t r0 = 0; r0 < T_; r0 += kBlock) {
        // Keys [k0, r0 + rows): k0 = 0 without a document mask, else the block's first document start.
        const int64_t rows = std::min(kBlock, T_ - r0), k0 = l.first_key(b, r0), keys = r0 + rows - k0;
        gemm_head(false, true, rows, keys, d, l.scale, qb.p + r0 * qb.ld, qb.ld, kb.p + k0 * kb.ld, kb.ld, 0.f, S,
                  keys);
        for (int64_t r = 0; r < rows; ++r) {  // softmax of query t over keys first_key..t
          const int64_t t = r0 + r;
          lse[bh * T_ + t] = softmax_row(S + r * keys, S + r * keys, l.first_key(b, t) - k0, t + 1 - k0, keys);
        }
        const Operand<T> P = operand(S, keys, rows, keys, pbuf);
        gemm_head(false, false, rows, dv, keys, 1.f, P.p, P.ld, vb.p + k0 * vb.ld, vb.ld, 0.f, ob + r0 * l.o_ld,
                  l.o_ld);
      }
    }
  });
}

template <class T, class Src>
void backward_heads(float* dq, float* dk, float* dv, const float* dout, const Src* q, const Src* k, const Src* v,
                    const float* lse, const AttentionLayout& l, bool round) {
  const int64_t T_ = l.T, H = l.H, d = l.dqk, vd = l.dv;
  parallel_for(l.B * H, [&](int64_t i0, int64_t i1) {
    ScratchScope scope;
    float *P = scratch_floats(kBlock * T_), *dP = scratch_floats(kBlock * T_);
    T *qbuf = scratch_operand<T>(T_ * d, round), *kbuf = scratch_operand<T>(T_ * d, round);
    T *vbuf = scratch_operand<T>(T_ * vd, round), *dobuf = scratch_operand<T>(T_ * vd, round);
    T *pbuf = scratch_operand<T>(kBlock * T_, round), *dsbuf = scratch_operand<T>(kBlock * T_, round);
    for (int64_t bh = i0; bh < i1; ++bh) {
      const int64_t b = bh / H, h = bh % H;
      const Operand<T> qb = operand(q + l.q_at(b, h), l.q_ld, T_, d, qbuf);
      const Operand<T> kb = operand(k + l.k_at(b, h), l.k_ld, T_, d, kbuf);
      const Operand<T> vb = operand(v + l.v_at(b, h), l.v_ld, T_, vd, vbuf);
      const Operand<T> dob = operand(dout + l.o_at(b, h), l.o_ld, T_, vd, dobuf);
      float* dqb = dq + l.q_at(b, h);
      float* dkb = dk + l.k_at(b, h);
      float* dvb = dv + l.v_at(b, h);
      for (int64_t t = 0; t < T_; ++t) {  // dV and dK accumulate over query blocks
        std::fill(dvb + t * l.v_ld, dvb + t * l.v_ld + vd, 0.f);
        std::fill(dkb + t * l.k_ld, dkb + t * l.k_ld + d, 0.f);
      }
      for (int64_t r0 = 0; r0 < T_; r0 += kBlock) {
        const int64_t rows = std::min(kBlock, T_ - r0), k0 = l.first_key(b, r0), keys = r0 + rows - k0;
        const T* qblk = qb.p + r0 * qb.ld;
        const T* doblk = dob.p + r0 * dob.ld;
        const T *kblk = kb.p + k0 * kb.ld, *vblk = vb.p + k0 * vb.ld;
        // Recompute probabilities from the saved log-sum-exp.
        gemm_head(false, true, rows, keys, d, l.scale, qblk, qb.ld, kblk, kb.ld, 0.f, P, keys);
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t t = r0 + r;
          softmax_row_recompute(P + r * keys, P + r * keys, lse[bh * T_ + t], l.first_key(b, t) - k0, t + 1 - k0,
                                keys);
        }
        // dV += P^T dO ; dP = dO V^T
        const Operand<T> Pop = operand(P, keys, rows, keys, pbuf);
        gemm_head(true, false, keys, vd, rows, 1.f, Pop.p, Pop.ld, doblk, dob.ld, 1.f, dvb + k0 * l.v_ld, l.v_ld);
        gemm_head(false, true, rows, keys, vd, 1.f, doblk, dob.ld, vblk, vb.ld, 0.f, dP, keys);
        // dS = P * (dP - rowsum(P * dP)), stored over dP
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t t = r0 + r;
          softmax_row_backward(dP + r * keys, P + r * keys, l.first_key(b, t) - k0, t + 1 - k0, keys);
        }
        // dQ = scale dS K ; dK += scale dS^T Q
        const Operand<T> dS = operand(dP, keys, rows, keys, dsbuf);
        gemm_head(false, false, rows, d, keys, l.scale, dS.p, dS.ld, kblk, kb.ld, 0.f, dqb + r0 * l.q_ld, l.q_ld);
        gemm_head(true, false, keys, d, rows, l.scale, dS.p, dS.ld, qblk, qb.ld, 1.f, dkb + k0 * l.k_ld, l.k_ld);
      }
    }
  });
}

}  // namespace

void attention_forward(float* o, float* lse, const float* q, const float* k, const float* v, const AttentionLayout& l) {
  MOE_PHASE("attention");
  if (!l.bf16)
    forward_heads<float>(o, lse, q, k, v, l, false);
  else if (bf16_gemm_native())
    forward_heads<uint16_t>(o, lse, q, k, v, l, true);
  else
    forward_heads<float>(o, lse, q, k, v, l, true);
}

void attention_forward_bf16(float* o, float* lse, const uint16_t* q, const uint16_t* k, const uint16_t* v,
                            const AttentionLayout& l) {
  MOE_PHASE("attention");
  MOE_CHECK(l.bf16, "attention_forward_bf16: bf16 q, k, v need the layout's bf16 GEMMs");
  if (bf16_gemm_native())
    forward_heads<uint16_t>(o, lse, q, k, v, l, true);
  else
    forward_heads<float>(o, lse, q, k, v, l, true);
}

void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                        const float* v, const float* lse, const AttentionLayout& l) {
  MOE_PHASE("attention");
  if (!l.bf16)
    backward_heads<float>(dq, dk, dv, dout, q, k, v, lse, l, false);
  else if (bf16_gemm_native())
    backward_heads<uint16_t>(dq, dk, dv, dout, q, k, v, lse, l, true);
  else
    backward_heads<float>(dq, dk, dv, dout, q, k, v, lse, l, true);
}

void attention_backward_bf16(float* dq, float* dk, float* dv, const float* dout, const uint16_t* /*o*/,
                             const uint16_t* q, const uint16_t* k, const uint16_t* v, const float* lse,
                             const AttentionLayout& l) {
  MOE_PHASE("attention");
  MOE_CHECK(l.bf16, "attention_backward_bf16: bf16 q, k, v need the layout's bf16 GEMMs");
  if (bf16_gemm_native())
    backward_heads<uint16_t>(dq, dk, dv, dout, q, k, v, lse, l, true);
  else
    backward_heads<float>(dq, dk, dv, dout, q, k, v, lse, l, true);
}

void latent_attention(float* o, const float* q, const float* cache, const int64_t* row_offset, const int64_t* length,
                      int64_t n, int64_t H, int64_t C, int64_t L, int64_t max_len, float scale) {
  MOE_PHASE("attention");
  parallel_for(n, [&](int64_t i0, int64_t i1) {
    ScratchScope scope;
    float* S = scratch_floats(H * max_len);
    kern::SerialRow one;
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t len = length[i];
      MOE_CHECK(len >= 1 && len <= max_len, "latent_attention: length ", len, " outside 1..", max_len);
      const float* rows = cache + row_offset[i];
      gemm_serial(false, true, H, len, C, scale, q + i * H * C, C, rows, C, 0.f, S, len);
      for (int64_t h = 0; h < H; ++h) kern::softmax_row_forward(one, S + h * len, S + h * len, len, len, /*fast=*/true);
      gemm_serial(false, false, H, L, len, 1.f, S, len, rows, C, 0.f, o + i * H * L, L);
    }
  }, /*grain=*/1);
}

}  // namespace moe
