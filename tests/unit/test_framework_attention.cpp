// The CPU attention core (framework/attention.h) against a naive double-precision implementation,
// at f32 and at bf16 (AttentionLayout::bf16: q, k, v, dO, P and dS rounded to bf16 before the
// GEMMs that read them). The bf16 reference rounds the same operands; a core that skipped a
// rounding, or rounded where it should not, lands farther from it than the tolerance.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <vector>

#include "framework/attention.h"
#include "framework/bf16_gemm.h"
#include "framework/dtype.h"
#include "tests/unit/test_random.h"

using namespace moe;

namespace {

struct Grads {
  std::vector<float> o, dq, dk, dv;
};

// B sequences of T tokens, H heads, q/k [N, H, d], v/o/dout [N, H, dv], a document boundary in
// sequence 1 (doc_start) so the masked path runs too.
struct Problem {
  int64_t B = 2, T = 150, H = 3, d = 24, dv = 16;
  std::vector<float> q, k, v, dout;
  std::vector<int32_t> doc;
  Problem() {
    q = test::randn(size_t(B * T * H * d), 1);
    k = test::randn(size_t(B * T * H * d), 2);
    v = test::randn(size_t(B * T * H * dv), 3);
    dout = test::randn(size_t(B * T * H * dv), 4);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < T; ++t) doc.push_back(b == 1 && t >= 70 ? 70 : 0);
  }
  AttentionLayout layout(bool bf16) const {
    AttentionLayout l = AttentionLayout::dense(B, T, H, d, dv, 1.f / std::sqrt(float(d)));
    l.doc_start = doc.data();
    l.bf16 = bf16;
    return l;
  }
};

Grads zeros(const Problem& p) {
  return {std::vector<float>(p.v.size()), std::vector<float>(p.q.size()), std::vector<float>(p.k.size()),
          std::vector<float>(p.v.size())};
}

double rnd(double x, bool bf16) { return bf16 ? double(round_bf16(float(x))) : x; }

Grads naive(const Problem& p, bool bf16) {
  const AttentionLayout l = p.layout(bf16);
  Grads g = zeros(p);
  std::vector<double> dk(p.k.size()), dv(p.v.size());
  for (int64_t b = 0; b < p.B; ++b)
    for (int64_t h = 0; h < p.H; ++h)
      for (int64_t t = 0; t < p.T; ++t) {
        auto Q = [&](int64_t i, int64_t c) { return rnd(p.q[size_t(l.q_at(b, h) + i * l.q_ld + c)], bf16); };
        auto K = [&](int64_t i, int64_t c) { return rnd(p.k[size_t(l.k_at(b, h) + i * l.k_ld + c)], bf16); };
        auto V = [&](int64_t i, int64_t c) { return rnd(p.v[size_t(l.v_at(b, h) + i * l.v_ld + c)], bf16); };
        auto DO = [&](int64_t c) { return rnd(p.dout[size_t(l.o_at(b, h) + t * l.o_ld + c)], bf16); };
        const int64_t j0 = l.first_key(b, t), n = t + 1 - j0;
        std::vector<double> s(static_cast<size_t>(n)), P(s.size()), dP(s.size());
        double mx = -1e300, z = 0;
        for (int64_t j = 0; j < n; ++j) {
          double acc = 0;
          for (int64_t c = 0; c < p.d; ++c) acc += Q(t, c) * K(j0 + j, c);
          s[size_t(j)] = l.scale * acc;
          mx = std::max(mx, s[size_t(j)]);
        }
        for (int64_t j = 0; j < n; ++j) z += (P[size_t(j)] = std::exp(s[size_t(j)] - mx));
        for (double& x : P) x /= z;
        double dot = 0;
        for (int64_t j = 0; j < n; ++j) {
          double acc = 0;
          for (int64_t c = 0; c < p.dv; ++c) acc += DO(c) * V(j0 + j, c);
          dot += P[size_t(j)] * (dP[size_t(j)] = acc);
        }
        for (int64_t c = 0; c < p.dv; ++c) {
          double acc = 0;
          for (int64_t j = 0; j < n; ++j) acc += rnd(P[size_t(j)], bf16) * V(j0 + j, c);
          g.o[size_t(l.o_at(b, h) + t * l.o_ld + c)] = float(acc);
        }
        for (int64_t j = 0; j < n; ++j) {
          const double pr = rnd(P[size_t(j)], bf16), ds = rnd(P[size_t(j)] * (dP[size_t(j)] - dot), bf16);
          for (int64_t c = 0; c < p.dv; ++c) dv[size_t(l.v_at(b, h) + (j0 + j) * l.v_ld + c)] += pr * DO(c);
          for (int64_t c = 0; c < p.d; ++c) {
            g.dq[size_t(l.q_at(b, h) + t * l.q_ld + c)] += float(l.scale * ds * K(j0 + j, c));
            dk[size_t(l.k_at(b, h) + (j0 + j) * l.k_ld + c)] += l.scale * ds * Q(t, c);
          }
        }
      }
  for (size_t i = 0; i < dk.size(); ++i) g.dk[i] = float(dk[i]);
  for (size_t i = 0; i < dv.size(); ++i) g.dv[i] = float(dv[i]);
  return g;
}

Grads core(const Problem& p, bool bf16) {
  const AttentionLayout l = p.layout(bf16);
  Grads g = zeros(p);
  std::vector<float> lse(size_t(p.B * p.H * p.T));
  attention_forward(g.o.data(), lse.data(), p.q.data(), p.k.data(), p.v.data(), l);
  attention_backward(g.dq.data(), g.dk.data(), g.dv.data(), p.dout.data(), p.q.data(), p.k.data(), p.v.data(),
                     lse.data(), l);
  return g;
}

// max |a - b| / max |b|.
double rel(const std::vector<float>& a, const std::vector<float>& b) {
  double d = 0, s = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    d = std::max(d, double(std::fabs(a[i] - b[i])));
    s = std::max(s, double(std::fabs(b[i])));
  }
  return d / s;
}

void expect_close(const Grads& got, const Grads& want, double tol, const char* what) {
  const double o = rel(got.o, want.o), dq = rel(got.dq, want.dq), dk = rel(got.dk, want.dk), dv = rel(got.dv, want.dv);
  std::printf("%s: o %.2e dq %.2e dk %.2e dv %.2e\n", what, o, dq, dk, dv);
  EXPECT_LT(o, tol) << what;
  EXPECT_LT(dq, tol) << what;
  EXPECT_LT(dk, tol) << what;
  EXPECT_LT(dv, tol) << what;
}

}  // namespace

TEST(AttentionCore, F32MatchesNaive) {
  const Problem p;
  expect_close(core(p, false), naive(p, false), 2e-5, "f32 core vs f32 reference");
}

TEST(AttentionCore, Bf16MatchesNaiveWithTheSameRoundings) {
  const Problem p;
  const Grads want = naive(p, true);
  std::printf("bf16 GEMM backend: %s\n", bf16_gemm_backend());
  // Left: f32 accumulation order, and a P or dS whose f32 value rounds to the other bf16 neighbour
  // of the reference's double value (rare, one bf16 step of one term).
  expect_close(core(p, true), want, 2e-4, "bf16 core vs bf16 reference");
  // The f32 core is far from the bf16 reference: the tolerance above can tell them apart.
  const Grads f32 = core(p, false);
  EXPECT_GT(std::max({rel(f32.o, want.o), rel(f32.dq, want.dq), rel(f32.dk, want.dk), rel(f32.dv, want.dv)}), 1e-3);
}
