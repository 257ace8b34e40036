#include "model/layers.h"

#include "framework/backend.h"
#include "framework/scratch.h"

namespace moe {

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
  compute().linear_forward(y, x.f32, ps.param(w).f32(), N, in, out, accumulate, prec);
}

void Linear::backward(const ParamStore& ps, float* dx, const float* dy, Activation x, int64_t N,
                      bool accumulate_dx) const {
  if (x.bf16 && prec == Precision::BF16)
    return compute().linear_backward_bf16(dx, ps.grad(w).f32(), dy, x.bf16, ps.param(w).f32(), N, in, out,
                                          accumulate_dx);
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
  a.gate_NI.ensure({N, I});
  a.up_NI.ensure({N, I});
  a.h_NI.ensure({N, I});
  gate_proj.forward(ps, a.gate_NI.f32(), x, N);
  up_proj.forward(ps, a.up_NI.f32(), x, N);
  if (down_proj.prec != Precision::FP8) {
    compute().swiglu_forward(a.h_NI.f32(), a.gate_NI.f32(), a.up_NI.f32(), N * I);
    return down_proj.forward(ps, y, a.h_NI.f32(), N, accumulate);
  }
  // fp8: SwiGLU writes h's E4M3 rows for down_proj as well.
  ScratchScope scope;
  const ScratchFp8Rows hq(N, I);
  compute().swiglu_forward_fp8(a.h_NI.f32(), hq.get(), a.gate_NI.f32(), a.up_NI.f32());
  down_proj.forward(ps, y, {a.h_NI.f32(), hq.ptr()}, N, accumulate);
}

void SwiGLUMLP::backward(const ParamStore& ps, float* dx, const float* dy, Activation x, int64_t N, MLPActs& a,
                         bool accumulate_dx) const {
  int64_t I = gate_proj.out;
  ScratchScope scope;
  Tensor dh = scratch({N, I}), dg = scratch({N, I}), du = scratch({N, I});
  down_proj.backward(ps, dh.f32(), dy, a.h_NI.f32(), N);
  compute().swiglu_backward(dg.f32(), du.f32(), dh.f32(), a.gate_NI.f32(), a.up_NI.f32(), N * I);
  gate_proj.backward(ps, dx, dg.f32(), x, N, accumulate_dx);
  up_proj.backward(ps, dx, du.f32(), x, N, /*accumulate_dx=*/true);
}

}  // namespace moe
