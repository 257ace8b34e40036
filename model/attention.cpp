#include "model/attention.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "framework/gemm.h"
#include "framework/kernels/softmax.h"
#include "framework/ops.h"
#include "framework/profiler.h"
#include "framework/scratch.h"
#include "framework/threads.h"

namespace moe {

void RopeTables::build(int64_t T_, int dim, double theta) {
  T = T_;
  cos_TR2 = Tensor::empty({T, dim / 2});
  sin_TR2 = Tensor::empty({T, dim / 2});
  rope_tables(cos_TR2.f32(), sin_TR2.f32(), T, dim, theta);
}

void MLA::init(ParamStore& ps, const std::string& prefix, const ModelConfig& c) {
  H = c.heads; nope = c.qk_nope_dim; rope = c.qk_rope_dim; vdim = c.v_head_dim;
  q_lora = c.q_lora_rank; kv_lora = c.kv_lora_rank; hidden = c.hidden;
  float std = float(c.init_std), eps = float(c.rms_norm_eps);
  int64_t d = nope + rope;
  if (q_lora > 0) {
    q_a_proj.init(ps, prefix + ".q_a_proj.weight", hidden, q_lora, std);
    q_a_layernorm.init(ps, prefix + ".q_a_layernorm.weight", q_lora, eps);
    q_b_proj.init(ps, prefix + ".q_b_proj.weight", q_lora, H * d, std);
  } else {
    q_proj.init(ps, prefix + ".q_proj.weight", hidden, H * d, std);
  }
  kv_a_proj_with_mqa.init(ps, prefix + ".kv_a_proj_with_mqa.weight", hidden, kv_lora + rope, std);
  kv_a_layernorm.init(ps, prefix + ".kv_a_layernorm.weight", kv_lora, eps);
  kv_b_proj.init(ps, prefix + ".kv_b_proj.weight", kv_lora, H * (nope + vdim), std);
  o_proj.init(ps, prefix + ".o_proj.weight", H * vdim, hidden, std);
}

void MLA::forward(const ParamStore& ps, float* y, const float* x, int64_t B, int64_t T, const RopeTables& rt,
                  MLAActs& a) const {
  const int64_t N = B * T, d = nope + rope, e = nope + vdim, C = kv_lora + rope;
  // Queries.
  a.q_NHd.ensure({N, H, d});
  if (q_lora > 0) {
    a.qa_NQ.ensure({N, q_lora});
    a.qa_norm_NQ.ensure({N, q_lora});
    a.qa_rstd_N.ensure({N});
    q_a_proj.forward(ps, a.qa_NQ.f32(), x, N);
    q_a_layernorm.forward(ps, a.qa_norm_NQ.f32(), a.qa_rstd_N.f32(), a.qa_NQ.f32(), N);
    q_b_proj.forward(ps, a.q_NHd.f32(), a.qa_norm_NQ.f32(), N);
  } else {
    q_proj.forward(ps, a.q_NHd.f32(), x, N);
  }
  rope_apply(a.q_NHd.f32() + nope, rt.cos_TR2.f32(), rt.sin_TR2.f32(), B, T, H, H * d, d, int(rope), false);

  // Compressed keys/values: [kv_c | k_pe].
  ScratchScope scope;
  Tensor ckv = scratch({N, C});
  kv_a_proj_with_mqa.forward(ps, ckv.f32(), x, N);
  a.kv_c_NL.ensure({N, kv_lora});
  a.kv_norm_NL.ensure({N, kv_lora});
  a.kv_rstd_N.ensure({N});
  a.k_NHd.ensure({N, H, d});
  const float* c = ckv.f32();
  float* kv_c = a.kv_c_NL.f32();
  for (int64_t n = 0; n < N; ++n)
    for (int64_t i = 0; i < kv_lora; ++i) kv_c[n * kv_lora + i] = c[n * C + i];
  rope_apply(ckv.f32() + kv_lora, rt.cos_TR2.f32(), rt.sin_TR2.f32(), B, T, 1, C, 0, int(rope), false);
  kv_a_layernorm.forward(ps, a.kv_norm_NL.f32(), a.kv_rstd_N.f32(), kv_c, N);
  a.kvb_NHe.ensure({N, H, e});
  kv_b_proj.forward(ps, a.kvb_NHe.f32(), a.kv_norm_NL.f32(), N);

  // Keys: per head [k_nope | shared k_pe].
  float* k = a.k_NHd.f32();
  const float* kvb = a.kvb_NHe.f32();
  parallel_for(N, [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n)
      for (int64_t h = 0; h < H; ++h) {
        float* kh = k + (n * H + h) * d;
        for (int64_t i = 0; i < nope; ++i) kh[i] = kvb[(n * H + h) * e + i];
        for (int64_t i = 0; i < rope; ++i) kh[nope + i] = c[n * C + kv_lora + i];
      }
  }, 64);

  attention_forward(B, T, a);
  o_proj.forward(ps, y, a.o_NHv.f32(), N);
}

// Causal attention in query blocks of kBlock rows: block [i0, i1) only needs keys [0, i1), which
// skips most of the masked upper triangle (5/8 of the full work at T = 256).
namespace {
constexpr int64_t kBlock = 64;
}

void MLA::attention_forward(int64_t B, int64_t T, MLAActs& a) const {
  MOE_PHASE("attention");
  const int64_t d = nope + rope, e = nope + vdim;
  const float scale = 1.0f / std::sqrt(float(d));
  a.o_NHv.ensure({B * T, H, vdim});
  a.lse_BHT.ensure({B, H, T});
  const float *q = a.q_NHd.f32(), *k = a.k_NHd.f32(), *kvb = a.kvb_NHe.f32();
  float *o = a.o_NHv.f32(), *lse = a.lse_BHT.f32();
  parallel_for(B * H, [&](int64_t i0, int64_t i1) {
    ScratchScope scope;
    float* S = scratch_floats(kBlock * T);
    kern::SerialRow one;
    for (int64_t bh = i0; bh < i1; ++bh) {
      int64_t b = bh / H, h = bh % H;
      const float* qb = q + (b * T * H + h) * d;
      const float* kb = k + (b * T * H + h) * d;
      const float* vb = kvb + (b * T * H + h) * e + nope;
      float* ob = o + (b * T * H + h) * vdim;
      for (int64_t r0 = 0; r0 < T; r0 += kBlock) {
        const int64_t rows = std::min(kBlock, T - r0), keys = r0 + rows;
        gemm_serial(false, true, rows, keys, d, scale, qb + r0 * H * d, H * d, kb, H * d, 0.f, S, keys);
        for (int64_t r = 0; r < rows; ++r) {  // causal softmax of query t over keys 0..t
          const int64_t t = r0 + r;
          lse[bh * T + t] = kern::softmax_row_forward(one, S + r * keys, S + r * keys, t + 1, keys, /*fast=*/true);
        }
        gemm_serial(false, false, rows, vdim, keys, 1.f, S, keys, vb, H * e, 0.f, ob + r0 * H * vdim, H * vdim);
      }
    }
  });
}

void MLA::attention_backward(float* dq, float* dk, float* dkvb, const float* dout, int64_t B, int64_t T,
                             const MLAActs& a) const {
  MOE_PHASE("attention");
  const int64_t d = nope + rope, e = nope + vdim;
  const float scale = 1.0f / std::sqrt(float(d));
  const float *q = a.q_NHd.f32(), *k = a.k_NHd.f32(), *kvb = a.kvb_NHe.f32(), *lse = a.lse_BHT.f32();
  parallel_for(B * H, [&](int64_t i0, int64_t i1) {
    ScratchScope scope;
    float *P = scratch_floats(kBlock * T), *dP = scratch_floats(kBlock * T);
    kern::SerialRow one;
    for (int64_t bh = i0; bh < i1; ++bh) {
      int64_t b = bh / H, h = bh % H;
      const int64_t qoff = (b * T * H + h) * d, voff = (b * T * H + h) * e + nope, ooff = (b * T * H + h) * vdim;
      for (int64_t t = 0; t < T; ++t) {  // dV and dK accumulate over query blocks
        for (int64_t i = 0; i < vdim; ++i) dkvb[voff + t * H * e + i] = 0.f;
        for (int64_t i = 0; i < d; ++i) dk[qoff + t * H * d + i] = 0.f;
      }
      for (int64_t r0 = 0; r0 < T; r0 += kBlock) {
        const int64_t rows = std::min(kBlock, T - r0), keys = r0 + rows;
        const float* qblk = q + qoff + r0 * H * d;
        const float* doblk = dout + ooff + r0 * H * vdim;
        // Recompute probabilities from the saved log-sum-exp.
        gemm_serial(false, true, rows, keys, d, scale, qblk, H * d, k + qoff, H * d, 0.f, P, keys);
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t t = r0 + r;
          kern::softmax_row_recompute(one, P + r * keys, P + r * keys, lse[bh * T + t], t + 1, keys, /*fast=*/true);
        }
        // dV += P^T dO ; dP = dO V^T
        gemm_serial(true, false, keys, vdim, rows, 1.f, P, keys, doblk, H * vdim, 1.f, dkvb + voff, H * e);
        gemm_serial(false, true, rows, keys, vdim, 1.f, doblk, H * vdim, kvb + voff, H * e, 0.f, dP, keys);
        // dS = P * (dP - rowsum(P * dP)), stored over dP
        for (int64_t r = 0; r < rows; ++r)
          kern::softmax_row_backward(one, dP + r * keys, P + r * keys, dP + r * keys, r0 + r + 1, keys);
        // dQ = scale dS K ; dK += scale dS^T Q
        gemm_serial(false, false, rows, d, keys, scale, dP, keys, k + qoff, H * d, 0.f, dq + qoff + r0 * H * d, H * d);
        gemm_serial(true, false, keys, d, rows, scale, dP, keys, qblk, H * d, 1.f, dk + qoff, H * d);
      }
    }
  });
}

void MLA::backward(const ParamStore& ps, float* dx, const float* dy, const float* x, int64_t B, int64_t T,
                   const RopeTables& rt, MLAActs& a) const {
  const int64_t N = B * T, d = nope + rope, e = nope + vdim, C = kv_lora + rope;
  ScratchScope scope;
  Tensor dO = scratch({N, H, vdim});
  o_proj.backward(ps, dO.f32(), dy, a.o_NHv.f32(), N);

  Tensor dq = scratch({N, H, d}), dk = scratch({N, H, d}), dkvb = scratch({N, H, e});
  attention_backward(dq.f32(), dk.f32(), dkvb.f32(), dO.f32(), B, T, a);

  // Keys: nope part goes to kv_b's output, the rope part is summed over heads (shared k_pe).
  Tensor dckv = scratch({N, C});
  float *pdk = dk.f32(), *pdkvb = dkvb.f32(), *pdc = dckv.f32();
  parallel_for(N, [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n) {
      for (int64_t i = 0; i < rope; ++i) pdc[n * C + kv_lora + i] = 0.f;
      for (int64_t h = 0; h < H; ++h) {
        const float* g = pdk + (n * H + h) * d;
        for (int64_t i = 0; i < nope; ++i) pdkvb[(n * H + h) * e + i] = g[i];
        for (int64_t i = 0; i < rope; ++i) pdc[n * C + kv_lora + i] += g[nope + i];
      }
    }
  }, 64);
  rope_apply(pdc + kv_lora, rt.cos_TR2.f32(), rt.sin_TR2.f32(), B, T, 1, C, 0, int(rope), true);

  // kv path: kv_b_proj <- kv_a_layernorm <- kv_c part of kv_a_proj_with_mqa.
  Tensor dkv_norm = scratch({N, kv_lora}), dkv_c = scratch({N, kv_lora});
  kv_b_proj.backward(ps, dkv_norm.f32(), pdkvb, a.kv_norm_NL.f32(), N);
  kv_a_layernorm.backward(ps, dkv_c.f32(), dkv_norm.f32(), a.kv_c_NL.f32(), a.kv_rstd_N.f32(), N);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t i = 0; i < kv_lora; ++i) pdc[n * C + i] = dkv_c.f32()[n * kv_lora + i];
  kv_a_proj_with_mqa.backward(ps, dx, pdc, x, N, /*accumulate_dx=*/true);

  // q path.
  rope_apply(dq.f32() + nope, rt.cos_TR2.f32(), rt.sin_TR2.f32(), B, T, H, H * d, d, int(rope), true);
  if (q_lora > 0) {
    Tensor dqa_norm = scratch({N, q_lora}), dqa = scratch({N, q_lora});
    q_b_proj.backward(ps, dqa_norm.f32(), dq.f32(), a.qa_norm_NQ.f32(), N);
    q_a_layernorm.backward(ps, dqa.f32(), dqa_norm.f32(), a.qa_NQ.f32(), a.qa_rstd_N.f32(), N);
    q_a_proj.backward(ps, dx, dqa.f32(), x, N, /*accumulate_dx=*/true);
  } else {
    q_proj.backward(ps, dx, dq.f32(), x, N, /*accumulate_dx=*/true);
  }
}

}  // namespace moe
