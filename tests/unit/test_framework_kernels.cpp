// The single-source kernels (framework/kernels/) directly: each body against an independent
// double-precision reference (finite differences for backward), and each row function under the
// multi-lane contract the CUDA backend uses (tests/unit/lanes.h) against its serial result. The
// CUDA backend runs exactly these bodies; tests/gpu compares the GPU ops with the CPU ops.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <random>
#include <vector>

#include "framework/kernels/rows.h"
#include "tests/unit/lanes.h"
#include "tests/unit/test_random.h"

using namespace moe;
using moe::test::LaneRow;
using moe::test::Lanes;

namespace {

using moe::test::randn;

// Central difference of a double-precision function.
double numeric_grad(const std::function<double(const std::vector<double>&)>& f, std::vector<double> x, size_t i,
                    double h = 1e-6) {
  const double x0 = x[i];
  x[i] = x0 + h;
  const double up = f(x);
  x[i] = x0 - h;
  const double down = f(x);
  return (up - down) / (2 * h);
}

std::vector<double> to_double(const std::vector<float>& v) { return {v.begin(), v.end()}; }

void expect_near_rel(const std::vector<float>& got, const std::vector<double>& want, double tol, const char* what) {
  ASSERT_EQ(got.size(), want.size());
  double scale = 0;
  for (double w : want) scale = std::max(scale, std::abs(w));
  for (size_t i = 0; i < got.size(); ++i)
    EXPECT_NEAR(got[i], want[i], tol * std::max(scale, 1e-30)) << what << "[" << i << "]";
}

constexpr int kWidths[] = {1, 3, 4, 7};

}  // namespace

// ---------------------------------------------------------------------------------------------
// Activations

TEST(Kernels, FastExpMatchesExp) {
  for (float x = -87.f; x <= 88.f; x += 0.0137f) {
    const double want = std::exp(double(x));
    EXPECT_NEAR(kern::fast_expf(x), want, 3e-7 * want) << x;
  }
  EXPECT_GT(kern::fast_expf(-1000.f), 0.f);  // clamped: ~1e-38, not 0 or NaN
  EXPECT_FALSE(std::isnan(kern::fast_expf(1000.f)));
  // What the clamp is for: sigmoids of any magnitude stay exact at the ends.
  EXPECT_EQ(kern::fast_sigmoidf(-1000.f), 0.f);
  EXPECT_EQ(kern::fast_sigmoidf(1000.f), 1.f);
}

TEST(Kernels, SwiGLUForwardAndBackward) {
  auto h = [](double g, double u) { return g / (1 + std::exp(-g)) * u; };
  for (float g : {-6.f, -1.5f, -0.1f, 0.f, 0.3f, 2.f, 9.f})
    for (float u : {-2.f, 0.5f, 1.f}) {
      EXPECT_NEAR(kern::swiglu(g, u), h(g, u), 1e-6 * (1 + std::abs(h(g, u))));
      float dg, du;
      kern::swiglu_backward(&dg, &du, 1.5f, g, u);
      const double eps = 1e-6;
      EXPECT_NEAR(dg, 1.5 * (h(g + eps, u) - h(g - eps, u)) / (2 * eps), 2e-5) << g << " " << u;
      EXPECT_NEAR(du, 1.5 * (h(g, u + eps) - h(g, u - eps)) / (2 * eps), 2e-5) << g << " " << u;
    }
  EXPECT_NEAR(kern::sigmoidf(0.7f), 1 / (1 + std::exp(-0.7)), 1e-7);
}

// ---------------------------------------------------------------------------------------------
// RMSNorm

TEST(Kernels, RMSNormForwardBackward) {
  const int64_t D = 37;
  const float eps = 1e-5f;
  auto x = randn(D, 1), w = randn(D, 2), dy = randn(D, 3);
  std::vector<float> y(D), dx(D, 0.f), dw(D, 0.f);
  float rstd;
  kern::SerialRow one;
  kern::rmsnorm_row_forward(one, y.data(), &rstd, x.data(), w.data(), D, eps);
  double ms = 0;
  for (float v : x) ms += double(v) * v / D;
  std::vector<double> ref(D);
  for (int64_t i = 0; i < D; ++i) ref[i] = w[i] * x[i] / std::sqrt(ms + eps);
  expect_near_rel(y, ref, 1e-6, "y");
  EXPECT_NEAR(rstd, 1 / std::sqrt(ms + eps), 1e-6 / std::sqrt(ms + eps));

  kern::rmsnorm_row_backward(one, dx.data(), dw.data(), dy.data(), x.data(), w.data(), rstd, D, false);
  // L = sum_i dy_i y_i(x, w) in double.
  auto L = [&](const std::vector<double>& xw) {
    double m = 0;
    for (int64_t i = 0; i < D; ++i) m += xw[i] * xw[i] / D;
    double s = 0;
    for (int64_t i = 0; i < D; ++i) s += dy[i] * xw[D + i] * xw[i] / std::sqrt(m + eps);
    return s;
  };
  std::vector<double> xw = to_double(x);
  xw.insert(xw.end(), w.begin(), w.end());
  std::vector<double> gx(D), gw(D);
  for (int64_t i = 0; i < D; ++i) gx[i] = numeric_grad(L, xw, size_t(i)), gw[i] = numeric_grad(L, xw, size_t(D + i));
  expect_near_rel(dx, gx, 1e-5, "dx");
  expect_near_rel(dw, gw, 1e-5, "dw");

  // accumulate adds into dx; dw accumulates always.
  std::vector<float> dx2(D, 1.f), dw2 = dw;
  kern::rmsnorm_row_backward(one, dx2.data(), dw2.data(), dy.data(), x.data(), w.data(), rstd, D, true);
  for (int64_t i = 0; i < D; ++i) {
    EXPECT_FLOAT_EQ(dx2[i], 1.f + dx[i]);
    EXPECT_FLOAT_EQ(dw2[i], 2 * dw[i]);
  }
  // The partials' reduction sums runs in order onto the output.
  std::vector<float> part = {1.f, 2.f, 10.f, 20.f, 100.f, 200.f}, out = {0.5f, 0.25f};
  for (int64_t i = 0; i < 2; ++i) kern::sum_partials(out.data(), part.data(), 3, 2, i);
  EXPECT_EQ(out, (std::vector<float>{111.5f, 222.25f}));
}

TEST(Kernels, RMSNormLanesMatchSerial) {
  const int64_t D = 45;
  auto x = randn(D, 4), w = randn(D, 5), dy = randn(D, 6);
  std::vector<float> y0(D), dx0(D), dw0(D, 0.f);
  float r0;
  kern::SerialRow one;
  kern::rmsnorm_row_forward(one, y0.data(), &r0, x.data(), w.data(), D, 1e-6f);
  kern::rmsnorm_row_backward(one, dx0.data(), dw0.data(), dy.data(), x.data(), w.data(), r0, D, false);
  for (int W : kWidths) {
    std::vector<float> y(D), dx(D), dw(D, 0.f);
    float r = -1;
    Lanes(W).run([&](LaneRow& lr) {
      kern::rmsnorm_row_forward(lr, y.data(), &r, x.data(), w.data(), D, 1e-6f);
      lr.sync();  // the leader wrote rstd; the other lanes read it next (on the GPU: the next kernel)
      kern::rmsnorm_row_backward(lr, dx.data(), dw.data(), dy.data(), x.data(), w.data(), r, D, false);
    });
    EXPECT_NEAR(r, r0, 1e-6 * r0) << W;
    expect_near_rel(y, to_double(y0), 1e-6, "y");
    expect_near_rel(dx, to_double(dx0), 1e-5, "dx");
    expect_near_rel(dw, to_double(dw0), 1e-6, "dw");
  }
}

// ---------------------------------------------------------------------------------------------
// RoPE

TEST(Kernels, RoPEIsTheInterleavedRotationAndBackwardItsTranspose) {
  const int dim = 10, half = dim / 2;
  auto x = randn(dim, 7), g = randn(dim, 8), ang = randn(half, 9);
  std::vector<float> c(half), s(half), tmp(dim);
  for (int i = 0; i < half; ++i) c[i] = std::cos(ang[i]), s[i] = std::sin(ang[i]);
  kern::SerialRow one;
  std::vector<float> y = x;
  kern::rope_row_forward(one, y.data(), c.data(), s.data(), dim, tmp.data());
  for (int i = 0; i < half; ++i) {
    EXPECT_NEAR(y[i], x[2 * i] * c[i] - x[2 * i + 1] * s[i], 1e-6);
    EXPECT_NEAR(y[i + half], x[2 * i + 1] * c[i] + x[2 * i] * s[i], 1e-6);
  }
  // <rope(x), g> == <x, rope^T(g)>
  std::vector<float> gt = g;
  kern::rope_row_backward(one, gt.data(), c.data(), s.data(), dim, tmp.data());
  double a = 0, b = 0;
  for (int i = 0; i < dim; ++i) a += double(y[i]) * g[i], b += double(x[i]) * gt[i];
  EXPECT_NEAR(a, b, 1e-5);
  for (int W : kWidths) {
    std::vector<float> yl = x, gl = g, shared(dim);
    Lanes(W).run([&](LaneRow& lr) {
      kern::rope_row_forward(lr, yl.data(), c.data(), s.data(), dim, shared.data());
      kern::rope_row_backward(lr, gl.data(), c.data(), s.data(), dim, shared.data());
    });
    EXPECT_EQ(yl, y) << W;
    EXPECT_EQ(gl, gt) << W;
  }
}

// ---------------------------------------------------------------------------------------------
// Softmax and cross-entropy

TEST(Kernels, SoftmaxForwardBackwardCausal) {
  const int64_t n_total = 13;
  auto x = randn(n_total, 10, 2.f), dy = randn(n_total, 11);
  for (int64_t n : {int64_t(1), int64_t(6), n_total})
    for (bool fast : {false, true}) {
      kern::SerialRow one;
      std::vector<float> p(n_total, 7.f);
      const float lse = kern::softmax_row_forward(one, p.data(), x.data(), n, n_total, fast);
      double m = -1e30, z = 0;
      for (int64_t i = 0; i < n; ++i) m = std::max(m, double(x[i]));
      for (int64_t i = 0; i < n; ++i) z += std::exp(x[i] - m);
      EXPECT_NEAR(lse, m + std::log(z), 1e-6 * (1 + std::abs(m)));
      std::vector<double> ref(n_total, 0.0);
      for (int64_t i = 0; i < n; ++i) ref[i] = std::exp(x[i] - m) / z;
      expect_near_rel(p, ref, 1e-6, "p");
      std::vector<float> pr(n_total, 7.f);
      kern::softmax_row_recompute(one, pr.data(), x.data(), lse, n, n_total, fast);
      expect_near_rel(pr, ref, 1e-6, "recomputed p");

      std::vector<float> dx(n_total, 7.f);
      kern::softmax_row_backward(one, dx.data(), p.data(), dy.data(), n, n_total);
      auto L = [&](const std::vector<double>& v) {
        double mm = -1e30, zz = 0, s = 0;
        for (int64_t i = 0; i < n; ++i) mm = std::max(mm, v[i]);
        for (int64_t i = 0; i < n; ++i) zz += std::exp(v[i] - mm);
        for (int64_t i = 0; i < n; ++i) s += dy[i] * std::exp(v[i] - mm) / zz;
        return s;
      };
      std::vector<double> g(n_total, 0.0);
      for (int64_t i = 0; i < n; ++i) g[i] = numeric_grad(L, to_double(x), size_t(i));
      expect_near_rel(dx, g, 1e-5, "dx");

      for (int W : kWidths) {
        std::vector<float> pl(n_total, 7.f), dxl(n_total, 7.f);
        float lsel = 0;
        Lanes(W).run([&](LaneRow& lr) {
          float l = kern::softmax_row_forward(lr, pl.data(), x.data(), n, n_total, fast);
          if (lr.leader()) lsel = l;
          kern::softmax_row_backward(lr, dxl.data(), pl.data(), dy.data(), n, n_total);
        });
        EXPECT_NEAR(lsel, lse, 1e-6 * (1 + std::abs(lse)));
        expect_near_rel(pl, to_double(p), 1e-6, "lanes p");
        expect_near_rel(dxl, to_double(dx), 1e-5, "lanes dx");
      }
    }
}

TEST(Kernels, CrossEntropyForwardBackward) {
  const int64_t V = 29;
  const int32_t target = 11;
  auto x = randn(V, 12, 3.f);
  kern::SerialRow one;
  float loss, lse;
  kern::cross_entropy_row_forward(one, &loss, &lse, x.data(), target, V);
  auto L = [&](const std::vector<double>& v) {
    double m = -1e30, z = 0;
    for (double a : v) m = std::max(m, a);
    for (double a : v) z += std::exp(a - m);
    return m + std::log(z) - v[target];
  };
  EXPECT_NEAR(loss, L(to_double(x)), 1e-5);
  EXPECT_NEAR(lse, loss + x[target], 1e-6);
  std::vector<float> d(V);
  kern::cross_entropy_row_backward(one, d.data(), x.data(), lse, target, 0.5f, V);
  std::vector<double> g(V);
  for (int64_t i = 0; i < V; ++i) g[i] = 0.5 * numeric_grad(L, to_double(x), size_t(i));
  expect_near_rel(d, g, 1e-5, "dlogits");
  // d may alias x.
  std::vector<float> xa = x;
  kern::cross_entropy_row_backward(one, xa.data(), xa.data(), lse, target, 0.5f, V);
  EXPECT_EQ(xa, d);
  for (int W : kWidths) {
    float ll = 0, lsel = 0;
    std::vector<float> dl(V);
    Lanes(W).run([&](LaneRow& lr) {
      kern::cross_entropy_row_forward(lr, &ll, &lsel, x.data(), target, V);
      lr.sync();  // the leader wrote lse
      kern::cross_entropy_row_backward(lr, dl.data(), x.data(), lsel, target, 0.5f, V);
    });
    EXPECT_NEAR(ll, loss, 1e-5) << W;
    expect_near_rel(dl, to_double(d), 1e-5, "lanes d");
  }
}

// ---------------------------------------------------------------------------------------------
// AdamW and casts

TEST(Kernels, AdamWMatchesTheFormula) {
  kern::AdamWStep s;
  s.beta1 = 0.9f, s.beta2 = 0.95f, s.eps = 1e-8f, s.grad_scale = 0.5f;
  const double lr = 1e-2, wd = 0.1;
  float w = 0.7f, m = 0.f, v = 0.f;
  double wr = 0.7, mr = 0, vr = 0;
  for (int t = 1; t <= 5; ++t) {
    const float g = 0.3f * float(t) - 0.8f;
    s.bc2 = float(1 - std::pow(0.95, t));
    s.step_size = float(lr / (1 - std::pow(0.9, t)));
    s.decay = float(1 - lr * wd);
    kern::adamw_update(&w, &m, &v, g, s);
    const double gi = 0.5 * g;
    mr = 0.9 * mr + 0.1 * gi;
    vr = 0.95 * vr + 0.05 * gi * gi;
    wr = wr * (1 - lr * wd) - lr * (mr / (1 - std::pow(0.9, t))) / (std::sqrt(vr / (1 - std::pow(0.95, t))) + 1e-8);
    EXPECT_NEAR(w, wr, 1e-6) << t;
    EXPECT_NEAR(m, mr, 1e-7) << t;
    EXPECT_NEAR(v, vr, 1e-8) << t;
  }
}

TEST(Kernels, Bf16RoundsToNearestEven) {
  const float one = 1.f, ulp = std::ldexp(1.f, -7);  // bf16 spacing at 1
  EXPECT_EQ(kern::round_bf16(one + ulp / 2), one);                  // tie -> even (1.0)
  EXPECT_EQ(kern::round_bf16(one + 3 * ulp / 2), one + 2 * ulp);    // tie -> even (1 + 2 ulp)
  EXPECT_EQ(kern::round_bf16(one + ulp / 2 + ulp / 64), one + ulp);  // above the tie
  EXPECT_EQ(kern::f32_to_bf16_bits(-2.f), 0xC000);
  EXPECT_EQ(kern::bf16_bits_to_f32(0x3F80), 1.f);
  EXPECT_TRUE(std::isinf(kern::round_bf16(std::numeric_limits<float>::max())));
  EXPECT_TRUE(std::isinf(kern::round_bf16(-std::numeric_limits<float>::infinity())));
  const uint16_t nan = kern::f32_to_bf16_bits(std::numeric_limits<float>::quiet_NaN());
  EXPECT_TRUE(std::isnan(kern::bf16_bits_to_f32(nan)));
  // A NaN whose payload sits only in the low bits stays NaN (does not round to inf).
  uint32_t low_nan = 0x7f800001u;
  float f;
  std::memcpy(&f, &low_nan, 4);
  EXPECT_TRUE(std::isnan(kern::round_bf16(f)));
  // Every bf16 value survives a round trip.
  for (uint32_t b = 0; b < 0x10000; b += 7) {
    const float v = kern::bf16_bits_to_f32(uint16_t(b));
    if (!std::isnan(v)) {
      EXPECT_EQ(kern::f32_to_bf16_bits(v), b);
    }
  }
}
