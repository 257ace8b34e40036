#include "model/attention.h"

#include <algorithm>
#include <cmath>

#include "framework/backend.h"
#include "framework/ops.h"
#include "framework/scratch.h"

namespace moe {

void RopeTables::build(int64_t T_, int dim, double theta) {
  T = T_;
  Tensor cos = Tensor::empty({T, dim / 2}), sin = Tensor::empty({T, dim / 2});
  rope_tables(cos.f32(), sin.f32(), T, dim, theta);  // on the host, once per sequence length
  host_cos_.assign(cos.f32(), cos.f32() + cos.numel());
  host_sin_.assign(sin.f32(), sin.f32() + sin.numel());
  cos_TR2 = cos.to(compute().device());
  sin_TR2 = sin.to(compute().device());
  documents_ = false;
}

// Token (b, t) of a document starting at s gets the table rows of position t - s: what the same
// tokens get in a sequence of their own, bit for bit.
void RopeTables::set_documents(const int32_t* doc_start, int64_t B) {
  documents_ = doc_start != nullptr;
  if (!documents_) return;
  const int64_t N = B * T, half = cos_TR2.dim(1);
  Tensor cos = Tensor::empty({N, half}), sin = Tensor::empty({N, half});
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t) {
      const int64_t i = b * T + t, s = doc_start[i];
      MOE_CHECK(s >= 0 && s <= t && (t == 0 || s == doc_start[i - 1] || s == t),
                "document starts: token ", t, " of sequence ", b, " starts its document at ", s);
      std::copy_n(host_cos_.data() + (t - s) * half, half, cos.f32() + i * half);
      std::copy_n(host_sin_.data() + (t - s) * half, half, sin.f32() + i * half);
    }
  cos_NR2_ = cos.to(compute().device());
  sin_NR2_ = sin.to(compute().device());
  doc_start_N_.ensure({N}, DType::I32);
  compute().upload(doc_start_N_.raw(), doc_start, size_t(N) * sizeof(int32_t));
}

void RopeTables::apply(float* x, int64_t B, int64_t T_x, int64_t heads, int64_t row_stride, int64_t head_stride,
                       int dim, bool backward) const {
  // The MTP modules run shorter windows (T - k positions) over the same tables.
  MOE_CHECK(T_x <= T && (!documents_ || T_x == T), "RoPE over ", T_x, " positions with tables of ", T);
  if (documents_)  // one table row per token: B*T sequences of one
    compute().rope_apply(x, cos_NR2_.f32(), sin_NR2_.f32(), 1, B * T_x, heads, row_stride, head_stride, dim, backward);
  else
    compute().rope_apply(x, cos_TR2.f32(), sin_TR2.f32(), B, T_x, heads, row_stride, head_stride, dim, backward);
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

// q [N, H, d] (RoPE not yet applied) from x.
void MLA::project_queries(const ParamStore& ps, Activation x, int64_t N, MLAActs& a, float* q) const {
  const bool fp8 = q_b_proj.prec == Precision::FP8;
  ScratchScope scope;
  if (q_lora > 0) {
    a.qa_NQ.ensure({N, q_lora});
    a.qa_rstd_N.ensure({N});
    q_a_proj.forward(ps, a.qa_NQ.f32(), x, N);
    const ScratchFp8Rows qaq = fp8 ? ScratchFp8Rows(N, q_lora) : ScratchFp8Rows();
    Tensor qa_f32;
    const Activation qa = q_a_layernorm.forward_kept(ps, a.qa_norm_NQ, qa_f32, a.qa_rstd_N.f32(), a.qa_NQ.f32(), N,
                                                     q_b_proj.prec == Precision::BF16, qaq.ptr());
    q_b_proj.forward(ps, q, qa, N);
  } else {
    q_proj.forward(ps, q, x, N);
  }
}

// ckv [N, C] = [kv_c | k_pe] (k_pe without RoPE) and the normalised kv_c (kept in a; its f32 values
// in kv_f32 at bf16, which the caller holds while kv_b_proj reads them); with `latent` ([N, kv_lora],
// may be null) also the normalised kv_c as kv_b_proj's GEMM reads it at its precision: what the
// latent KV cache keeps.
Activation MLA::project_latent(const ParamStore& ps, float* ckv, Activation x, int64_t N, MLAActs& a,
                               const ScratchFp8Rows& kvq, Tensor& kv_f32, float* latent) const {
  const int64_t C = kv_lora + rope;
  kv_a_proj_with_mqa.forward(ps, ckv, x, N);
  a.kv_c_NL.ensure({N, kv_lora});
  a.kv_rstd_N.ensure({N});
  compute().copy_rows(a.kv_c_NL.f32(), kv_lora, ckv, C, N, kv_lora);
  const Activation kv = kv_a_layernorm.forward_kept(ps, a.kv_norm_NL, kv_f32, a.kv_rstd_N.f32(), a.kv_c_NL.f32(), N,
                                                    kv_b_proj.prec == Precision::BF16, kvq.ptr());
  if (latent) {
    if (kv.e4m3)
      compute().dequantize_rows(latent, *kv.e4m3);
    else if (kv_b_proj.prec == Precision::BF16)
      compute().bf16_round(latent, kv.f32, N * kv_lora);
    else
      compute().copy_rows(latent, kv_lora, kv.f32, kv_lora, N, kv_lora);
  }
  return kv;
}

void MLA::forward(const ParamStore& ps, float* y, Activation x, int64_t B, int64_t T, const RopeTables& rt,
                  MLAActs& a, float* cache_rows) const {
  const int64_t N = B * T, d = nope + rope, e = nope + vdim, C = kv_lora + rope;
  const bool fp8 = kv_b_proj.prec == Precision::FP8;
  ScratchScope scope;
  // q, k and v are read by the attention core alone, which at bf16 rounds them for its GEMMs: kept
  // as bf16 then (their f32 values in scratch), the same bits.
  const bool bf16 = o_proj.prec == Precision::BF16;
  ensure_kept(a.q_NHd, N, H * d, bf16);
  ensure_kept(a.k_NHd, N, H * d, bf16);
  ensure_kept(a.v_NHv, N, H * vdim, bf16);
  Tensor q32 = bf16 ? scratch({N, H * d}) : Tensor(), k32 = bf16 ? scratch({N, H * d}) : Tensor(),
         v32 = bf16 ? scratch({N, H * vdim}) : Tensor();
  float *q = bf16 ? q32.f32() : a.q_NHd.f32(), *k = bf16 ? k32.f32() : a.k_NHd.f32(),
        *v = bf16 ? v32.f32() : a.v_NHv.f32();
  project_queries(ps, x, N, a, q);
  rt.apply(q + nope, B, T, H, H * d, d, int(rope), false);

  // Compressed keys/values: [kv_c | k_pe].
  Tensor ckv = scratch({N, C}), latent = cache_rows ? scratch({N, kv_lora}) : Tensor(), kv_f32;
  const ScratchFp8Rows kvq = fp8 ? ScratchFp8Rows(N, kv_lora) : ScratchFp8Rows();
  const Activation kv = project_latent(ps, ckv.f32(), x, N, a, kvq, kv_f32, cache_rows ? latent.f32() : nullptr);
  const float* c = ckv.f32();
  rt.apply(ckv.f32() + kv_lora, B, T, 1, C, 0, int(rope), false);
  if (cache_rows) {
    compute().copy_rows(cache_rows, C, latent.f32(), kv_lora, N, kv_lora);
    compute().copy_rows(cache_rows + kv_lora, C, c + kv_lora, C, N, rope);
  }
  Tensor kvb = scratch({N, H, e});
  kv_b_proj.forward(ps, kvb.f32(), kv, N);

  // Keys: per head [k_nope | shared k_pe] (the one k_pe row of a token repeated for its H heads);
  // values: the rest of kv_b's output, kept on their own so the k_nope copies are not kept twice.
  compute().copy_rows(k, d, kvb.f32(), e, N * H, nope);
  compute().copy_rows(k + nope, d, c + kv_lora, C, N * H, rope, /*src_repeat=*/H);
  compute().copy_rows(v, vdim, kvb.f32() + nope, e, N * H, vdim);

  // o: at bf16 o_proj alone reads it, so only its rounding is kept (its f32 values in scratch).
  ensure_kept(a.o_NHv, N, H * vdim, bf16);
  Tensor o_f32 = bf16 ? scratch({N, H * vdim}) : Tensor();
  float* o = bf16 ? o_f32.f32() : a.o_NHv.f32();
  a.lse_BHT.ensure({B, H, T});
  if (bf16) {
    compute().cast_f32_to_bf16(a.q_NHd.data<uint16_t>(), q, N * H * d);
    compute().cast_f32_to_bf16(a.k_NHd.data<uint16_t>(), k, N * H * d);
    compute().cast_f32_to_bf16(a.v_NHv.data<uint16_t>(), v, N * H * vdim);
    compute().attention_forward_bf16(o, a.lse_BHT.f32(), a.q_NHd.data<uint16_t>(), a.k_NHd.data<uint16_t>(),
                                     a.v_NHv.data<uint16_t>(), attention_layout(B, T, rt));
    compute().cast_f32_to_bf16(a.o_NHv.data<uint16_t>(), o, N * H * vdim);
  } else {
    compute().attention_forward(o, a.lse_BHT.f32(), q, k, v, attention_layout(B, T, rt));
  }
  o_proj.forward(ps, y, {o, nullptr, bf16 ? a.o_NHv.data<uint16_t>() : nullptr}, N);
}

// The absorbed form (model/kv_cache.h): per head h, kv_b's rows [h*e, h*e + nope) are W_uk [nope, L]
// and the next vdim rows W_uv [vdim, L], so q_lat = q_nope W_uk and o = o_lat W_uv^T are GEMMs on
// strided views; no per-head key or value is formed.
void MLA::decode(const ParamStore& ps, float* y, Activation x, const LatentStep& step, float* cache,
                 const float* kv_b_eff, MLAActs& a) const {
  const int64_t n = step.n, d = nope + rope, e = nope + vdim, C = kv_lora + rope, L = kv_lora;
  const bool fp8 = kv_b_proj.prec == Precision::FP8;
  ScratchScope scope;
  a.q_NHd.ensure({n, H, d});
  float* q = a.q_NHd.f32();
  project_queries(ps, x, n, a, q);
  compute().rope_apply(q + nope, step.cos, step.sin, 1, n, H, H * d, d, int(rope), false);

  // The new tokens' cache rows: [latent kv_c | k_pe with RoPE].
  Tensor ckv = scratch({n, C}), latent = scratch({n, L}), kv_f32;
  const ScratchFp8Rows kvq = fp8 ? ScratchFp8Rows(n, L) : ScratchFp8Rows();
  project_latent(ps, ckv.f32(), x, n, a, kvq, kv_f32, latent.f32());
  compute().rope_apply(ckv.f32() + L, step.cos, step.sin, 1, n, 1, C, 0, int(rope), false);
  compute().copy_rows(ckv.f32(), C, latent.f32(), L, n, L);
  for (int64_t i = 0; i < n; ++i) compute().copy_rows(cache + step.write_offset[i], C, ckv.f32() + i * C, C, 1, C);

  // Absorbed queries [n, H, C] = [q_nope W_uk | q_pe], the latent attention, then W_uv per head.
  Tensor qa = scratch({n, H, C}), o_lat = scratch({n, H, L});
  for (int64_t h = 0; h < H; ++h)
    compute().gemm(false, false, n, L, nope, 1.f, q + h * d, H * d, kv_b_eff + h * e * L, L, 0.f,
                   qa.f32() + h * C, H * C);
  compute().copy_rows(qa.f32() + L, C, q + nope, d, n * H, rope);
  compute().latent_attention(o_lat.f32(), qa.f32(), cache, step.row_offset, step.length, n, H, C, L, step.max_len,
                             1.0f / std::sqrt(float(d)));
  a.o_NHv.ensure({n, H, vdim});
  for (int64_t h = 0; h < H; ++h)
    compute().gemm(false, true, n, vdim, L, 1.f, o_lat.f32() + h * L, H * L, kv_b_eff + (h * e + nope) * L, L, 0.f,
                   a.o_NHv.f32() + h * vdim, H * vdim);
  o_proj.forward(ps, y, a.o_NHv.f32(), n);
}

// q and k [N, H, d]; v and o [N, H, vdim].
AttentionLayout MLA::attention_layout(int64_t B, int64_t T, const RopeTables& rt) const {
  const int64_t d = nope + rope;
  AttentionLayout l = AttentionLayout::dense(B, T, H, d, vdim, 1.0f / std::sqrt(float(d)));
  l.doc_start = rt.doc_start();
  // At bf16 the core's GEMMs read bf16 operands too. At fp8 it stays f32: the fp8 emulation rounds
  // the linear layers' inputs only (docs/performance.md has its precision study).
  l.bf16 = o_proj.prec == Precision::BF16;
  return l;
}

void MLA::backward(const ParamStore& ps, float* dx, const float* dy, Activation x, int64_t B, int64_t T,
                   const RopeTables& rt, MLAActs& a) const {
  const int64_t N = B * T, d = nope + rope, e = nope + vdim, C = kv_lora + rope;
  ScratchScope scope;
  Tensor dO = scratch({N, H, vdim});
  o_proj.backward(ps, dO.f32(), dy, kept(a.o_NHv), N);

  Tensor dq = scratch({N, H, d}), dk = scratch({N, H, d}), dv = scratch({N, H, vdim}), dkvb = scratch({N, H, e});
  float *pdk = dk.f32(), *pdkvb = dkvb.f32();
  const AttentionLayout layout = attention_layout(B, T, rt);
  if (a.q_NHd.dtype() == DType::BF16)
    compute().attention_backward_bf16(dq.f32(), pdk, dv.f32(), dO.f32(), a.o_NHv.data<uint16_t>(),
                                      a.q_NHd.data<uint16_t>(), a.k_NHd.data<uint16_t>(), a.v_NHv.data<uint16_t>(),
                                      a.lse_BHT.f32(), layout);
  else
    compute().attention_backward(dq.f32(), pdk, dv.f32(), dO.f32(), a.q_NHd.f32(), a.k_NHd.f32(), a.v_NHv.f32(),
                                 a.lse_BHT.f32(), layout);

  // kv_b's output gradient per head [dk_nope | dv]; the keys' rope part is summed over heads
  // (shared k_pe).
  Tensor dckv = scratch({N, C});
  float* pdc = dckv.f32();
  compute().copy_rows(pdkvb, e, pdk, d, N * H, nope);
  compute().copy_rows(pdkvb + nope, e, dv.f32(), vdim, N * H, vdim);
  compute().sum_row_groups(pdc + kv_lora, C, pdk + nope, d, N, rope, /*group=*/H);
  rt.apply(pdc + kv_lora, B, T, 1, C, 0, int(rope), true);

  // kv path: kv_b_proj <- kv_a_layernorm <- kv_c part of kv_a_proj_with_mqa.
  Tensor dkv_norm = scratch({N, kv_lora}), dkv_c = scratch({N, kv_lora});
  kv_b_proj.backward(ps, dkv_norm.f32(), pdkvb, kept(a.kv_norm_NL), N);
  kv_a_layernorm.backward(ps, dkv_c.f32(), dkv_norm.f32(), a.kv_c_NL.f32(), a.kv_rstd_N.f32(), N);
  compute().copy_rows(pdc, C, dkv_c.f32(), kv_lora, N, kv_lora);
  kv_a_proj_with_mqa.backward(ps, dx, pdc, x, N, /*accumulate_dx=*/true);

  // q path.
  rt.apply(dq.f32() + nope, B, T, H, H * d, d, int(rope), true);
  if (q_lora > 0) {
    Tensor dqa_norm = scratch({N, q_lora}), dqa = scratch({N, q_lora});
    q_b_proj.backward(ps, dqa_norm.f32(), dq.f32(), kept(a.qa_norm_NQ), N);
    q_a_layernorm.backward(ps, dqa.f32(), dqa_norm.f32(), a.qa_NQ.f32(), a.qa_rstd_N.f32(), N);
    q_a_proj.backward(ps, dx, dqa.f32(), x, N, /*accumulate_dx=*/true);
  } else {
    q_proj.backward(ps, dx, dq.f32(), x, N, /*accumulate_dx=*/true);
  }
}

}  // namespace moe
