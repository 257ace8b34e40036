#include "model/router.h"

#include <cmath>

#include "framework/gemm.h"
#include "framework/kernels/softmax.h"
#include "framework/moe_ops.h"
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

void Router::forward(const ParamStore& ps, const float* x, int64_t B, int64_t T, RouterActs& a,
                     float* load_E) const {
  const int64_t N = B * T;
  a.logits_NE.ensure({N, E});
  a.scores_NE.ensure({N, E});
  a.weights_NK.ensure({N, K});
  a.idx_NK.resize(size_t(N * K));
  linear_forward(a.logits_NE.f32(), x, ps.param(w).f32(), N, D, E);
  const float* b = ps.param(bias).f32();
  const float* logits = a.logits_NE.f32();
  float* scores = a.scores_NE.f32();
  router_forward(scores, a.idx_NK.data(), a.weights_NK.f32(), logits, b, N, spec(*this));

  if (load_E)
    for (int64_t i = 0; i < N * K; ++i) load_E[a.idx_NK[i]] += 1.f;

  // Sequence-wise balance loss: sum_e f_e P_e per sequence, averaged over sequences, with
  // f_e = E/(K T) * #tokens choosing e, P_e = mean_t s'_te, s' = s / sum_e s (normalised scores).
  a.aux_loss = 0;
  if (aux_coef > 0) {
    for (int64_t bb = 0; bb < B; ++bb) {
      std::vector<double> f(E, 0.0), P(E, 0.0);
      for (int64_t t = 0; t < T; ++t) {
        int64_t n = bb * T + t;
        for (int64_t k = 0; k < K; ++k) f[a.idx_NK[n * K + k]] += double(E) / double(K * T);
        double tot = 0;
        for (int64_t e = 0; e < E; ++e) tot += scores[n * E + e];
        for (int64_t e = 0; e < E; ++e) P[e] += scores[n * E + e] / tot / double(T);
      }
      for (int64_t e = 0; e < E; ++e) a.aux_loss += aux_coef * f[e] * P[e] / double(B);
    }
  }
  // z-loss: mean over tokens of logsumexp(logits)^2.
  a.z_loss = 0;
  if (z_coef > 0) {
    for (int64_t n = 0; n < N; ++n) {
      kern::SerialRow one;
      double lse = kern::logsumexp_row(one, logits + n * E, E);
      a.z_loss += z_coef * lse * lse / double(N);
    }
  }
}

void Router::backward(const ParamStore& ps, float* dx, const float* dweights, const float* x, int64_t B, int64_t T,
                      const RouterActs& a, float loss_scale) const {
  const int64_t N = B * T;
  const float *scores = a.scores_NE.f32(), *logits = a.logits_NE.f32();
  // Balance-loss frequencies per sequence (constants in the gradient).
  std::vector<float> f;
  if (aux_coef > 0) {
    f.assign(size_t(B * E), 0.f);
    for (int64_t n = 0; n < N; ++n)
      for (int64_t k = 0; k < K; ++k) f[(n / T) * E + a.idx_NK[n * K + k]] += float(E) / float(K * T);
  }
  ScratchScope scope;
  Tensor dlogits = scratch({N, E});
  float* dl = dlogits.f32();
  kern::RouterLossGrad lg;
  lg.aux = aux_coef * loss_scale / float(B * T);
  lg.z = z_coef > 0 ? 2.f * z_coef * loss_scale : 0.f;
  lg.tokens = N;
  router_backward(dl, scores, logits, a.idx_NK.data(), dweights, aux_coef > 0 ? f.data() : nullptr, T, lg, N,
                  spec(*this));
  linear_backward(dx, ps.grad(w).f32(), dl, x, ps.param(w).f32(), N, D, E, /*accumulate_dx=*/true);
}

void Router::update_bias(const ParamStore& ps, const float* load_E, float rate) const {
  router_bias_update(ps.param(bias).f32(), load_E, E, rate);
}

}  // namespace moe
