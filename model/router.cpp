#include "model/router.h"

#include "framework/backend.h"
#include "framework/scratch.h"

namespace moe {

void Router::init(ParamStore& ps, const std::string& prefix, const ModelConfig& c) {
  E = c.routed_experts; K = c.experts_per_token; D = c.hidden;
  groups = c.router.groups; groups_per_token = c.router.groups_per_token;
  softmax = c.router.score == "softmax";
  routed_scaling = float(c.router.routed_scaling);
  aux_coef = float(c.router.aux_loss_coef);
  z_coef = float(c.router.z_loss_coef);
  w = ps.add(prefix + ".weight", {E, D}, Init::Normal, float(c.init_std));
  bias = ps.add(prefix + ".e_score_correction_bias", {E}, Init::Zeros, 0.f, /*decay=*/false, /*trainable=*/false);
}

// The per-token constants of the single-source router kernels (framework/kernels/router.h).
static kern::RouterSpec spec(const Router& r) {
  kern::RouterSpec sp;
  sp.E = int32_t(r.E);
  sp.K = int32_t(r.K);
  sp.groups = int32_t(r.groups);
  sp.groups_per_token = int32_t(r.groups_per_token);
  sp.softmax = r.softmax;
  sp.routed_scaling = r.routed_scaling;
  return sp;
}

void Router::forward(const ParamStore& ps, const float* x, int64_t B, int64_t T, RouterActs& a) const {
  const int64_t N = B * T;
  a.logits_NE.ensure({N, E});
  a.scores_NE.ensure({N, E});
  a.weights_NK.ensure({N, K});
  a.idx_NK.ensure({N, K}, DType::I32);
  compute().linear_forward(a.logits_NE.f32(), x, ps.param(w).f32(), N, D, E, false, Precision::FP32);
  compute().router_forward(a.scores_NE.f32(), a.idx_NK.data<int32_t>(), a.weights_NK.f32(), a.logits_NE.f32(),
                           ps.param(bias).f32(), N, spec(*this));

  // The balance loss (sequence-wise: sum_e f_e P_e per sequence, averaged over sequences, with
  // f_e = E/(K T) * #tokens choosing e, P_e = mean_t s'_te, s' = s / sum_e s) and the z-loss (mean
  // over tokens of logsumexp(logits)^2), on the device: no copy of the scores comes to the host.
  if (has_losses()) {
    a.losses_2.ensure({2});
    if (aux_coef > 0) a.f_BE.ensure({B, E});
    compute().router_loss_stats(a.losses_2.f32(), aux_coef > 0 ? a.f_BE.f32() : nullptr, a.scores_NE.f32(),
                                a.logits_NE.f32(), a.idx_NK.data<int32_t>(), B, T, aux_coef, z_coef, spec(*this));
  }
}

void Router::backward(const ParamStore& ps, float* dx, const float* dweights, const float* x, int64_t B, int64_t T,
                      const RouterActs& a, float loss_scale) const {
  const int64_t N = B * T;
  const float *scores = a.scores_NE.f32(), *logits = a.logits_NE.f32();
  ScratchScope scope;
  Tensor dlogits = scratch({N, E});
  float* dl = dlogits.f32();
  kern::RouterLossGrad lg;
  lg.aux = aux_coef * loss_scale / float(B * T);
  lg.z = z_coef > 0 ? 2.f * z_coef * loss_scale : 0.f;
  lg.tokens = N;
  compute().router_backward(dl, scores, logits, a.idx_NK.data<int32_t>(), dweights,
                            aux_coef > 0 ? a.f_BE.f32() : nullptr, T, lg, N, spec(*this));
  compute().linear_backward(dx, ps.grad(w).f32(), dl, x, ps.param(w).f32(), N, D, E, /*accumulate_dx=*/true,
                            Precision::FP32);
}

void Router::update_bias(const ParamStore& ps, const float* load_E, float rate) const {
  ScratchScope scope;
  Tensor load = scratch({E});
  compute().upload(load.raw(), load_E, size_t(E) * sizeof(float));
  compute().router_bias_update(ps.param(bias).f32(), load.f32(), E, rate);
}

}  // namespace moe
