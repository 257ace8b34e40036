// DeepSeek-V3 router math for one token (single source: framework/kernels/row.h). Hugging Face
// DeepseekV3TopkRouter, in f32:
//   s      = sigmoid(logits)  (or softmax over E)
//   choice = s + e_score_correction_bias (the bias only steers the choice)
//   group-limited: groups ranked by the sum of their top-2 choice scores; experts outside the best
//   groups_per_token groups get choice score 0 (not -inf, as in Hugging Face)
//   idx    = top-k(choice)
//   w      = s[idx] / (sum s[idx] + 1e-20) * routed_scaling
// One token is small (E scores), so these run serially per token on both backends: a CPU thread or
// a CUDA thread per token. Letters: E routed experts, K experts per token, G groups.
#pragma once
#include <stdint.h>

#include "framework/kernels/activation.h"
#include "framework/kernels/hd.h"
#include "framework/kernels/row.h"
#include "framework/kernels/softmax.h"

namespace moe::kern {

struct RouterSpec {
  int32_t E = 0, K = 0, groups = 1, groups_per_token = 1;
  bool softmax = false;
  float routed_scaling = 1.f;
};

// Scratch router_row_forward needs per token: E + G floats and G ints.
MOE_HD inline int64_t router_scratch_floats(const RouterSpec& sp) { return sp.E + int64_t(sp.groups); }
MOE_HD inline int64_t router_scratch_ints(const RouterSpec& sp) { return sp.groups; }

// Indices of the k largest of v[n] in descending order; ties go to the lower index (what a stable
// descending sort gives). Insertion into the sorted prefix: O(n k), no allocation.
MOE_HD inline void top_k(int32_t* out, const float* v, int64_t n, int64_t k) {
  int64_t m = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float x = v[i];
    if (m == k && !(x > v[out[k - 1]])) continue;  // an equal value keeps the earlier index
    int64_t j = m < k ? m++ : k - 1;
    while (j > 0 && x > v[out[j - 1]]) {
      out[j] = out[j - 1];
      --j;
    }
    out[j] = int32_t(i);
  }
}

// One token: scores s[E] from logits l[E]; the choice idx[K] and combine weights w[K].
// scratch and iscratch hold router_scratch_floats(sp) and router_scratch_ints(sp) values.
MOE_HD inline void router_row_forward(float* s, int32_t* idx, float* w, const float* l, const float* bias,
                                      const RouterSpec& sp, float* scratch, int32_t* iscratch) {
  const int64_t E = sp.E, K = sp.K, G = sp.groups;
  SerialRow one;
  if (sp.softmax) {
    float lse = logsumexp_row(one, l, E);
    softmax_row_recompute(one, s, l, lse, E, E, /*fast=*/false);
  } else {
    for (int64_t e = 0; e < E; ++e) s[e] = sigmoidf(l[e]);
  }
  float* choice = scratch;
  for (int64_t e = 0; e < E; ++e) choice[e] = s[e] + bias[e];
  if (G > 1) {
    float* gscore = scratch + E;
    int32_t* gidx = iscratch;
    const int64_t per = E / G;
    for (int64_t g = 0; g < G; ++g) {
      int32_t top2[2];
      top_k(top2, choice + g * per, per, 2);
      gscore[g] = choice[g * per + top2[0]] + choice[g * per + top2[1]];
    }
    top_k(gidx, gscore, G, sp.groups_per_token);
    for (int64_t e = 0; e < E; ++e) {
      bool keep = false;
      for (int64_t j = 0; j < sp.groups_per_token; ++j) keep = keep || gidx[j] == e / per;
      if (!keep) choice[e] = 0.f;
    }
  }
  top_k(idx, choice, E, K);
  float sum = 0.f;
  for (int64_t k = 0; k < K; ++k) sum += s[idx[k]];
  for (int64_t k = 0; k < K; ++k) w[k] = s[idx[k]] / (sum + 1e-20f) * sp.routed_scaling;
}

// Constants of router_row_backward's optional loss terms for one token.
struct RouterLossGrad {
  const float* f = nullptr;  // [E] the token's sequence's balance frequencies, or null (no aux loss)
  float aux = 0.f;           // aux_loss_coef * loss_scale / (B*T)
  float z = 0.f;             // 2 * z_loss_coef * loss_scale (0: no z-loss)
  int64_t tokens = 1;        // N, the tokens the z-loss averages over
};

// One token: dl[E] (assigned) = d loss / d logits from dw[K] = d loss / d combine weights, plus the
// sequence balance loss and the z-loss terms. ds is scratch of E floats.
MOE_HD inline void router_row_backward(float* dl, float* ds, const float* s, const float* l, const int32_t* idx,
                                       const float* dw, const RouterLossGrad& lg, const RouterSpec& sp) {
  const int64_t E = sp.E, K = sp.K;
  for (int64_t e = 0; e < E; ++e) ds[e] = 0.f;
  // w_k = c * s_k / S, S = sum_j s_j (+1e-20): dL/ds_j = c * (g_j / S - sum_k g_k s_k / S^2)
  float S = 1e-20f, gs = 0.f;
  for (int64_t k = 0; k < K; ++k) S += s[idx[k]];
  for (int64_t k = 0; k < K; ++k) gs += dw[k] * s[idx[k]];
  for (int64_t k = 0; k < K; ++k) ds[idx[k]] += sp.routed_scaling * (dw[k] / S - gs / (S * S));
  if (lg.f) {
    // L += coef/B * sum_e f_e * (1/T) * s'_e,  s'_e = s_e / tot
    float tot = 0.f;
    for (int64_t e = 0; e < E; ++e) tot += s[e];
    float dot = 0.f;
    for (int64_t e = 0; e < E; ++e) dot += lg.f[e] * s[e];
    for (int64_t e = 0; e < E; ++e) ds[e] += lg.aux * (lg.f[e] - dot / tot) / tot;
  }
  if (sp.softmax) {
    float dot = 0.f;
    for (int64_t e = 0; e < E; ++e) dot += ds[e] * s[e];
    for (int64_t e = 0; e < E; ++e) dl[e] = s[e] * (ds[e] - dot);
  } else {
    for (int64_t e = 0; e < E; ++e) dl[e] = ds[e] * s[e] * (1.f - s[e]);
  }
  if (lg.z != 0.f) {
    SerialRow one;
    float lse = logsumexp_row(one, l, E);
    const float c = lg.z * lse / float(lg.tokens);
    for (int64_t e = 0; e < E; ++e) dl[e] += c * expf(l[e] - lse);
  }
}

// The router's losses, computed where the scores are (no host copy of them), in three row passes:
//   token n:        tot[n] = sum_e s_ne (the balance loss normalises scores by it), and
//                   z[n] = logsumexp(logits_n)^2
//   (sequence b, e): f_be = E/(K T) * #choices of e in b, fP[b*E+e] = f_be * (1/T) sum_t s_te / tot_t
//   one row:        aux = aux_coef / B * sum fP, z = z_coef / N * sum z (f64, in index order per lane)
// The sums over tokens run in f64 (the host loop they replace did). A loss whose coefficient is 0
// is skipped: router_token_stats takes a null tot (no balance loss) or z (no z-loss).
template <class R>
MOE_HD inline void router_token_stats(R& r, float* tot, float* z, const float* s, const float* l, int64_t E) {
  if (tot) {
    float t = 0.f;
    for (int64_t e = r.lane(); e < E; e += r.width()) t += s[e];
    t = r.sum(t);
    if (r.leader()) *tot = t;
  }
  if (z) {
    const float lse = logsumexp_row(r, l, E);
    if (r.leader()) *z = lse * lse;
  }
}

// Sequence b, expert e: s, idx and tot start at the sequence's first token.
template <class R>
MOE_HD inline void router_balance_row(R& r, float* f, double* fP, const float* s, const int32_t* idx,
                                      const float* tot, int64_t T, int64_t e, const RouterSpec& sp) {
  const int64_t E = sp.E, K = sp.K;
  double count = 0, p = 0;
  for (int64_t t = r.lane(); t < T; t += r.width()) {
    for (int64_t k = 0; k < K; ++k) count += idx[t * K + k] == e ? 1.0 : 0.0;
    p += double(s[t * E + e]) / double(tot[t]);
  }
  count = r.sum(count);
  p = r.sum(p);
  if (r.leader()) {
    const double fe = double(E) / double(K * T) * count;
    *f = float(fe);
    *fP = fe * p / double(T);
  }
}

// losses[0] = aux_coef / B * sum fP[BE], losses[1] = z_coef / N * sum z[N]; a loss over 0 terms is 0.
template <class R>
MOE_HD inline void router_loss_totals(R& r, float* losses, const double* fP, int64_t BE, int64_t B, const float* z,
                                      int64_t N, float aux_coef, float z_coef) {
  double a = 0, q = 0;
  for (int64_t i = r.lane(); i < BE; i += r.width()) a += fP[i];
  for (int64_t i = r.lane(); i < N; i += r.width()) q += double(z[i]);
  a = r.sum(a);
  q = r.sum(q);
  if (r.leader()) {
    losses[0] = BE > 0 ? float(double(aux_coef) * a / double(B)) : 0.f;
    losses[1] = N > 0 ? float(double(z_coef) * q / double(N)) : 0.f;
  }
}

// Aux-loss-free balancing: b_e += rate * sign(mean(load) - load_e). The mean in f64, summed in
// expert order (the same bits on both backends: a load equal to the mean must give sign 0).
MOE_HD inline double router_mean_load(const float* load, int64_t E) {
  double mean = 0;
  for (int64_t e = 0; e < E; ++e) mean += load[e] / double(E);
  return mean;
}

MOE_HD inline void router_bias_update(float* b, float load, double mean, float rate) {
  double diff = mean - double(load);
  *b += rate * float((diff > 0) - (diff < 0));
}

}  // namespace moe::kern
