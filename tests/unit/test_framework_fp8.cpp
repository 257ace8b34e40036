// FP8 emulation (framework/kernels/fp8.h, framework/precision.h): every E4M3/E5M2 code round-trips,
// rounding is nearest-even with the documented saturation and NaN rules (checked against a brute-force
// nearest-value search), tile scales match a naive implementation, and the emulated GEMMs stay within
// the analytic error bound of an f64 reference.
#include <gtest/gtest.h>

#include <cfloat>
#include <cmath>
#include <cstring>
#include <vector>

#include "framework/dtype.h"
#include "framework/gemm.h"
#include "framework/kernels/fp8.h"
#include "framework/precision.h"
#include "framework/rng.h"
#include "framework/threads.h"

using namespace moe;
using namespace moe::kern;

namespace {

uint32_t bits(float f) { return f32_bits(f); }
bool e4m3_is_nan(uint8_t c) { return (c & 0x7F) == 0x7F; }
bool e5m2_is_nan(uint8_t c) { return (c & 0x7C) == 0x7C && (c & 0x03) != 0; }

// Brute force: the finite code nearest to x (ties to the even code, i.e. even mantissa), over the
// positive codes, sign reapplied. For E4M3 that is also saturation (nothing finite lies past 448).
uint8_t naive_encode(float x, bool e4m3) {
  if (std::isnan(x)) return kFp8NaN;
  const uint8_t sign = std::signbit(x) ? 0x80 : 0;
  const double a = std::fabs(double(x));
  if (!e4m3 && a >= 61440.0) return sign | 0x7C;  // E5M2: at or past the midpoint to 2^16 -> inf
  const int top = e4m3 ? 0x7E : 0x7B;
  int best = 0;
  double best_d = INFINITY;
  for (int c = 0; c <= top; ++c) {
    double v = e4m3 ? e4m3_bits_to_f32(uint8_t(c)) : e5m2_bits_to_f32(uint8_t(c));
    double d = std::fabs(v - a);
    if (d < best_d || (d == best_d && (c & 1) == 0)) best = c, best_d = d;
  }
  return sign | uint8_t(best);
}

float random_magnitude_value(uint64_t i) {
  // log-uniform magnitude over 2^-24 .. 2^20, random sign and mantissa
  float e = -24.f + 44.f * rng_uniform(11, 1, i);
  float v = std::exp2(e);
  return (rng_bits(11, 2, i) & 1) ? -v : v;
}

}  // namespace

TEST(Fp8Codes, EveryE4M3CodeRoundTrips) {
  int nan = 0;
  for (int c = 0; c < 256; ++c) {
    float v = e4m3_bits_to_f32(uint8_t(c));
    if (e4m3_is_nan(uint8_t(c))) {
      ++nan;
      EXPECT_TRUE(std::isnan(v)) << c;
      EXPECT_EQ(f32_to_e4m3_bits(v), kFp8NaN);
      EXPECT_TRUE(std::isnan(round_e4m3(v)));
      continue;
    }
    EXPECT_TRUE(std::isfinite(v)) << c;
    EXPECT_EQ(f32_to_e4m3_bits(v), c) << "value " << v;
    EXPECT_EQ(bits(round_e4m3(v)), bits(v)) << c;
  }
  EXPECT_EQ(nan, 2);
  EXPECT_EQ(e4m3_bits_to_f32(0x7E), 448.f);
  EXPECT_EQ(e4m3_bits_to_f32(0xFE), -448.f);
  EXPECT_EQ(e4m3_bits_to_f32(0x01), std::ldexp(1.f, -9));   // smallest subnormal
  EXPECT_EQ(e4m3_bits_to_f32(0x08), std::ldexp(1.f, -6));   // smallest normal
  EXPECT_EQ(e4m3_bits_to_f32(0x07), 7 * std::ldexp(1.f, -9));
  EXPECT_EQ(bits(e4m3_bits_to_f32(0x80)), bits(-0.f));
}

TEST(Fp8Codes, EveryE5M2CodeRoundTrips) {
  int nan = 0, inf = 0;
  for (int c = 0; c < 256; ++c) {
    float v = e5m2_bits_to_f32(uint8_t(c));
    if (e5m2_is_nan(uint8_t(c))) {
      ++nan;
      EXPECT_TRUE(std::isnan(v)) << c;
      EXPECT_EQ(f32_to_e5m2_bits(v), kFp8NaN);
      continue;
    }
    if (std::isinf(v)) ++inf;
    EXPECT_EQ(f32_to_e5m2_bits(v), c) << "value " << v;
    if (std::isfinite(v)) {
      EXPECT_EQ(f32_to_e5m2_bits(v, /*saturate=*/true), c);
    }
  }
  EXPECT_EQ(nan, 6);
  EXPECT_EQ(inf, 2);
  EXPECT_EQ(e5m2_bits_to_f32(0x7B), 57344.f);
  EXPECT_EQ(e5m2_bits_to_f32(0x7C), INFINITY);
  EXPECT_EQ(e5m2_bits_to_f32(0x01), std::ldexp(1.f, -16));
  EXPECT_EQ(e5m2_bits_to_f32(0x04), std::ldexp(1.f, -14));
}

// Every midpoint between neighbouring codes rounds to the even code; one f32 ulp either side goes to
// the nearer code. Midpoints have at most 5 significant bits, so they are exact in f32.
TEST(Fp8Rounding, TiesToEvenAtEveryMidpoint) {
  for (bool e4m3 : {true, false}) {
    const int top = e4m3 ? 0x7E : 0x7B;
    auto enc = [&](float x) { return e4m3 ? f32_to_e4m3_bits(x) : f32_to_e5m2_bits(x); };
    auto dec = [&](int c) { return e4m3 ? e4m3_bits_to_f32(uint8_t(c)) : e5m2_bits_to_f32(uint8_t(c)); };
    for (int c = 0; c < top; ++c) {
      for (float sign : {1.f, -1.f}) {
        const uint8_t s = sign < 0 ? 0x80 : 0;
        float mid = sign * float((double(dec(c)) + double(dec(c + 1))) / 2);
        ASSERT_EQ(double(mid), sign * (double(dec(c)) + double(dec(c + 1))) / 2);
        int even = (c % 2 == 0) ? c : c + 1;
        EXPECT_EQ(enc(mid), s | even) << (e4m3 ? "e4m3 " : "e5m2 ") << mid;
        EXPECT_EQ(enc(std::nextafter(mid, sign * INFINITY)), s | (c + 1)) << mid;
        EXPECT_EQ(enc(std::nextafter(mid, 0.f)), s | c) << mid;
        if (e4m3) {
          EXPECT_EQ(bits(round_e4m3(mid)), bits(dec(even) * sign)) << mid;
          EXPECT_EQ(bits(round_e4m3(std::nextafter(mid, 0.f))), bits(dec(c) * sign)) << mid;
        }
      }
    }
  }
}

TEST(Fp8Rounding, SaturationNaNAndTinyValues) {
  // E4M3 saturates: past 448 (the 464 midpoint to the NaN slot included), FLT_MAX and inf.
  for (float x : {448.f, 463.99f, 464.f, 465.f, 1e6f, FLT_MAX, INFINITY}) {
    EXPECT_EQ(f32_to_e4m3_bits(x), 0x7E) << x;
    EXPECT_EQ(f32_to_e4m3_bits(-x), 0xFE) << x;
    EXPECT_EQ(round_e4m3(x), 448.f) << x;
    EXPECT_EQ(round_e4m3(-x), -448.f) << x;
  }
  EXPECT_EQ(f32_to_e4m3_bits(NAN), kFp8NaN);
  EXPECT_EQ(f32_to_e4m3_bits(-NAN), kFp8NaN);
  EXPECT_TRUE(std::isnan(round_e4m3(-NAN)));
  // Below half the smallest subnormal -> signed zero; f32 subnormals too.
  const float tiny = std::ldexp(1.f, -10);
  EXPECT_EQ(f32_to_e4m3_bits(tiny), 0x00);            // tie with 2^-9: even is zero
  EXPECT_EQ(f32_to_e4m3_bits(std::nextafter(tiny, 1.f)), 0x01);
  EXPECT_EQ(f32_to_e4m3_bits(-tiny), 0x80);
  EXPECT_EQ(f32_to_e4m3_bits(1e-40f), 0x00);
  EXPECT_EQ(f32_to_e4m3_bits(-1e-40f), 0x80);
  EXPECT_EQ(bits(round_e4m3(-1e-40f)), bits(-0.f));
  EXPECT_EQ(f32_to_e4m3_bits(-0.f), 0x80);
  // Carry from the largest subnormal into the smallest normal.
  EXPECT_EQ(f32_to_e4m3_bits(7.5f * std::ldexp(1.f, -9)), 0x08);
  // E5M2 is IEEE by default: the 61440 midpoint to 2^16 goes (even) to inf, just below stays finite.
  EXPECT_EQ(f32_to_e5m2_bits(61440.f), 0x7C);
  EXPECT_EQ(f32_to_e5m2_bits(std::nextafter(61440.f, 0.f)), 0x7B);
  EXPECT_EQ(f32_to_e5m2_bits(-INFINITY), 0xFC);
  EXPECT_EQ(f32_to_e5m2_bits(1e6f, true), 0x7B);
  EXPECT_EQ(f32_to_e5m2_bits(-INFINITY, true), 0xFB);
  EXPECT_EQ(f32_to_e5m2_bits(NAN, true), kFp8NaN);
  EXPECT_EQ(f32_to_e5m2_bits(std::ldexp(1.f, -17)), 0x00);  // tie with 2^-16: even is zero
}

TEST(Fp8Rounding, MatchesNearestValueSearch) {
  for (uint64_t i = 0; i < 20000; ++i) {
    float x = random_magnitude_value(i);
    ASSERT_EQ(f32_to_e4m3_bits(x), naive_encode(x, true)) << x;
    ASSERT_EQ(f32_to_e5m2_bits(x), naive_encode(x, false)) << x;
  }
}

// The branch-free value path equals decode(encode(x)) over a dense sweep of every binade that E4M3
// can reach (and the ones just around it), low mantissa bits included.
TEST(Fp8Rounding, FastValuePathEqualsEncodeDecode) {
  for (uint32_t u = bits(std::ldexp(1.f, -12)); u < bits(1024.f); u += 7) {
    for (uint32_t s : {0u, 0x80000000u}) {
      float x = bits_f32(u | s);
      ASSERT_EQ(bits(round_e4m3(x)), bits(e4m3_bits_to_f32(f32_to_e4m3_bits(x)))) << x;
    }
  }
  for (uint64_t i = 0; i < 100000; ++i) {
    float x = bits_f32(uint32_t(rng_bits(12, 1, i)));
    if (std::isnan(x)) continue;
    ASSERT_EQ(bits(round_e4m3(x)), bits(e4m3_bits_to_f32(f32_to_e4m3_bits(x)))) << x;
  }
}

// The branch-free codec (kern::e4m3_encode / e4m3_decode) equals the reference one: every code
// decodes to the same bits; encoding agrees over a dense sweep of every binade E4M3 reaches, random
// patterns (NaNs included) and the special values.
TEST(Fp8Codes, BranchFreeCodecEqualsTheReference) {
  for (int c = 0; c < 256; ++c)
    ASSERT_EQ(bits(kern::e4m3_decode(uint8_t(c))), bits(e4m3_bits_to_f32(uint8_t(c)))) << c;
  int64_t bad = 0;
  uint32_t first_bad = 0;
  auto check = [&](float x) {
    if (kern::e4m3_encode(x) == f32_to_e4m3_bits(x)) return;
    if (bad++ == 0) first_bad = bits(x);
  };
  for (uint32_t u = 0; u < bits(1024.f); u += 5)
    for (uint32_t s : {0u, 0x80000000u}) check(bits_f32(u | s));
  for (uint64_t i = 0; i < 200000; ++i) check(bits_f32(uint32_t(rng_bits(13, 1, i))));
  for (float x : {0.f, -0.f, 448.f, -448.f, 464.f, 1e30f, -1e30f, INFINITY, -INFINITY, NAN, -NAN, 1e-40f, -1e-40f,
                  0.0009765625f, 0.00146484375f})
    check(x);
  EXPECT_EQ(bad, 0) << "first mismatch at f32 bits " << std::hex << first_bad;
}

// Tile scales and codes against a naive implementation: plain loops, std::fabs / std::max, the
// documented rules for zero tiles.
TEST(Fp8Scaling, MatchesNaiveImplementation) {
  set_num_threads(2);
  const int64_t R = 300, C = 200;
  std::vector<float> x(R * C);
  for (int64_t i = 0; i < R * C; ++i) {
    float row_mag = std::exp2(float(int(i / C % 17) - 8));  // rows spanning 2^-8 .. 2^8
    x[i] = row_mag * rng_normal(5, 1, uint64_t(i));
  }
  for (int64_t r = 128; r < 256; ++r)  // one all-zero 128x128 block, and zero 1x128 tiles with it
    for (int64_t c = 0; c < 128; ++c) x[r * C + c] = 0.f;
  for (int64_t c = 128; c < C; ++c) x[5 * C + c] = 1e-44f;  // amax / 448 underflows to 0 -> scale 1
  for (auto [tr, tc] : std::vector<std::pair<int64_t, int64_t>>{{1, 128}, {128, 1}, {128, 128}, {3, 7}}) {
    const int64_t nr = (R + tr - 1) / tr, nc = (C + tc - 1) / tc;
    std::vector<float> xq(R * C), scales(nr * nc);
    std::vector<uint8_t> codes(R * C);
    fp8_quantize(xq.data(), codes.data(), scales.data(), x.data(), R, C, tr, tc);
    for (int64_t br = 0; br < nr; ++br)
      for (int64_t bc = 0; bc < nc; ++bc) {
        float amax = 0.f;
        for (int64_t r = br * tr; r < std::min(R, (br + 1) * tr); ++r)
          for (int64_t c = bc * tc; c < std::min(C, (bc + 1) * tc); ++c) amax = std::max(amax, std::fabs(x[r * C + c]));
        float s = amax / 448.f;
        if (s == 0.f) s = 1.f;
        ASSERT_EQ(bits(scales[br * nc + bc]), bits(s)) << tr << "x" << tc << " tile " << br << "," << bc;
        for (int64_t r = br * tr; r < std::min(R, (br + 1) * tr); ++r)
          for (int64_t c = bc * tc; c < std::min(C, (bc + 1) * tc); ++c) {
            uint8_t q = naive_encode(x[r * C + c] / s, true);
            ASSERT_EQ(codes[r * C + c], q) << r << "," << c;
            ASSERT_EQ(bits(xq[r * C + c]), bits(e4m3_bits_to_f32(q) * s)) << r << "," << c;
            // The error bound the GEMM test relies on: 2^-4 relative in the normal range, half the
            // subnormal spacing (2^-10 s) below it.
            ASSERT_LE(std::fabs(double(xq[r * C + c]) - x[r * C + c]),
                      std::ldexp(std::fabs(double(x[r * C + c])), -4) + std::ldexp(double(s), -10));
            if (std::fabs(x[r * C + c]) == amax && amax > 0.f && s != 1.f) {
              ASSERT_EQ(codes[r * C + c] & 0x7F, 0x7E);
            }
          }
      }
    // In place gives the same values.
    std::vector<float> y = x;
    fp8_quantize(y.data(), nullptr, nullptr, y.data(), R, C, tr, tc);
    ASSERT_EQ(0, memcmp(y.data(), xq.data(), y.size() * 4)) << tr << "x" << tc;
  }
}

TEST(Fp8Scaling, NonFiniteValuesPoisonTheirTileOnly) {
  const int64_t R = 4, C = 256;
  std::vector<float> x(R * C, 1.f), xq(R * C), scales(R * 2);
  x[1 * C + 3] = NAN;
  x[2 * C + 200] = INFINITY;
  fp8_quantize(xq.data(), nullptr, scales.data(), x.data(), R, C, 1, 128);
  for (int64_t r = 0; r < R; ++r)
    for (int64_t c = 0; c < C; ++c) {
      bool poisoned = (r == 1 && c < 128) || (r == 2 && c >= 128);
      EXPECT_EQ(std::isnan(xq[r * C + c]), poisoned) << r << "," << c;
      if (!poisoned) {
        EXPECT_EQ(xq[r * C + c], 1.f);
      }
    }
  EXPECT_TRUE(std::isnan(scales[1 * 2 + 0]));
  EXPECT_TRUE(std::isnan(scales[2 * 2 + 1]));
  EXPECT_EQ(scales[0], 1.f / 448.f);
}

// Emulated GEMMs against f64. Each operand value v becomes v' with |v' - v| <= e(v) = u|v| + 2^-10 s
// (u = 2^-4 for E4M3: half an ulp of 3 mantissa bits, relative; 2^-10 s: half the subnormal
// spacing 2^-9 of the tile's scale s; the f32 divide and multiply around the rounding add <= 2^-23
// relative, folded into u). A product then errs by at most e(a)|b| + |a|e(b) + e(a)e(b), and the f32
// GEMM over K terms adds at most gamma_K sum |a'||b'| with gamma_K = K 2^-24 / (1 - K 2^-24). The
// bound per output element is the sum of these; with no subnormals it is about (2u + u^2) sum |a||b|,
// i.e. ~13% of sum |a||b| for E4M3 — a worst case; typical errors are ~u / sqrt(3) per product and
// average out, which the Frobenius check below pins down.
namespace {

struct GemmCase {
  int64_t M, K, N;
};

// For C[M,N] = A[M,K] B[N,K]^T where A was quantised into Aq with per-element scale sA (and B into
// Bq with sB), check the emulated result against the f64 product of the originals.
void check_bound(const std::vector<float>& Cemu, const std::vector<float>& A, const std::vector<float>& Aq,
                 const std::vector<float>& sA, const std::vector<float>& B, const std::vector<float>& Bq,
                 const std::vector<float>& sB, int64_t M, int64_t K, int64_t N, double u, double sub,
                 const char* what) {
  const double gamma = K * std::ldexp(1.0, -24) / (1 - K * std::ldexp(1.0, -24));
  double err2 = 0, ref2 = 0, worst = 0;
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      double ref = 0, bound = 0, abs_q = 0;
      for (int64_t k = 0; k < K; ++k) {
        double a = A[i * K + k], b = B[j * K + k];
        double ea = (u + std::ldexp(1.0, -23)) * std::fabs(a) + sub * sA[i * K + k];
        double eb = (u + std::ldexp(1.0, -23)) * std::fabs(b) + sub * sB[j * K + k];
        ref += a * b;
        bound += ea * std::fabs(b) + std::fabs(a) * eb + ea * eb;
        abs_q += std::fabs(double(Aq[i * K + k])) * std::fabs(double(Bq[j * K + k]));
      }
      bound += gamma * abs_q;
      double err = std::fabs(double(Cemu[i * N + j]) - ref);
      ASSERT_LE(err, bound) << what << " element " << i << "," << j;
      worst = std::max(worst, err / bound);
      err2 += err * err;
      ref2 += ref * ref;
    }
  // Typical error: each product carries two independent roundings of relative rms <~ u/sqrt(3)
  // (for E4M3 ~3.6%, less in practice since most mantissas are not at a binade's bottom).
  EXPECT_LT(std::sqrt(err2 / ref2), 1.2 * u) << what;
  EXPECT_GT(worst, 0.0) << what;  // the emulation is not accidentally exact
  printf("%-12s M=%lld K=%lld N=%lld: relative Frobenius error %.2e, worst element at %.1f%% of its bound\n", what,
         (long long)M, (long long)K, (long long)N, std::sqrt(err2 / ref2), 100 * worst);
}

// Per-element scale of a tiling (for the bound's subnormal term): the tile's scale broadcast.
std::vector<float> scales_of(const std::vector<float>& x, int64_t R, int64_t C, int64_t tr, int64_t tc) {
  const int64_t nc = (C + tc - 1) / tc;
  std::vector<float> s(((R + tr - 1) / tr) * nc), out(R * C);
  fp8_quantize(nullptr, nullptr, s.data(), x.data(), R, C, tr, tc);
  for (int64_t r = 0; r < R; ++r)
    for (int64_t c = 0; c < C; ++c) out[r * C + c] = s[(r / tr) * nc + c / tc];
  return out;
}

std::vector<float> transpose(const std::vector<float>& x, int64_t R, int64_t C) {
  std::vector<float> t(R * C);
  for (int64_t r = 0; r < R; ++r)
    for (int64_t c = 0; c < C; ++c) t[c * R + r] = x[r * C + c];
  return t;
}

// Activations with outlier rows and channels (what fine-grained scaling is for), weights ~N(0, 0.05).
std::vector<float> activations(int64_t R, int64_t C, uint64_t seed) {
  std::vector<float> x(R * C);
  for (int64_t r = 0; r < R; ++r)
    for (int64_t c = 0; c < C; ++c) {
      float scale = (r % 7 == 3 ? 30.f : 1.f) * (c % 61 == 5 ? 20.f : 1.f);
      x[r * C + c] = scale * rng_normal(seed, 1, uint64_t(r * C + c));
    }
  return x;
}

std::vector<float> weights(int64_t R, int64_t C, uint64_t seed) {
  std::vector<float> w(R * C);
  for (int64_t i = 0; i < R * C; ++i) w[i] = 0.05f * rng_normal(seed, 2, uint64_t(i));
  return w;
}

}  // namespace

TEST(Fp8Gemm, LinearForwardDgradWgradWithinAnalyticBound) {
  set_num_threads(2);
  const double u8 = std::ldexp(1.0, -4), sub8 = std::ldexp(1.0, -10);
  for (GemmCase g : {GemmCase{64, 300, 96}, GemmCase{257, 128, 40}}) {
    const int64_t M = g.M, in = g.K, out = g.N;
    auto x = activations(M, in, 1), W = weights(out, in, 2), dy = activations(M, out, 3);

    // forward y[M,out] = x W^T: x 1x128 tiles along in, W 128x128 blocks
    std::vector<float> y(M * out), xq(M * in), Wq(out * in);
    linear_forward(y.data(), x.data(), W.data(), M, in, out, false, Precision::FP8);
    fp8_quantize_1x128(xq.data(), x.data(), M, in);
    fp8_quantize_128x128(Wq.data(), W.data(), out, in);
    check_bound(y, x, xq, scales_of(x, M, in, 1, 128), W, Wq, scales_of(W, out, in, 128, 128), M, in, out, u8,
                sub8, "forward");
    // and it is exactly the f32 GEMM of the de-quantised operands
    std::vector<float> y32(M * out);
    linear_forward(y32.data(), xq.data(), Wq.data(), M, in, out);
    EXPECT_EQ(0, memcmp(y.data(), y32.data(), y.size() * 4));

    // dgrad dx[M,in] = dy W: dy 1x128 tiles along out, W blocks. As C = A B^T with A = dy, B = W^T.
    std::vector<float> dx(M * in), dW(out * in, 0.f);
    linear_backward(dx.data(), dW.data(), dy.data(), x.data(), W.data(), M, in, out, false, Precision::FP8);
    std::vector<float> dyq(M * out);
    fp8_quantize_1x128(dyq.data(), dy.data(), M, out);
    auto Wt = transpose(W, out, in), Wqt = transpose(Wq, out, in);
    check_bound(dx, dy, dyq, scales_of(dy, M, out, 1, 128), Wt, Wqt, transpose(scales_of(W, out, in, 128, 128), out, in),
                M, out, in, u8, sub8, "dgrad");

    // wgrad dW[out,in] = dy^T x: both 128x1 tiles along M. As C = A B^T with A = dy^T, B = x^T.
    std::vector<float> dyq2(M * out), xq2(M * in);
    fp8_quantize_128x1(dyq2.data(), dy.data(), M, out);
    fp8_quantize_128x1(xq2.data(), x.data(), M, in);
    check_bound(dW, transpose(dy, M, out), transpose(dyq2, M, out), transpose(scales_of(dy, M, out, 128, 1), M, out),
                transpose(x, M, in), transpose(xq2, M, in), transpose(scales_of(x, M, in, 128, 1), M, in), out, M, in,
                u8, sub8, "wgrad");
  }
}

TEST(Bf16Gemm, LinearWithinAnalyticBound) {
  set_num_threads(2);
  const int64_t M = 70, in = 150, out = 33;
  const double u = std::ldexp(1.0, -8);  // bf16: 7 stored mantissa bits, half an ulp relative
  auto x = activations(M, in, 4), W = weights(out, in, 5), dy = activations(M, out, 6);
  auto r = [](std::vector<float> v) {
    for (float& f : v) f = round_bf16(f);
    return v;
  };
  std::vector<float> zx(M * in, 0.f), zW(out * in, 0.f), zdy(M * out, 0.f);  // no subnormal term
  std::vector<float> y(M * out);
  linear_forward(y.data(), x.data(), W.data(), M, in, out, false, Precision::BF16);
  check_bound(y, x, r(x), zx, W, r(W), zW, M, in, out, u, 0, "bf16 forward");
  std::vector<float> dx(M * in), dW(out * in, 0.f);
  linear_backward(dx.data(), dW.data(), dy.data(), x.data(), W.data(), M, in, out, false, Precision::BF16);
  check_bound(dx, dy, r(dy), zdy, transpose(W, out, in), r(transpose(W, out, in)), transpose(zW, out, in), M, out, in,
              u, 0, "bf16 dgrad");
  check_bound(dW, transpose(dy, M, out), r(transpose(dy, M, out)), transpose(zdy, M, out), transpose(x, M, in),
              r(transpose(x, M, in)), transpose(zx, M, in), out, M, in, u, 0, "bf16 wgrad");
}

// fp32 is the plain GEMM path, bit for bit; accumulation flags behave as in gemm.h.
TEST(PrecisionGemm, Fp32IsThePlainPathAndAccumulates) {
  const int64_t M = 20, in = 140, out = 12;
  auto x = activations(M, in, 7), W = weights(out, in, 8), dy = activations(M, out, 9);
  for (Precision p : {Precision::FP32, Precision::BF16, Precision::FP8}) {
    std::vector<float> y(M * out, 0.f), ya(M * out, 1.f), ref(M * out);
    linear_forward(y.data(), x.data(), W.data(), M, in, out, false, p);
    linear_forward(ya.data(), x.data(), W.data(), M, in, out, true, p);
    for (int64_t i = 0; i < M * out; ++i) EXPECT_FLOAT_EQ(ya[i], y[i] + 1.f) << precision_name(p);
    if (p == Precision::FP32) {
      linear_forward(ref.data(), x.data(), W.data(), M, in, out);
      EXPECT_EQ(0, memcmp(ref.data(), y.data(), y.size() * 4));
    }
    std::vector<float> dx(M * in), dW(out * in, 0.f), dx2(M * in, 0.f), dW2(out * in, 0.f);
    linear_backward(dx.data(), dW.data(), dy.data(), x.data(), W.data(), M, in, out, false, p);
    linear_backward(nullptr, dW2.data(), dy.data(), x.data(), W.data(), M, in, out, false, p);
    linear_backward(dx2.data(), dW2.data(), dy.data(), x.data(), W.data(), M, in, out, true, p);
    // (BLAS may split K differently with beta = 1, so compare to round-off, not bits.)
    float dWmax = 0.f, dxmax = 0.f;
    for (float v : dW) dWmax = std::max(dWmax, std::fabs(v));
    for (float v : dx) dxmax = std::max(dxmax, std::fabs(v));
    for (int64_t i = 0; i < out * in; ++i) EXPECT_NEAR(dW2[i], 2 * dW[i], 1e-5f * dWmax) << precision_name(p);
    for (int64_t i = 0; i < M * in; ++i) EXPECT_NEAR(dx2[i], dx[i], 1e-5f * dxmax) << precision_name(p);
    if (p == Precision::FP32) {
      std::vector<float> rdx(M * in), rdW(out * in, 0.f);
      linear_backward(rdx.data(), rdW.data(), dy.data(), x.data(), W.data(), M, in, out);
      EXPECT_EQ(0, memcmp(rdx.data(), dx.data(), dx.size() * 4));
      EXPECT_EQ(0, memcmp(rdW.data(), dW.data(), dW.size() * 4));
    }
  }
  EXPECT_EQ(parse_precision("fp8"), Precision::FP8);
  EXPECT_EQ(parse_precision("bf16"), Precision::BF16);
  EXPECT_EQ(parse_precision("fp32"), Precision::FP32);
  EXPECT_STREQ(precision_name(Precision::FP8), "fp8");
}
