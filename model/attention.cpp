#include "model/attention.h"

#include <cmath>

#include "framework/backend.h"
#include "framework/ops.h"
#include "framework/scratch.h"

namespace moe {

void RopeTables::build(int64_t T_, int dim, double theta) {
  T = T_;
  Tensor cos = Tensor::empty({T, dim / 2}), sin = Tensor::empty({T, dim / 2});
  rope_tables(cos.f32(), sin.f32(), T, dim, theta);  // on the host, once per sequence length
  cos_TR2 = cos.to(compute().device());
  sin_TR2 = sin.to(compute().device());
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

void MLA::forward(const ParamStore& ps, float* y, Activation x, int64_t B, int64_t T, const RopeTables& rt,
                  MLAActs& a) const {
  const int64_t N = B * T, d = nope + rope, e = nope + vdim, C = kv_lora + rope;
  const bool fp8 = kv_b_proj.prec == Precision::FP8;
  ScratchScope scope;
  // Queries.
  a.q_NHd.ensure({N, H, d});
  if (q_lora > 0) {
    a.qa_NQ.ensure({N, q_lora});
    a.qa_norm_NQ.ensure({N, q_lora});
    a.qa_rstd_N.ensure({N});
    q_a_proj.forward(ps, a.qa_NQ.f32(), x, N);
    const ScratchFp8Rows qaq = fp8 ? ScratchFp8Rows(N, q_lora) : ScratchFp8Rows();
    const Activation qa = q_a_layernorm.forward(ps, a.qa_norm_NQ.f32(), a.qa_rstd_N.f32(), a.qa_NQ.f32(), N, qaq.ptr());
    q_b_proj.forward(ps, a.q_NHd.f32(), qa, N);
  } else {
    q_proj.forward(ps, a.q_NHd.f32(), x, N);
  }
  compute().rope_apply(a.q_NHd.f32() + nope, rt.cos_TR2.f32(), rt.sin_TR2.f32(), B, T, H, H * d, d, int(rope), false);

  // Compressed keys/values: [kv_c | k_pe].
  Tensor ckv = scratch({N, C});
  kv_a_proj_with_mqa.forward(ps, ckv.f32(), x, N);
  a.kv_c_NL.ensure({N, kv_lora});
  a.kv_norm_NL.ensure({N, kv_lora});
  a.kv_rstd_N.ensure({N});
  a.k_NHd.ensure({N, H, d});
  const float* c = ckv.f32();
  float* kv_c = a.kv_c_NL.f32();
  compute().copy_rows(kv_c, kv_lora, c, C, N, kv_lora);
  compute().rope_apply(ckv.f32() + kv_lora, rt.cos_TR2.f32(), rt.sin_TR2.f32(), B, T, 1, C, 0, int(rope), false);
  a.kvb_NHe.ensure({N, H, e});
  const ScratchFp8Rows kvq = fp8 ? ScratchFp8Rows(N, kv_lora) : ScratchFp8Rows();
  const Activation kv = kv_a_layernorm.forward(ps, a.kv_norm_NL.f32(), a.kv_rstd_N.f32(), kv_c, N, kvq.ptr());
  kv_b_proj.forward(ps, a.kvb_NHe.f32(), kv, N);

  // Keys: per head [k_nope | shared k_pe] (the one k_pe row of a token repeated for its H heads).
  float* k = a.k_NHd.f32();
  compute().copy_rows(k, d, a.kvb_NHe.f32(), e, N * H, nope);
  compute().copy_rows(k + nope, d, c + kv_lora, C, N * H, rope, /*src_repeat=*/H);

  a.o_NHv.ensure({N, H, vdim});
  a.lse_BHT.ensure({B, H, T});
  compute().attention_forward(a.o_NHv.f32(), a.lse_BHT.f32(), a.q_NHd.f32(), k, a.kvb_NHe.f32() + nope,
                              attention_layout(B, T));
  o_proj.forward(ps, y, a.o_NHv.f32(), N);
}

// q and k [N, H, d]; v inside kv_b_proj's output [N, H, nope + vdim] after the nope part; o [N, H, vdim].
AttentionLayout MLA::attention_layout(int64_t B, int64_t T) const {
  const int64_t d = nope + rope, e = nope + vdim;
  AttentionLayout l;
  l.B = B; l.T = T; l.H = H; l.dqk = d; l.dv = vdim;
  l.q_ld = l.k_ld = H * d;
  l.q_hs = l.k_hs = d;
  l.v_ld = H * e;
  l.v_hs = e;
  l.o_ld = H * vdim;
  l.o_hs = vdim;
  l.scale = 1.0f / std::sqrt(float(d));
  return l;
}

void MLA::backward(const ParamStore& ps, float* dx, const float* dy, const float* x, int64_t B, int64_t T,
                   const RopeTables& rt, MLAActs& a) const {
  const int64_t N = B * T, d = nope + rope, e = nope + vdim, C = kv_lora + rope;
  ScratchScope scope;
  Tensor dO = scratch({N, H, vdim});
  o_proj.backward(ps, dO.f32(), dy, a.o_NHv.f32(), N);

  Tensor dq = scratch({N, H, d}), dk = scratch({N, H, d}), dkvb = scratch({N, H, e});
  float *pdk = dk.f32(), *pdkvb = dkvb.f32();
  compute().attention_backward(dq.f32(), pdk, pdkvb + nope, dO.f32(), a.q_NHd.f32(), a.k_NHd.f32(),
                               a.kvb_NHe.f32() + nope, a.lse_BHT.f32(), attention_layout(B, T));

  // Keys: nope part goes to kv_b's output, the rope part is summed over heads (shared k_pe).
  Tensor dckv = scratch({N, C});
  float* pdc = dckv.f32();
  compute().copy_rows(pdkvb, e, pdk, d, N * H, nope);
  compute().sum_row_groups(pdc + kv_lora, C, pdk + nope, d, N, rope, /*group=*/H);
  compute().rope_apply(pdc + kv_lora, rt.cos_TR2.f32(), rt.sin_TR2.f32(), B, T, 1, C, 0, int(rope), true);

  // kv path: kv_b_proj <- kv_a_layernorm <- kv_c part of kv_a_proj_with_mqa.
  Tensor dkv_norm = scratch({N, kv_lora}), dkv_c = scratch({N, kv_lora});
  kv_b_proj.backward(ps, dkv_norm.f32(), pdkvb, a.kv_norm_NL.f32(), N);
  kv_a_layernorm.backward(ps, dkv_c.f32(), dkv_norm.f32(), a.kv_c_NL.f32(), a.kv_rstd_N.f32(), N);
  compute().copy_rows(pdc, C, dkv_c.f32(), kv_lora, N, kv_lora);
  kv_a_proj_with_mqa.backward(ps, dx, pdc, x, N, /*accumulate_dx=*/true);

  // q path.
  compute().rope_apply(dq.f32() + nope, rt.cos_TR2.f32(), rt.sin_TR2.f32(), B, T, H, H * d, d, int(rope), true);
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
