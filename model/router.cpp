#include "model/router.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "framework/gemm.h"
#include "framework/kernels/rows.h"
#include "framework/scratch.h"
#include "framework/threads.h"

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

namespace {

// Indices of the k largest values (ties: lower index first, as a stable descending sort gives).
void top_k(const float* v, int64_t n, int64_t k, int32_t* out) {
  int32_t order[1024];
  int32_t* o = n <= 1024 ? order : new int32_t[n];
  std::iota(o, o + n, 0);
  std::partial_sort(o, o + k, o + n, [&](int32_t a, int32_t b) { return v[a] > v[b] || (v[a] == v[b] && a < b); });
  std::copy(o, o + k, out);
  if (o != order) delete[] o;
}

}  // namespace

void Router::forward(const ParamStore& ps, const float* x, int64_t B, int64_t T, RouterActs& a,
                     float* load_E) const {
  const int64_t N = B * T;
  a.logits_NE.ensure({N, E});
  a.scores_NE.ensure({N, E});
  a.weights_NK.ensure({N, K});
  a.idx_NK.resize(size_t(N * K));
  linear_forward(a.logits_NE.f32(), x, ps.param(w).f32(), N, D, E);
  const float* b = ps.param(bias).f32();
  float *logits = a.logits_NE.f32(), *scores = a.scores_NE.f32(), *weights = a.weights_NK.f32();
  const int64_t per_group = E / groups;
  parallel_for(N, [&](int64_t n0, int64_t n1) {
    std::vector<float> choice(E), gscore(groups);
    std::vector<int32_t> top2(2), gidx(groups);
    for (int64_t n = n0; n < n1; ++n) {
      const float* l = logits + n * E;
      float* s = scores + n * E;
      if (softmax) {
        float lse = kern::logsumexp_row(l, E);
        for (int64_t e = 0; e < E; ++e) s[e] = std::exp(l[e] - lse);
      } else {
        for (int64_t e = 0; e < E; ++e) s[e] = kern::sigmoidf(l[e]);
      }
      for (int64_t e = 0; e < E; ++e) choice[e] = s[e] + b[e];
      if (groups > 1) {
        for (int64_t g = 0; g < groups; ++g) {
          top_k(choice.data() + g * per_group, per_group, 2, top2.data());
          gscore[g] = choice[g * per_group + top2[0]] + choice[g * per_group + top2[1]];
        }
        top_k(gscore.data(), groups, groups_per_token, gidx.data());
        std::vector<char> keep(groups, 0);
        for (int64_t i = 0; i < groups_per_token; ++i) keep[gidx[i]] = 1;
        for (int64_t e = 0; e < E; ++e)
          if (!keep[e / per_group]) choice[e] = 0.f;
      }
      int32_t* idx = a.idx_NK.data() + n * K;
      top_k(choice.data(), E, K, idx);
      float sum = 0.f;
      for (int64_t k = 0; k < K; ++k) sum += s[idx[k]];
      for (int64_t k = 0; k < K; ++k) weights[n * K + k] = s[idx[k]] / (sum + 1e-20f) * routed_scaling;
    }
  }, 32);

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
      double lse = kern::logsumexp_row(logits + n * E, E);
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
  parallel_for(N, [&](int64_t n0, int64_t n1) {
    std::vector<float> ds(E);
    for (int64_t n = n0; n < n1; ++n) {
      const float* s = scores + n * E;
      const int32_t* idx = a.idx_NK.data() + n * K;
      std::fill(ds.begin(), ds.end(), 0.f);
      // w_k = c * s_k / S, S = sum_j s_j (+1e-20): dL/ds_j = c * (g_j / S - sum_k g_k s_k / S^2)
      float S = 1e-20f, gs = 0.f;
      for (int64_t k = 0; k < K; ++k) S += s[idx[k]];
      for (int64_t k = 0; k < K; ++k) gs += dweights[n * K + k] * s[idx[k]];
      for (int64_t k = 0; k < K; ++k)
        ds[idx[k]] += routed_scaling * (dweights[n * K + k] / S - gs / (S * S));
      if (aux_coef > 0) {
        // L += coef/B * sum_e f_e * (1/T) * s'_e,  s'_e = s_e / tot
        float tot = 0.f;
        for (int64_t e = 0; e < E; ++e) tot += s[e];
        const float* fe = f.data() + (n / T) * E;
        float c = aux_coef * loss_scale / float(B * T), dot = 0.f;
        for (int64_t e = 0; e < E; ++e) dot += fe[e] * s[e];
        for (int64_t e = 0; e < E; ++e) ds[e] += c * (fe[e] - dot / tot) / tot;
      }
      float* d = dl + n * E;
      if (softmax) {
        float dot = 0.f;
        for (int64_t e = 0; e < E; ++e) dot += ds[e] * s[e];
        for (int64_t e = 0; e < E; ++e) d[e] = s[e] * (ds[e] - dot);
      } else {
        for (int64_t e = 0; e < E; ++e) d[e] = ds[e] * s[e] * (1.f - s[e]);
      }
      if (z_coef > 0) {
        const float* l = logits + n * E;
        float lse = kern::logsumexp_row(l, E);
        float c = 2.f * z_coef * loss_scale * lse / float(N);
        for (int64_t e = 0; e < E; ++e) d[e] += c * std::exp(l[e] - lse);
      }
    }
  }, 32);
  linear_backward(dx, ps.grad(w).f32(), dl, x, ps.param(w).f32(), N, D, E, /*accumulate_dx=*/true);
}

void Router::update_bias(const ParamStore& ps, const float* load_E, float rate) const {
  float* b = ps.param(bias).f32();
  double mean = 0;
  for (int64_t e = 0; e < E; ++e) mean += load_E[e] / double(E);
  for (int64_t e = 0; e < E; ++e) {
    double diff = mean - load_E[e];
    b[e] += rate * float((diff > 0) - (diff < 0));
  }
}

}  // namespace moe
