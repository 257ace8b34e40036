#include "model/layers.h"

#include "framework/backend.h"
#include "framework/scratch.h"

namespace moe {

void swiglu_backward_kept(float* dg, float* du, const float* dh, const MLPActs& a, int64_t n) {
  if (a.gate_NI.dtype() == DType::BF16)
    return compute().swiglu_backward_bf16(dg, du, dh, a.gate_NI.data<uint16_t>(), a.up_NI.data<uint16_t>(), n);
  compute().swiglu_backward(dg, du, dh, a.gate_NI.f32(), a.up_NI.f32(), n);
}

void keep_rounded(MLPActs& a, const float* g, const float* u, int64_t n) {
  compute().cast_f32_to_bf16(a.gate_NI.data<uint16_t>(), g, n);
  compute().cast_f32_to_bf16(a.up_NI.data<uint16_t>(), u, n);
}

Activation swiglu_of(const MLPActs& a, int64_t n, Tensor& h) {
  if (a.gate_NI.dtype() == DType::BF16) {
    h = scratch({n}, DType::BF16);
    compute().swiglu_forward_bf16(h.data<uint16_t>(), a.gate_NI.data<uint16_t>(), a.up_NI.data<uint16_t>(), n);
    return kept(h);
  }
  h = scratch({n});
  compute().swiglu_forward(h.f32(), a.gate_NI.f32(), a.up_NI.f32(), n);
  return h.f32();
}

Activation kept(const Tensor& t) {
  if (t.dtype() == DType::BF16) return {nullptr, nullptr, t.data<uint16_t>()};
  return t.f32();
}

void ensure_kept(Tensor& t, int64_t N, int64_t cols, bool bf16_only) {
  t.ensure({N, cols}, bf16_only ? DType::BF16 : DType::F32);
}

void Linear::init(ParamStore& ps, const std::string& name, int64_t in_features, int64_t out_features, float std) {
  in = in_features;
  out = out_features;
  w = ps.add(name, {out, in}, Init::Normal, std);
}

void Linear::forward(const ParamStore& ps, float* y, Activation x, int64_t N, bool accumulate) const {
  if (x.e4m3 && prec == Precision::FP8)
    return compute().linear_forward_fp8(y, *x.e4m3, ps.param(w).f32(), out, accumulate);
  if (x.bf16 && prec == Precision::BF16)
    return compute().linear_forward_bf16(y, x.bf16, ps.param(w).f32(), N, in, out, accumulate);
  MOE_CHECK(x.f32, "Linear: an input kept only in bf16 read at ", precision_name(prec));
  compute().linear_forward(y, x.f32, ps.param(w).f32(), N, in, out, accumulate, prec);
}

void Linear::backward(const ParamStore& ps, float* dx, const float* dy, Activation x, int64_t N,
                      bool accumulate_dx) const {
  if (x.bf16 && prec == Precision::BF16)
    return compute().linear_backward_bf16(dx, ps.grad(w).f32(), dy, x.bf16, ps.param(w).f32(), N, in, out,
                                          accumulate_dx);
  MOE_CHECK(x.f32, "Linear: an input kept only in bf16 read at ", precision_name(prec));
  compute().linear_backward(dx, ps.grad(w).f32(), dy, x.f32, ps.param(w).f32(), N, in, out, accumulate_dx, prec);
}

void RMSNorm::init(ParamStore& ps, const std::string& name, int64_t d, float eps_) {
  dim = d;
  eps = eps_;
  w = ps.add(name, {d}, Init::Ones, 0.f, /*decay=*/false);
}

Activation RMSNorm::forward(const ParamStore& ps, float* y, float* rstd, const float* x, int64_t N,
                            const Fp8Rows* yq, uint16_t* yb) const {
  if (yq)
    compute().rmsnorm_forward_fp8(y, rstd, *yq, x, ps.param(w).f32(), eps);
  else
    compute().rmsnorm_forward(y, rstd, x, ps.param(w).f32(), N, dim, eps);
  if (yb) compute().cast_f32_to_bf16(yb, y, N * dim);
  return {y, yq, yb};
}

Activation RMSNorm::forward_kept(const ParamStore& ps, Tensor& y_kept, Tensor& y_scratch, float* rstd,
                                 const float* x, int64_t N, bool bf16_only, const Fp8Rows* yq) const {
  ensure_kept(y_kept, N, dim, bf16_only);
  if (!bf16_only) return forward(ps, y_kept.f32(), rstd, x, N, yq);
  y_scratch = scratch({N, dim});
  return forward(ps, y_scratch.f32(), rstd, x, N, nullptr, y_kept.data<uint16_t>());
}

void RMSNorm::backward(const ParamStore& ps, float* dx, const float* dy, const float* x, const float* rstd,
                       int64_t N, bool accumulate_dx) const {
  compute().rmsnorm_backward(dx, ps.grad(w).f32(), dy, x, ps.param(w).f32(), rstd, N, dim, accumulate_dx);
}

void SwiGLUMLP::init(ParamStore& ps, const std::string& prefix, int64_t hidden, int64_t inter, float std) {
  gate_proj.init(ps, prefix + ".gate_proj.weight", hidden, inter, std);
  up_proj.init(ps, prefix + ".up_proj.weight", hidden, inter, std);
  down_proj.init(ps, prefix + ".down_proj.weight", inter, hidden, std);
}

void SwiGLUMLP::forward(const ParamStore& ps, float* y, Activation x, int64_t N, MLPActs& a, bool accumulate) const {
  int64_t I = gate_proj.out;
  const bool bf16 = down_proj.prec == Precision::BF16;
  ensure_kept(a.gate_NI, N, I, bf16);
  ensure_kept(a.up_NI, N, I, bf16);
  ScratchScope scope;  // h lives for the forward only
  Tensor h;
  if (bf16) {
    Tensor g = scratch({N, I}), u = scratch({N, I});
    gate_proj.forward(ps, g.f32(), x, N);
    up_proj.forward(ps, u.f32(), x, N);
    keep_rounded(a, g.f32(), u.f32(), N * I);
    return down_proj.forward(ps, y, swiglu_of(a, N * I, h), N, accumulate);
  }
  gate_proj.forward(ps, a.gate_NI.f32(), x, N);
  up_proj.forward(ps, a.up_NI.f32(), x, N);
  if (down_proj.prec != Precision::FP8) return down_proj.forward(ps, y, swiglu_of(a, N * I, h), N, accumulate);
  // fp8: SwiGLU writes h's E4M3 rows for down_proj as well.
  h = scratch({N, I});
  const ScratchFp8Rows hq(N, I);
  compute().swiglu_forward_fp8(h.f32(), hq.get(), a.gate_NI.f32(), a.up_NI.f32());
  down_proj.forward(ps, y, {h.f32(), hq.ptr()}, N, accumulate);
}

void SwiGLUMLP::backward(const ParamStore& ps, float* dx, const float* dy, Activation x, int64_t N, MLPActs& a,
                         bool accumulate_dx) const {
  int64_t I = gate_proj.out;
  ScratchScope scope;
  Tensor dh = scratch({N, I}), dg = scratch({N, I}), du = scratch({N, I}), h;
  down_proj.backward(ps, dh.f32(), dy, swiglu_of(a, N * I, h), N);
  swiglu_backward_kept(dg.f32(), du.f32(), dh.f32(), a, N * I);
  gate_proj.backward(ps, dx, dg.f32(), x, N, accumulate_dx);
  up_proj.backward(ps, dx, du.f32(), x, N, /*accumulate_dx=*/true);
}

}  // namespace moe
