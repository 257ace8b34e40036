// framework/bf16_gemm.h against a naive double-precision product of the same bf16 values: every
// transpose combination, strided operands, alpha/beta, the row counts of an expert group (the
// primitive leaves M or K to run time, so one primitive serves many), both sides of the skinny
// path. And the bf16 linear layer (precision.h) on the native path against the emulation (f32
// GEMMs on bf16-rounded values): equal up to the order of f32 additions, the maximum printed.
// On a CPU without AVX512-BF16 the same checks run the fallback.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "framework/attention.h"
#include "framework/bf16_gemm.h"
#include "framework/dtype.h"
#include "framework/gemm.h"
#include "framework/grouped_linear.h"
#include "framework/precision.h"
#include "tests/unit/test_random.h"

using namespace moe;

namespace {

struct Case {
  bool ta, tb;
  int64_t M, N, K;
  float alpha, beta;
};

void check(const Case& c) {
  SCOPED_TRACE(::testing::Message() << "ta " << c.ta << " tb " << c.tb << " M " << c.M << " N " << c.N << " K "
                                    << c.K << " alpha " << c.alpha << " beta " << c.beta);
  // Row strides wider than the rows, so an op that ignores them reads the wrong numbers.
  const int64_t lda = (c.ta ? c.M : c.K) + 3, ldb = (c.tb ? c.K : c.N) + 5, ldc = c.N + 2;
  const auto A = test::bf16_bits(test::randn(size_t((c.ta ? c.K : c.M) * lda), 1));
  const auto B = test::bf16_bits(test::randn(size_t((c.tb ? c.N : c.K) * ldb), 2));
  auto C = test::randn(size_t(c.M * ldc), 3);
  if (c.beta == 0.f)  // beta 0 must not read C: NaN there must not leak into the result
    for (int64_t i = 0; i < c.M; ++i) C[size_t(i * ldc)] = NAN;
  const auto before = C;
  gemm_bf16(c.ta, c.tb, c.M, c.N, c.K, c.alpha, A.data(), lda, B.data(), ldb, c.beta, C.data(), ldc);
  for (int64_t i = 0; i < c.M; ++i)
    for (int64_t j = 0; j < c.N; ++j) {
      double s = 0, mag = 0;
      for (int64_t k = 0; k < c.K; ++k) {
        const double a = bf16_bits_to_f32(c.ta ? A[size_t(k * lda + i)] : A[size_t(i * lda + k)]);
        const double b = bf16_bits_to_f32(c.tb ? B[size_t(j * ldb + k)] : B[size_t(k * ldb + j)]);
        s += a * b;
        mag += std::fabs(a * b);
      }
      const double old = c.beta == 0.f ? 0.0 : double(before[size_t(i * ldc + j)]);  // NaN when beta is 0
      const double want = c.alpha * s + c.beta * old;
      // f32 accumulation: a few ulps of the sum of magnitudes.
      const double tol = 1e-6 * (std::fabs(c.alpha) * mag * (1 + std::sqrt(double(c.K))) + std::fabs(old)) + 1e-30;
      ASSERT_NEAR(C[size_t(i * ldc + j)], want, tol) << "at row " << i << " col " << j;
    }
  for (int64_t i = 0; i < c.M; ++i)  // the padding after each row of C stays untouched
    for (int64_t j = c.N; j < ldc; ++j) ASSERT_EQ(C[size_t(i * ldc + j)], before[size_t(i * ldc + j)]);
}

double max_rel_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double scale = 0, d = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    scale = std::max(scale, double(std::fabs(b[i])));
    d = std::max(d, double(std::fabs(a[i] - b[i])));
  }
  return d / std::max(scale, 1e-30);
}

}  // namespace

TEST(Bf16Gemm, ReportsItsBackend) {
  std::printf("bf16 GEMM backend: %s\n", bf16_gemm_backend());
  EXPECT_EQ(bf16_gemm_native(), std::string(bf16_gemm_backend()).rfind("onednn", 0) == 0);
  const char* forced = std::getenv("MOE_BF16_GEMM");
  if (forced && std::string(forced) == "emulated") {
    EXPECT_FALSE(bf16_gemm_native());
  }
}

TEST(Bf16Gemm, AllTransposesSkinnyAndWide) {
  for (bool ta : {false, true})
    for (bool tb : {false, true})
      for (int64_t M : {1, 4, 5, 33, 130})
        for (int64_t K : {1, 15, 17, 192})
          for (float beta : {0.f, 1.f, 0.5f}) check({ta, tb, M, 37, K, beta == 0.5f ? 0.75f : 1.f, beta});
}

TEST(Bf16Gemm, OnePrimitiveServesManyRowCounts) {
  // An expert's rows change every step: the same (N, K, strides) at many M, and a weight gradient's
  // many K, each against the reference.
  for (int64_t rows : {7, 64, 100, 257, 1000}) {
    check({false, true, rows, 128, 192, 1.f, 0.f});
    check({false, false, rows, 192, 128, 1.f, 1.f});
    check({true, false, 128, 192, rows, 1.f, 1.f});
  }
}

TEST(Bf16Gemm, SameCallSameBits) {
  const int64_t M = 300, N = 96, K = 160;
  const auto A = test::bf16_bits(test::randn(size_t(M * K), 4)), B = test::bf16_bits(test::randn(size_t(N * K), 5));
  std::vector<float> c1(size_t(M * N)), c2(size_t(M * N));
  gemm_bf16(false, true, M, N, K, 1.f, A.data(), K, B.data(), K, 0.f, c1.data(), N);
  gemm_bf16(false, true, M, N, K, 1.f, A.data(), K, B.data(), K, 0.f, c2.data(), N);
  EXPECT_EQ(c1, c2);
}

TEST(Bf16Gemm, LinearLayerMatchesTheEmulation) {
  // precision bf16 through the native path against the emulation written out here: round both
  // operands to bf16 in f32 and run the f32 GEMM. Forward, dgrad (accumulated) and wgrad.
  const int64_t M = 515, in = 192, out = 128;
  const auto x = test::randn(size_t(M * in), 6), W = test::randn(size_t(out * in), 7, 0.1f);
  const auto dy = test::randn(size_t(M * out), 8);
  auto rounded = [](std::vector<float> v) {
    round_bf16(v.data(), v.data(), int64_t(v.size()));
    return v;
  };
  const auto xr = rounded(x), Wr = rounded(W), dyr = rounded(dy);

  std::vector<float> y(size_t(M * out)), y_ref(y.size());
  linear_forward(y.data(), x.data(), W.data(), M, in, out, false, Precision::BF16);
  linear_forward(y_ref.data(), xr.data(), Wr.data(), M, in, out, false);

  auto dx = test::randn(size_t(M * in), 9), dx_ref = dx;  // accumulated into
  auto dW = test::randn(size_t(out * in), 10), dW_ref = dW;
  linear_backward(dx.data(), dW.data(), dy.data(), x.data(), W.data(), M, in, out, true, Precision::BF16);
  linear_backward(dx_ref.data(), dW_ref.data(), dyr.data(), xr.data(), Wr.data(), M, in, out, true);

  const double dy_max = max_rel_diff(y, y_ref), dx_max = max_rel_diff(dx, dx_ref), dw_max = max_rel_diff(dW, dW_ref);
  std::printf("native vs emulated bf16 (%s), max |diff| / max |value|: forward %.2e dgrad %.2e wgrad %.2e\n",
              bf16_gemm_backend(), dy_max, dx_max, dw_max);
  // Only the order of f32 additions differs (K = 192, 128 and 515 terms).
  EXPECT_LT(dy_max, 1e-6);
  EXPECT_LT(dx_max, 1e-6);
  EXPECT_LT(dw_max, 1e-6);
}

// The layers on x given as bf16 bits (linear_*_bf16, grouped_linear_*_bf16: x rounded once by its
// producer) are the layers on the f32 x at Precision::BF16, bit for bit: the same rounding, once
// instead of per GEMM. On the native path here, and on the emulated one in the ctest entry
// test_framework_bf16_gemm_emulated (MOE_BF16_GEMM=emulated).
TEST(Bf16Gemm, LayersOnBf16InputsAreTheLayersOnTheirF32Inputs) {
  const int64_t M = 203, in = 160, out = 96, G = 4;
  const auto x = test::randn(size_t(M * in), 11), dy = test::randn(size_t(M * out), 12);
  const auto xb = test::bf16_bits(x);
  std::vector<std::vector<float>> W;
  for (int64_t g = 0; g < G; ++g) W.push_back(test::randn(size_t(out * in), 13 + uint64_t(g), 0.1f));
  std::vector<const float*> Wp;
  for (const auto& w : W) Wp.push_back(w.data());
  const std::vector<int64_t> offsets{0, 70, 70, 150, M};  // an empty group too

  std::vector<float> y(size_t(M * out)), y_ref(y.size());
  linear_forward(y_ref.data(), x.data(), W[0].data(), M, in, out, false, Precision::BF16);
  linear_forward_bf16(y.data(), xb.data(), W[0].data(), M, in, out, false);
  EXPECT_EQ(y, y_ref);

  auto dx = test::randn(size_t(M * in), 20), dx_ref = dx;  // accumulated into
  auto dW = test::randn(size_t(out * in), 21), dW_ref = dW;
  linear_backward(dx_ref.data(), dW_ref.data(), dy.data(), x.data(), W[0].data(), M, in, out, true, Precision::BF16);
  linear_backward_bf16(dx.data(), dW.data(), dy.data(), xb.data(), W[0].data(), M, in, out, true);
  EXPECT_EQ(dx, dx_ref);
  EXPECT_EQ(dW, dW_ref);
  linear_backward_bf16(nullptr, dW.data(), dy.data(), xb.data(), W[0].data(), M, in, out, false);  // wgrad only
  linear_backward(nullptr, dW_ref.data(), dy.data(), x.data(), W[0].data(), M, in, out, false, Precision::BF16);
  EXPECT_EQ(dW, dW_ref);

  grouped_linear_forward(y_ref.data(), x.data(), Wp.data(), offsets.data(), G, in, out, Precision::BF16);
  grouped_linear_forward_bf16(y.data(), xb.data(), Wp.data(), offsets.data(), G, in, out);
  EXPECT_EQ(y, y_ref);
  std::vector<std::vector<float>> gW(size_t(G), std::vector<float>(size_t(out * in), 0.f)), gW_ref = gW;
  std::vector<float*> gWp, gWp_ref;
  for (int64_t g = 0; g < G; ++g) gWp.push_back(gW[size_t(g)].data()), gWp_ref.push_back(gW_ref[size_t(g)].data());
  grouped_linear_backward(dx_ref.data(), gWp_ref.data(), dy.data(), x.data(), Wp.data(), offsets.data(), G, in, out,
                          false, Precision::BF16);
  grouped_linear_backward_bf16(dx.data(), gWp.data(), dy.data(), xb.data(), Wp.data(), offsets.data(), G, in, out,
                               false);
  EXPECT_EQ(dx, dx_ref);
  EXPECT_EQ(gW, gW_ref);
  EXPECT_NE(gW[0], gW[2]) << "the groups got their own rows";
}

// The attention core on q, k, v kept as bf16 (attention_*_bf16: the model at bf16) is the core on
// their f32 values at l.bf16, bit for bit: it rounds them to exactly these bits. MLA's layout (q
// and k heads of 24, v heads of 16), two sequences of 70 positions (two query blocks), with a
// document mask; native here, emulated in the ctest entry test_framework_bf16_gemm_emulated.
TEST(Bf16Gemm, AttentionOnBf16InputsIsTheAttentionOnTheirValues) {
  const int64_t B = 2, T = 70, H = 2, d = 24, dv = 16, N = B * T;
  AttentionLayout l = AttentionLayout::dense(B, T, H, d, dv, 1.f / std::sqrt(float(d)));
  l.bf16 = true;
  std::vector<int32_t> doc_start(static_cast<size_t>(N));
  for (int64_t i = 0; i < N; ++i) doc_start[size_t(i)] = int32_t(i % T < 30 ? 0 : 30);
  l.doc_start = doc_start.data();
  const auto q = test::randn(size_t(N * H * d), 31), k = test::randn(size_t(N * H * d), 32),
             v = test::randn(size_t(N * H * dv), 33), dout = test::randn(size_t(N * H * dv), 34);
  const auto qb = test::bf16_bits(q), kb = test::bf16_bits(k), vb = test::bf16_bits(v);
  std::vector<float> o(size_t(N * H * dv)), o_ref(o.size()), lse(size_t(B * H * T)), lse_ref(lse.size());
  attention_forward(o_ref.data(), lse_ref.data(), q.data(), k.data(), v.data(), l);
  attention_forward_bf16(o.data(), lse.data(), qb.data(), kb.data(), vb.data(), l);
  EXPECT_EQ(o, o_ref);
  EXPECT_EQ(lse, lse_ref);
  std::vector<float> dq(q.size()), dk(k.size()), dvv(v.size()), dq_ref(q.size()), dk_ref(k.size()), dv_ref(v.size());
  attention_backward(dq_ref.data(), dk_ref.data(), dv_ref.data(), dout.data(), q.data(), k.data(), v.data(),
                     lse_ref.data(), l);
  attention_backward_bf16(dq.data(), dk.data(), dvv.data(), dout.data(), nullptr, qb.data(), kb.data(), vb.data(),
                          lse.data(), l);
  EXPECT_EQ(dq, dq_ref);
  EXPECT_EQ(dk, dk_ref);
  EXPECT_EQ(dvv, dv_ref);
  l.bf16 = false;
  EXPECT_ANY_THROW(attention_forward_bf16(o.data(), lse.data(), qb.data(), kb.data(), vb.data(), l));
}
