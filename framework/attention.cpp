#include "framework/attention.h"

#include <algorithm>
#include <vector>

#include "framework/gemm.h"
#include "framework/kernels/softmax.h"
#include "framework/profiler.h"
#include "framework/scratch.h"
#include "framework/threads.h"

namespace moe {

// Causal attention in query blocks of kBlock rows: block [i0, i1) only needs keys [0, i1), which
// skips most of the masked upper triangle (5/8 of the full work at T = 256); under a document mask
// only keys [first_key(i0), i1), as a document's queries never see keys before its start. One (sequence, head)
// per task; each GEMM runs on the task's thread.
namespace {
constexpr int64_t kBlock = 64;
}

void attention_forward(float* o, float* lse, const float* q, const float* k, const float* v, const AttentionLayout& l) {
  MOE_PHASE("attention");
  const int64_t T = l.T, H = l.H, d = l.dqk, dv = l.dv;
  parallel_for(l.B * H, [&](int64_t i0, int64_t i1) {
    ScratchScope scope;
    float* S = scratch_floats(kBlock * T);
    kern::SerialRow one;
    for (int64_t bh = i0; bh < i1; ++bh) {
      const int64_t b = bh / H, h = bh % H;
      const float* qb = q + l.q_at(b, h);
      const float* kb = k + l.k_at(b, h);
      const float* vb = v + l.v_at(b, h);
      float* ob = o + l.o_at(b, h);
      for (int64_t r0 = 0; r0 < T; r0 += kBlock) {
        // Keys [k0, r0 + rows): k0 = 0 without a document mask, else the block's first document start.
        const int64_t rows = std::min(kBlock, T - r0), k0 = l.first_key(b, r0), keys = r0 + rows - k0;
        gemm_serial(false, true, rows, keys, d, l.scale, qb + r0 * l.q_ld, l.q_ld, kb + k0 * l.k_ld, l.k_ld, 0.f, S,
                    keys);
        for (int64_t r = 0; r < rows; ++r) {  // softmax of query t over keys first_key..t
          const int64_t t = r0 + r;
          lse[bh * T + t] = kern::softmax_span_forward(one, S + r * keys, S + r * keys, l.first_key(b, t) - k0,
                                                       t + 1 - k0, keys, /*fast=*/true);
        }
        gemm_serial(false, false, rows, dv, keys, 1.f, S, keys, vb + k0 * l.v_ld, l.v_ld, 0.f, ob + r0 * l.o_ld,
                    l.o_ld);
      }
    }
  });
}

void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                        const float* v, const float* lse, const AttentionLayout& l) {
  MOE_PHASE("attention");
  const int64_t T = l.T, H = l.H, d = l.dqk, vd = l.dv;
  parallel_for(l.B * H, [&](int64_t i0, int64_t i1) {
    ScratchScope scope;
    float *P = scratch_floats(kBlock * T), *dP = scratch_floats(kBlock * T);
    kern::SerialRow one;
    for (int64_t bh = i0; bh < i1; ++bh) {
      const int64_t b = bh / H, h = bh % H;
      const float* qb = q + l.q_at(b, h);
      const float* kb = k + l.k_at(b, h);
      const float* vb = v + l.v_at(b, h);
      const float* dob = dout + l.o_at(b, h);
      float* dqb = dq + l.q_at(b, h);
      float* dkb = dk + l.k_at(b, h);
      float* dvb = dv + l.v_at(b, h);
      for (int64_t t = 0; t < T; ++t) {  // dV and dK accumulate over query blocks
        std::fill(dvb + t * l.v_ld, dvb + t * l.v_ld + vd, 0.f);
        std::fill(dkb + t * l.k_ld, dkb + t * l.k_ld + d, 0.f);
      }
      for (int64_t r0 = 0; r0 < T; r0 += kBlock) {
        const int64_t rows = std::min(kBlock, T - r0), k0 = l.first_key(b, r0), keys = r0 + rows - k0;
        const float* qblk = qb + r0 * l.q_ld;
        const float* doblk = dob + r0 * l.o_ld;
        const float *kblk = kb + k0 * l.k_ld, *vblk = vb + k0 * l.v_ld;
        // Recompute probabilities from the saved log-sum-exp.
        gemm_serial(false, true, rows, keys, d, l.scale, qblk, l.q_ld, kblk, l.k_ld, 0.f, P, keys);
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t t = r0 + r;
          kern::softmax_span_recompute(one, P + r * keys, P + r * keys, lse[bh * T + t], l.first_key(b, t) - k0,
                                       t + 1 - k0, keys, /*fast=*/true);
        }
        // dV += P^T dO ; dP = dO V^T
        gemm_serial(true, false, keys, vd, rows, 1.f, P, keys, doblk, l.o_ld, 1.f, dvb + k0 * l.v_ld, l.v_ld);
        gemm_serial(false, true, rows, keys, vd, 1.f, doblk, l.o_ld, vblk, l.v_ld, 0.f, dP, keys);
        // dS = P * (dP - rowsum(P * dP)), stored over dP
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t t = r0 + r;
          kern::softmax_span_backward(one, dP + r * keys, P + r * keys, dP + r * keys, l.first_key(b, t) - k0,
                                      t + 1 - k0, keys);
        }
        // dQ = scale dS K ; dK += scale dS^T Q
        gemm_serial(false, false, rows, d, keys, l.scale, dP, keys, kblk, l.k_ld, 0.f, dqb + r0 * l.q_ld, l.q_ld);
        gemm_serial(true, false, keys, d, rows, l.scale, dP, keys, qblk, l.q_ld, 1.f, dkb + k0 * l.k_ld, l.k_ld);
      }
    }
  });
}

// Per token: the scores of all its heads over its cached rows in one GEMM, the softmax rows, and the
// latent output in a second GEMM (the GPU runs kern::latent_attention_row per (token, head): the
// same math, summed in another order).
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
