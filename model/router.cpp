#include "model/router.h"

#include <cmath>

#include "framework/backend.h"
#include "framework/kernels/softmax.h"
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

  // The losses are computed on the host from a copy of what they need (small next to the
  // activations: N*E scores, N*K choices); the choices stay for backward's frequencies.
  // Sequence-wise balance loss: sum_e f_e P_e per sequence, averaged over sequences, with
  // f_e = E/(K T) * #tokens choosing e, P_e = mean_t s'_te, s' = s / sum_e s (normalised scores).
  a.aux_loss = 0;
  if (aux_coef > 0) {
    std::vector<float> scores(size_t(N * E));
    a.idx_host.resize(size_t(N * K));
    compute().download(scores.data(), a.scores_NE.raw(), scores.size() * sizeof(float));
    compute().download(a.idx_host.data(), a.idx_NK.raw(), a.idx_host.size() * sizeof(int32_t));
    for (int64_t bb = 0; bb < B; ++bb) {
      std::vector<double> f(E, 0.0), P(E, 0.0);
      for (int64_t t = 0; t < T; ++t) {
        int64_t n = bb * T + t;
        for (int64_t k = 0; k < K; ++k) f[a.idx_host[n * K + k]] += double(E) / double(K * T);
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
    std::vector<float> logits(size_t(N * E));
    compute().download(logits.data(), a.logits_NE.raw(), logits.size() * sizeof(float));
    for (int64_t n = 0; n < N; ++n) {
      kern::SerialRow one;
      double lse = kern::logsumexp_row(one, logits.data() + n * E, E);
      a.z_loss += z_coef * lse * lse / double(N);
    }
  }
}

void Router::backward(const ParamStore& ps, float* dx, const float* dweights, const float* x, int64_t B, int64_t T,
                      const RouterActs& a, float loss_scale) const {
  const int64_t N = B * T;
  const float *scores = a.scores_NE.f32(), *logits = a.logits_NE.f32();
  ScratchScope scope;
  // Balance-loss frequencies per sequence (constants in the gradient), from forward's host copy
  // of the choices.
  Tensor f_BE;
  if (aux_coef > 0) {
    std::vector<float> f(size_t(B * E), 0.f);
    for (int64_t n = 0; n < N; ++n)
      for (int64_t k = 0; k < K; ++k) f[(n / T) * E + a.idx_host[n * K + k]] += float(E) / float(K * T);
    f_BE = scratch({B, E});
    compute().upload(f_BE.raw(), f.data(), f.size() * sizeof(float));
  }
  Tensor dlogits = scratch({N, E});
  float* dl = dlogits.f32();
  kern::RouterLossGrad lg;
  lg.aux = aux_coef * loss_scale / float(B * T);
  lg.z = z_coef > 0 ? 2.f * z_coef * loss_scale : 0.f;
  lg.tokens = N;
  compute().router_backward(dl, scores, logits, a.idx_NK.data<int32_t>(), dweights,
                            aux_coef > 0 ? f_BE.f32() : nullptr, T, lg, N, spec(*this));
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
