// The MoE single-source kernels (framework/kernels/router.h, permute.h) and their CPU ops
// (framework/moe_ops.h): top-k against a stable sort, the router row against a plain reference and
// finite differences, the dispatch plan against a counting sort (also under several lanes, which
// is how the CUDA backend runs it), and the gathers/combine against naive loops.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "framework/dtype.h"
#include "framework/kernels/permute.h"
#include "framework/kernels/router.h"
#include "framework/moe_ops.h"
#include "framework/threads.h"
#include "tests/unit/lanes.h"
#include "tests/unit/test_random.h"

using namespace moe;
using moe::test::LaneRow;
using moe::test::Lanes;

namespace {

using moe::test::randn;

std::vector<int32_t> stable_top_k(const std::vector<float>& v, int64_t k) {
  std::vector<int32_t> o(v.size());
  std::iota(o.begin(), o.end(), 0);
  std::stable_sort(o.begin(), o.end(), [&](int32_t a, int32_t b) { return v[a] > v[b]; });
  o.resize(static_cast<size_t>(k));
  return o;
}

// The router of Hugging Face's DeepseekV3TopkRouter for one token, written out plainly.
struct RefRoute {
  std::vector<float> s, w;
  std::vector<int32_t> idx;
};
RefRoute ref_route(const std::vector<float>& l, const std::vector<float>& bias, const kern::RouterSpec& sp) {
  const int64_t E = sp.E, G = sp.groups, per = E / G;
  RefRoute r;
  r.s.resize(static_cast<size_t>(E));
  double z = 0, m = *std::max_element(l.begin(), l.end());
  for (int64_t e = 0; e < E; ++e) z += std::exp(double(l[e]) - m);
  for (int64_t e = 0; e < E; ++e)
    r.s[e] = sp.softmax ? float(std::exp(double(l[e]) - m) / z) : float(1 / (1 + std::exp(-double(l[e]))));
  std::vector<float> choice(static_cast<size_t>(E));
  for (int64_t e = 0; e < E; ++e) choice[e] = r.s[e] + bias[e];
  if (G > 1) {
    std::vector<float> gs(static_cast<size_t>(G));
    for (int64_t g = 0; g < G; ++g) {
      std::vector<float> grp(choice.begin() + g * per, choice.begin() + (g + 1) * per);
      auto t2 = stable_top_k(grp, 2);
      gs[g] = grp[t2[0]] + grp[t2[1]];
    }
    auto keep = stable_top_k(gs, sp.groups_per_token);
    for (int64_t e = 0; e < E; ++e)
      if (std::find(keep.begin(), keep.end(), int32_t(e / per)) == keep.end()) choice[e] = 0.f;
  }
  r.idx = stable_top_k(choice, sp.K);
  double sum = 0;
  for (int32_t i : r.idx) sum += r.s[i];
  for (int32_t i : r.idx) r.w.push_back(float(r.s[i] / (sum + 1e-20) * sp.routed_scaling));
  return r;
}

kern::RouterSpec spec(int E, int K, int G, int GK, bool softmax) {
  kern::RouterSpec sp;
  sp.E = E, sp.K = K, sp.groups = G, sp.groups_per_token = GK, sp.softmax = softmax, sp.routed_scaling = 2.5f;
  return sp;
}

}  // namespace

TEST(MoEKernels, TopKIsAStableDescendingSort) {
  std::mt19937 rng(3);
  std::uniform_int_distribution<int> small(0, 4);  // many ties
  for (int trial = 0; trial < 200; ++trial) {
    const int64_t n = 1 + trial % 23, k = 1 + trial % std::max<int64_t>(1, n);
    std::vector<float> v(static_cast<size_t>(n));
    for (float& x : v) x = trial % 2 ? float(small(rng)) : std::normal_distribution<float>()(rng);
    std::vector<int32_t> got(static_cast<size_t>(k));
    kern::top_k(got.data(), v.data(), n, k);
    EXPECT_EQ(got, stable_top_k(v, k)) << "trial " << trial;
  }
}

TEST(MoEKernels, RouterRowMatchesReference) {
  for (auto sp : {spec(8, 2, 1, 1, false), spec(8, 3, 1, 1, true), spec(16, 4, 4, 2, false), spec(12, 2, 3, 1, true)}) {
    for (uint32_t seed = 0; seed < 20; ++seed) {
      auto l = randn(size_t(sp.E), 100 + seed, 2.f), bias = randn(size_t(sp.E), 200 + seed, 0.3f);
      std::vector<float> s(size_t(sp.E)), w(size_t(sp.K)), scratch(size_t(kern::router_scratch_floats(sp)));
      std::vector<int32_t> idx(size_t(sp.K)), iscratch(size_t(kern::router_scratch_ints(sp)));
      kern::router_row_forward(s.data(), idx.data(), w.data(), l.data(), bias.data(), sp, scratch.data(),
                               iscratch.data());
      RefRoute ref = ref_route(l, bias, sp);
      EXPECT_EQ(idx, ref.idx) << "E " << sp.E << " G " << sp.groups << " seed " << seed;
      for (int e = 0; e < sp.E; ++e) EXPECT_NEAR(s[e], ref.s[e], 1e-6);
      for (int k = 0; k < sp.K; ++k) EXPECT_NEAR(w[k], ref.w[k], 1e-6);
    }
  }
}

// L(logits) = sum_k g_k w_k + aux * sum_e f_e s_e / sum s + z/2 * lse(logits)^2 / N, with the choice
// held fixed (no ties nearby): router_row_backward's dlogits is its gradient.
TEST(MoEKernels, RouterRowBackwardIsTheGradient) {
  for (bool softmax : {false, true}) {
    auto sp = spec(6, 2, 1, 1, softmax);
    const int64_t E = sp.E, K = sp.K;
    auto l = randn(size_t(E), 5, 1.5f), bias = randn(size_t(E), 6, 0.1f), g = randn(size_t(K), 7);
    std::vector<float> f = {0.5f, 1.5f, 0.f, 2.f, 1.f, 1.f};
    kern::RouterLossGrad lg;
    lg.f = f.data();
    lg.aux = 0.3f;
    lg.z = 0.2f;
    lg.tokens = 4;
    std::vector<float> s(static_cast<size_t>(E)), w(static_cast<size_t>(K));
    std::vector<float> scratch(size_t(kern::router_scratch_floats(sp)));
    std::vector<int32_t> idx(static_cast<size_t>(K)), iscratch(size_t(kern::router_scratch_ints(sp)));
    kern::router_row_forward(s.data(), idx.data(), w.data(), l.data(), bias.data(), sp, scratch.data(),
                             iscratch.data());
    std::vector<float> dl(static_cast<size_t>(E)), ds(static_cast<size_t>(E));
    kern::router_row_backward(dl.data(), ds.data(), s.data(), l.data(), idx.data(), g.data(), lg, sp);
    auto L = [&](const std::vector<double>& x) {
      double m = *std::max_element(x.begin(), x.end()), z = 0;
      for (double a : x) z += std::exp(a - m);
      std::vector<double> sc(static_cast<size_t>(E));
      for (int64_t e = 0; e < E; ++e) sc[e] = softmax ? std::exp(x[e] - m) / z : 1 / (1 + std::exp(-x[e]));
      double S = 1e-20, tot = 0, fs = 0, out = 0;
      for (int64_t k = 0; k < K; ++k) S += sc[idx[k]];
      for (int64_t k = 0; k < K; ++k) out += g[k] * sp.routed_scaling * sc[idx[k]] / S;
      for (int64_t e = 0; e < E; ++e) tot += sc[e], fs += f[e] * sc[e];
      const double lse = m + std::log(z);
      return out + lg.aux * fs / tot + lg.z / 2 * lse * lse / double(lg.tokens);
    };
    std::vector<double> x(l.begin(), l.end());
    for (int64_t e = 0; e < E; ++e) {
      std::vector<double> up = x, down = x;
      up[e] += 1e-6, down[e] -= 1e-6;
      EXPECT_NEAR(dl[e], (L(up) - L(down)) / 2e-6, 2e-5) << "softmax " << softmax << " e " << e;
    }
  }
}

TEST(MoEKernels, BiasUpdateFollowsTheSignOfTheImbalance) {
  std::vector<float> bias = {0.f, 1.f, -1.f, 0.5f}, load = {3.f, 1.f, 2.f, 2.f};  // mean 2
  router_bias_update(bias.data(), load.data(), 4, 0.25f);
  EXPECT_EQ(bias, (std::vector<float>{-0.25f, 1.25f, -1.f, 0.5f}));
}

TEST(MoEKernels, DispatchPlanIsAStableCountingSort) {
  const int64_t N = 37, K = 3, P = N * K, E = 7;
  std::mt19937 rng(11);
  std::vector<int32_t> idx(static_cast<size_t>(P));
  for (auto& v : idx) v = int32_t(rng() % E);
  idx[0] = 6;  // and an expert without tokens:
  for (auto& v : idx)
    if (v == 2) v = 3;
  // Reference: counting sort, stable in pair order.
  std::vector<int64_t> off(size_t(E + 1), 0);
  for (int32_t e : idx) off[e + 1]++;
  for (int64_t e = 0; e < E; ++e) off[e + 1] += off[e];
  std::vector<int32_t> slot(static_cast<size_t>(P)), pos(static_cast<size_t>(P));
  std::vector<int64_t> fill(off.begin(), off.end() - 1);
  for (int64_t i = 0; i < P; ++i) slot[fill[idx[i]]] = int32_t(i), pos[i] = int32_t(fill[idx[i]]++);

  std::vector<int64_t> o(size_t(E + 1), -1);
  std::vector<int32_t> so(size_t(P), -1), po(size_t(P), -1);
  moe_dispatch_plan(o.data(), so.data(), po.data(), idx.data(), P, E);
  EXPECT_EQ(o, off);
  EXPECT_EQ(so, slot);
  EXPECT_EQ(po, pos);

  for (int W : {2, 5, 32}) {  // one "block" per expert, W lanes each, as on the GPU
    std::vector<int64_t> counts(static_cast<size_t>(E)), ol(size_t(E + 1), -1);
    std::vector<int32_t> sl(size_t(P), -1), pl(size_t(P), -1);
    for (int32_t e = 0; e < E; ++e)
      Lanes(W).run([&](LaneRow& r) { kern::dispatch_count_segment(r, counts.data(), idx.data(), P, e); });
    for (int32_t e = 0; e < E; ++e)
      Lanes(W).run([&](LaneRow& r) {
        kern::dispatch_fill_segment(r, ol.data(), sl.data(), pl.data(), counts.data(), idx.data(), P, e, int32_t(E));
      });
    EXPECT_EQ(ol, off) << W;
    EXPECT_EQ(sl, slot) << W;
    EXPECT_EQ(pl, pos) << W;
  }
}

TEST(MoEKernels, PermuteAndCombineForwardBackward) {
  const int64_t N = 9, K = 2, P = N * K, D = 11, E = 4;
  std::mt19937 rng(5);
  std::vector<int32_t> idx(static_cast<size_t>(P));
  for (int64_t n = 0; n < N; ++n) {
    idx[n * K] = int32_t(rng() % E);
    idx[n * K + 1] = int32_t((idx[n * K] + 1 + rng() % (E - 1)) % E);
  }
  std::vector<int64_t> off(size_t(E + 1));
  std::vector<int32_t> slot(static_cast<size_t>(P)), pos(static_cast<size_t>(P));
  moe_dispatch_plan(off.data(), slot.data(), pos.data(), idx.data(), P, E);
  auto x = randn(size_t(N * D), 1), ys = randn(size_t(P * D), 2), w = randn(size_t(P), 3), dy = randn(size_t(N * D), 4);
  auto dxs = randn(size_t(P * D), 5);
  for (int threads : {1, 3}) {
    set_num_threads(threads);
    std::vector<float> xs(size_t(P * D));
    moe_permute(xs.data(), x.data(), slot.data(), P, K, D);
    for (int64_t p = 0; p < P; ++p)
      for (int64_t i = 0; i < D; ++i) ASSERT_EQ(xs[p * D + i], x[(slot[p] / K) * D + i]);

    std::vector<float> y(size_t(N * D), 1.f), y_acc(size_t(N * D), 1.f);
    moe_unpermute(y.data(), ys.data(), pos.data(), w.data(), N, K, D, false);
    moe_unpermute(y_acc.data(), ys.data(), pos.data(), w.data(), N, K, D, true);
    for (int64_t n = 0; n < N; ++n)
      for (int64_t i = 0; i < D; ++i) {
        float want = 0.f, want_acc = 1.f;  // accumulated onto y in k order
        for (int64_t k = 0; k < K; ++k) {
          want += w[n * K + k] * ys[pos[n * K + k] * D + i];
          want_acc += w[n * K + k] * ys[pos[n * K + k] * D + i];
        }
        EXPECT_EQ(y[n * D + i], want);
        EXPECT_EQ(y_acc[n * D + i], want_acc);
      }

    std::vector<float> dw(static_cast<size_t>(P)), dys(size_t(P * D));
    moe_unpermute_backward(dw.data(), dys.data(), dy.data(), ys.data(), pos.data(), w.data(), N, K, D);
    for (int64_t n = 0; n < N; ++n)
      for (int64_t k = 0; k < K; ++k) {
        const int64_t p = pos[n * K + k];
        double dot = 0;
        for (int64_t i = 0; i < D; ++i) {
          dot += double(dy[n * D + i]) * ys[p * D + i];
          EXPECT_FLOAT_EQ(dys[p * D + i], w[n * K + k] * dy[n * D + i]);
        }
        EXPECT_NEAR(dw[n * K + k], dot, 1e-5);
      }

    // On outputs kept as bf16 bits: the f32 ops' bits on their values.
    const std::vector<uint16_t> ys_bits = test::bf16_bits(ys);
    std::vector<float> ys_values(ys.size());
    for (size_t i = 0; i < ys.size(); ++i) ys_values[i] = bf16_bits_to_f32(ys_bits[i]);
    for (bool accumulate : {false, true}) {
      std::vector<float> yb(size_t(N * D), 1.f), yf(size_t(N * D), 1.f);
      moe_unpermute_bf16(yb.data(), ys_bits.data(), pos.data(), w.data(), N, K, D, accumulate);
      moe_unpermute(yf.data(), ys_values.data(), pos.data(), w.data(), N, K, D, accumulate);
      EXPECT_EQ(yb, yf) << "accumulate " << accumulate;
    }
    std::vector<float> dwb(static_cast<size_t>(P)), dysb(size_t(P * D)), dwf(dwb.size()), dysf(dysb.size());
    moe_unpermute_backward_bf16(dwb.data(), dysb.data(), dy.data(), ys_bits.data(), pos.data(), w.data(), N, K, D);
    moe_unpermute_backward(dwf.data(), dysf.data(), dy.data(), ys_values.data(), pos.data(), w.data(), N, K, D);
    EXPECT_EQ(dwb, dwf);
    EXPECT_EQ(dysb, dysf);
    EXPECT_NE(dwb, dw);  // the rounding is seen: these are not the f32 outputs' results

    std::vector<float> dx(size_t(N * D), 0.5f);
    moe_permute_backward(dx.data(), dxs.data(), pos.data(), N, K, D);
    for (int64_t n = 0; n < N; ++n)
      for (int64_t i = 0; i < D; ++i)
        EXPECT_FLOAT_EQ(dx[n * D + i], 0.5f + dxs[pos[n * K] * D + i] + dxs[pos[n * K + 1] * D + i]);
  }
  set_num_threads(0);

  // The row functions under several lanes give the serial bits (no reduction but dw's dot).
  for (int W : {3, 8}) {
    std::vector<float> y(static_cast<size_t>(D)), dwl(static_cast<size_t>(K)), dysl(size_t(P * D), 0.f);
    Lanes(W).run([&](LaneRow& r) {
      kern::unpermute_row(r, y.data(), ys.data(), pos.data(), w.data(), K, D, false);
      kern::unpermute_row_backward(r, dwl.data(), dysl.data(), dy.data(), ys.data(), pos.data(), w.data(), K, D);
    });
    for (int64_t i = 0; i < D; ++i) EXPECT_FLOAT_EQ(y[i], w[0] * ys[pos[0] * D + i] + w[1] * ys[pos[1] * D + i]);
    for (int64_t i = 0; i < D; ++i) EXPECT_FLOAT_EQ(dysl[pos[1] * D + i], w[1] * dy[i]);
  }
}

TEST(MoEKernels, RouterOpsMatchTheRowKernel) {
  auto sp = spec(8, 2, 2, 1, false);
  const int64_t N = 50, T = 10;
  auto logits = randn(size_t(N * sp.E), 21), bias = randn(size_t(sp.E), 22, 0.2f), dw = randn(size_t(N * sp.K), 23);
  auto f = randn(size_t(N / T * sp.E), 24);
  std::vector<float> s1, w1, dl1;
  std::vector<int32_t> i1;
  for (int threads : {1, 3}) {
    set_num_threads(threads);
    std::vector<float> s(size_t(N * sp.E)), w(size_t(N * sp.K)), dl(size_t(N * sp.E));
    std::vector<int32_t> idx(size_t(N * sp.K));
    router_forward(s.data(), idx.data(), w.data(), logits.data(), bias.data(), N, sp);
    kern::RouterLossGrad lg;
    lg.aux = 0.1f, lg.z = 0.01f, lg.tokens = N;
    router_backward(dl.data(), s.data(), logits.data(), idx.data(), dw.data(), f.data(), T, lg, N, sp);
    // Token 17 by hand through the row kernels.
    std::vector<float> s17(size_t(sp.E)), w17(size_t(sp.K)), dl17(size_t(sp.E));
    std::vector<float> sc(size_t(kern::router_scratch_floats(sp)));
    std::vector<int32_t> i17(size_t(sp.K)), isc(size_t(kern::router_scratch_ints(sp)));
    kern::router_row_forward(s17.data(), i17.data(), w17.data(), logits.data() + 17 * sp.E, bias.data(), sp, sc.data(),
                             isc.data());
    lg.f = f.data() + (17 / T) * sp.E;
    kern::router_row_backward(dl17.data(), sc.data(), s17.data(), logits.data() + 17 * sp.E, i17.data(),
                              dw.data() + 17 * sp.K, lg, sp);
    for (int e = 0; e < sp.E; ++e) EXPECT_EQ(dl[17 * sp.E + e], dl17[e]);
    for (int k = 0; k < sp.K; ++k) EXPECT_EQ(idx[17 * sp.K + k], i17[k]);
    if (threads == 1) {
      s1 = s, w1 = w, dl1 = dl, i1 = idx;
    } else {  // the thread count changes nothing
      EXPECT_EQ(s, s1);
      EXPECT_EQ(w, w1);
      EXPECT_EQ(dl, dl1);
      EXPECT_EQ(idx, i1);
    }
  }
  set_num_threads(0);
}

namespace {

// The router's losses written out plainly in double, as the host loop that moe used before the
// device computed them (per sequence: f_e = E/(K T) #choices of e, P_e = mean_t s_te / sum_e s_te;
// aux = coef/B sum_b sum_e f_e P_e; z = coef/N sum_n logsumexp(logits_n)^2).
struct RefLosses {
  double aux = 0, z = 0;
  std::vector<double> f;
};
RefLosses ref_losses(const std::vector<float>& s, const std::vector<float>& l, const std::vector<int32_t>& idx,
                     int64_t B, int64_t T, int64_t E, int64_t K, double aux_coef, double z_coef) {
  RefLosses r;
  r.f.assign(size_t(B * E), 0.0);
  for (int64_t b = 0; b < B; ++b) {
    std::vector<double> P(size_t(E), 0.0);
    for (int64_t t = 0; t < T; ++t) {
      const int64_t n = b * T + t;
      for (int64_t k = 0; k < K; ++k) r.f[size_t(b * E + idx[size_t(n * K + k)])] += double(E) / double(K * T);
      double tot = 0;
      for (int64_t e = 0; e < E; ++e) tot += s[size_t(n * E + e)];
      for (int64_t e = 0; e < E; ++e) P[size_t(e)] += s[size_t(n * E + e)] / tot / double(T);
    }
    for (int64_t e = 0; e < E; ++e) r.aux += aux_coef * r.f[size_t(b * E + e)] * P[size_t(e)] / double(B);
  }
  for (int64_t n = 0; n < B * T; ++n) {
    double m = -1e300, z = 0;
    for (int64_t e = 0; e < E; ++e) m = std::max(m, double(l[size_t(n * E + e)]));
    for (int64_t e = 0; e < E; ++e) z += std::exp(double(l[size_t(n * E + e)]) - m);
    const double lse = m + std::log(z);
    r.z += z_coef * lse * lse / double(B * T);
  }
  return r;
}

}  // namespace

TEST(MoEKernels, RouterLossStatsMatchThePlainLoop) {
  for (bool softmax : {false, true}) {
    auto sp = spec(16, 3, 4, 2, softmax);
    const int64_t B = 3, T = 37, N = B * T, E = sp.E, K = sp.K;
    auto logits = randn(size_t(N * E), 31), bias = randn(size_t(E), 32, 0.1f);
    std::vector<float> s(size_t(N * E)), w(size_t(N * K));
    std::vector<int32_t> idx(size_t(N * K));
    router_forward(s.data(), idx.data(), w.data(), logits.data(), bias.data(), N, sp);
    const RefLosses want = ref_losses(s, logits, idx, B, T, E, K, 0.01, 0.002);
    std::vector<float> losses(2), f(size_t(B * E), -1.f);
    router_loss_stats(losses.data(), f.data(), s.data(), logits.data(), idx.data(), B, T, 0.01f, 0.002f, sp);
    EXPECT_NEAR(losses[0], want.aux, 1e-6 * want.aux) << "aux";
    EXPECT_NEAR(losses[1], want.z, 1e-6 * want.z) << "z";
    for (size_t i = 0; i < f.size(); ++i) EXPECT_NEAR(f[i], want.f[i], 1e-6 * (1 + want.f[i])) << "f " << i;
    // A zero aux coefficient: aux 0, f_BE not written (may be null); z unchanged.
    std::vector<float> only_z(2, -1.f);
    router_loss_stats(only_z.data(), nullptr, s.data(), logits.data(), idx.data(), B, T, 0.f, 0.002f, sp);
    EXPECT_EQ(only_z[0], 0.f);
    EXPECT_EQ(only_z[1], losses[1]);
    // A zero z coefficient: z 0 (its logsumexp pass skipped), aux and f_BE unchanged.
    std::vector<float> only_aux(2, -1.f), f_aux(size_t(B * E), -1.f);
    router_loss_stats(only_aux.data(), f_aux.data(), s.data(), logits.data(), idx.data(), B, T, 0.01f, 0.f, sp);
    EXPECT_EQ(only_aux[0], losses[0]);
    EXPECT_EQ(only_aux[1], 0.f);
    EXPECT_EQ(f_aux, f);

    // The three row functions under W lanes (the GPU's block shape) give the serial result to
    // f64 rounding (their sums run in another order); the frequencies are counts, exact.
    std::vector<float> tot(static_cast<size_t>(N)), z(static_cast<size_t>(N));
    for (int64_t n = 0; n < N; ++n) {
      kern::SerialRow one;
      kern::router_token_stats(one, &tot[size_t(n)], &z[size_t(n)], s.data() + n * E, logits.data() + n * E, E);
    }
    for (int Wl : {3, 32}) {
      for (int64_t n : {int64_t(0), int64_t(17), N - 1}) {
        float t = 0, zz = 0;
        Lanes(Wl).run([&](LaneRow& r) {
          kern::router_token_stats(r, &t, &zz, s.data() + n * E, logits.data() + n * E, E);
        });
        EXPECT_NEAR(t, tot[size_t(n)], 1e-6 * tot[size_t(n)]) << Wl << " lanes, token " << n;
        EXPECT_NEAR(zz, z[size_t(n)], 1e-5 * z[size_t(n)]) << Wl << " lanes, token " << n;
      }
      std::vector<float> fl(static_cast<size_t>(B * E));
      std::vector<double> fP(static_cast<size_t>(B * E));
      for (int64_t row = 0; row < B * E; ++row)
        Lanes(Wl).run([&](LaneRow& r) {
          const int64_t b = row / E, e = row % E, t0 = b * T;
          kern::router_balance_row(r, &fl[size_t(row)], &fP[size_t(row)], s.data() + t0 * E, idx.data() + t0 * K,
                                   tot.data() + t0, T, e, sp);
        });
      std::vector<float> lanes_losses(2);
      Lanes(Wl).run([&](LaneRow& r) {
        kern::router_loss_totals(r, lanes_losses.data(), fP.data(), B * E, B, z.data(), N, 0.01f, 0.002f);
      });
      EXPECT_NEAR(lanes_losses[0], want.aux, 1e-6 * want.aux) << Wl << " lanes";
      EXPECT_NEAR(lanes_losses[1], want.z, 1e-6 * want.z) << Wl << " lanes";
      for (size_t i = 0; i < f.size(); ++i) EXPECT_EQ(fl[i], f[i]) << Wl << " lanes: counts are exact";
    }
  }
}
