// FP8 activation rows (framework/kernels/fp8_rows.h, framework/fp8_rows.h): producers that quantise
// their output as they write it, against the unfused ops they replace. Everything is bit for bit:
//   - codes and scales are fp8_quantize(.., 1, 128)'s, padding codes +0, values its fake-quantised ones;
//   - the fused RMSNorm, SwiGLU and permute write the unfused ops' f32 outputs, plus their rows' codes;
//   - linear_forward_fp8 on the rows equals linear_forward(.., FP8) on the f32 input;
//   - the rows as a GEMM operand (codes in place, VEC128 scales) are fp8_operand.h's operand of x.
// Shapes cover partial tiles (cols 200, 72) and rows of zeros, infinities and NaNs.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "framework/fp8_rows.h"
#include "framework/kernels/fp8_operand.h"
#include "framework/moe_ops.h"
#include "framework/ops.h"
#include "framework/precision.h"
#include "tests/unit/test_random.h"

using namespace moe;
using moe::kern::f32_bits;
using moe::test::randn;

namespace {

// Owns the memory of rows x cols E4M3 rows; codes start as 0xAA so unwritten padding shows.
struct RowsBuffer {
  std::vector<uint8_t> codes;
  std::vector<float> scales;
  Fp8Rows q;
  RowsBuffer(int64_t rows, int64_t cols)
      : codes(size_t(rows * Fp8Rows::ld_of(cols)), 0xAA), scales(size_t(rows * Fp8Rows::tiles_of(cols)), -1.f) {
    q = {codes.data(), scales.data(), rows, cols};
  }
};

// Random rows with a few special ones: all zeros, a huge value, an inf and a NaN.
std::vector<float> input(int64_t R, int64_t C, uint32_t seed) {
  std::vector<float> x = randn(size_t(R * C), seed, 3.f);
  if (R >= 4) {
    for (int64_t c = 0; c < C; ++c) x[size_t(c)] = 0.f;
    x[size_t(C + 1)] = 1e30f;
    x[size_t(2 * C + C / 2)] = std::numeric_limits<float>::infinity();
    x[size_t(3 * C + C - 1)] = std::numeric_limits<float>::quiet_NaN();
  }
  return x;
}

// q holds fp8_quantize(x, 1, 128)'s codes and scales, +0 padding, and its fake-quantised values.
void expect_rows_of(const Fp8Rows& q, const float* x) {
  const int64_t R = q.rows, C = q.cols, ld = q.ld(), nt = q.tiles();
  std::vector<uint8_t> codes(size_t(R * C));
  std::vector<float> scales(size_t(R * nt)), xq(size_t(R * C));
  fp8_quantize(xq.data(), codes.data(), scales.data(), x, R, C, 1, kern::kFp8Tile);
  for (int64_t r = 0; r < R; ++r) {
    for (int64_t t = 0; t < nt; ++t)
      ASSERT_EQ(f32_bits(q.row_scales(r)[t]), f32_bits(scales[size_t(r * nt + t)])) << "row " << r << " tile " << t;
    for (int64_t c = 0; c < ld; ++c) {
      const uint8_t want = c < C ? codes[size_t(r * C + c)] : 0;
      ASSERT_EQ(q.row_codes(r)[c], want) << "row " << r << " col " << c;
      if (c >= C) continue;
      ASSERT_EQ(f32_bits(q.value(r, c)), f32_bits(xq[size_t(r * C + c)])) << "row " << r << " col " << c;
    }
  }
}

// Bit for bit, except that a NaN matches any NaN: IEEE 754 leaves the sign and payload of an
// arithmetic NaN result to the hardware and the operand order the compiler picks (clang and GCC
// inline the fused and the plain SwiGLU differently and get NaNs of opposite signs).
void expect_same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::isnan(a[i]) && std::isnan(b[i])) continue;
    ASSERT_EQ(f32_bits(a[i]), f32_bits(b[i])) << "element " << i;
  }
}

struct Shape {
  int64_t R, C;
};
const Shape kShapes[] = {{6, 200}, {5, 128}, {9, 72}, {4, 384}};

}  // namespace

TEST(Fp8Rows, QuantizeRowsAreTheCpusTiles) {
  for (const Shape& s : kShapes) {
    SCOPED_TRACE(testing::Message() << s.R << "x" << s.C);
    const std::vector<float> x = input(s.R, s.C, 3);
    RowsBuffer b(s.R, s.C);
    quantize_rows(b.q, x.data());
    expect_rows_of(b.q, x.data());
  }
}

TEST(Fp8Rows, FusedRmsnormIsRmsnormThenQuantize) {
  for (const Shape& s : kShapes) {
    SCOPED_TRACE(testing::Message() << s.R << "x" << s.C);
    const std::vector<float> x = randn(size_t(s.R * s.C), 5), w = randn(size_t(s.C), 6);
    std::vector<float> y(x.size()), rstd(size_t(s.R)), y_ref(x.size()), rstd_ref(size_t(s.R));
    rmsnorm_forward(y_ref.data(), rstd_ref.data(), x.data(), w.data(), s.R, s.C, 1e-6f);
    RowsBuffer b(s.R, s.C);
    rmsnorm_forward_fp8(y.data(), rstd.data(), b.q, x.data(), w.data(), 1e-6f);
    expect_same_bits(y, y_ref);
    expect_same_bits(rstd, rstd_ref);
    expect_rows_of(b.q, y_ref.data());
  }
}

TEST(Fp8Rows, FusedSwigluIsSwigluThenQuantize) {
  for (const Shape& s : kShapes) {
    SCOPED_TRACE(testing::Message() << s.R << "x" << s.C);
    const std::vector<float> g = input(s.R, s.C, 7), u = randn(size_t(s.R * s.C), 8);
    std::vector<float> h(g.size()), h_ref(g.size());
    swiglu_forward(h_ref.data(), g.data(), u.data(), s.R * s.C);
    RowsBuffer b(s.R, s.C);
    swiglu_forward_fp8(h.data(), b.q, g.data(), u.data());
    expect_same_bits(h, h_ref);
    expect_rows_of(b.q, h_ref.data());
  }
}

TEST(Fp8Rows, PermuteMovesRowsWithTheirCodes) {
  const int64_t N = 7, K = 2, D = 200, P = N * K, E = 3;
  const std::vector<float> x = input(N, D, 9);
  std::vector<int32_t> idx(static_cast<size_t>(P));
  for (int64_t i = 0; i < P; ++i) idx[size_t(i)] = int32_t((i * 5 + i / K) % E);
  std::vector<int64_t> offsets(static_cast<size_t>(E + 1));
  std::vector<int32_t> slot_of(static_cast<size_t>(P)), pos_of(static_cast<size_t>(P));
  moe_dispatch_plan(offsets.data(), slot_of.data(), pos_of.data(), idx.data(), P, E);
  RowsBuffer q(N, D), qs(P, D);
  quantize_rows(q.q, x.data());
  std::vector<float> xs(size_t(P * D)), xs_ref(size_t(P * D));
  moe_permute(xs_ref.data(), x.data(), slot_of.data(), P, K, D);
  moe_permute_fp8(xs.data(), qs.q, x.data(), q.q, slot_of.data(), K);
  expect_same_bits(xs, xs_ref);
  // Quantising the permuted rows gives the moved codes: 1x128 tiles lie inside a row.
  expect_rows_of(qs.q, xs_ref.data());
}

TEST(Fp8Rows, LinearOnRowsIsTheFp8Linear) {
  const int64_t M = 9, in = 200, out = 48;
  const std::vector<float> x = randn(size_t(M * in), 11), W = randn(size_t(out * in), 12, 0.05f);
  RowsBuffer b(M, in);
  quantize_rows(b.q, x.data());
  for (bool accumulate : {false, true}) {
    std::vector<float> y = randn(size_t(M * out), 13), y_ref = y;
    linear_forward(y_ref.data(), x.data(), W.data(), M, in, out, accumulate, Precision::FP8);
    linear_forward_fp8(y.data(), b.q, W.data(), out, accumulate);
    expect_same_bits(y, y_ref);
    // And it is an fp8 GEMM, not the fp32 one.
    std::vector<float> y32 = randn(size_t(M * out), 13);
    linear_forward(y32.data(), x.data(), W.data(), M, in, out, accumulate, Precision::FP32);
    double diff = 0;
    for (size_t i = 0; i < y.size(); ++i) diff = std::max(diff, double(std::fabs(y[i] - y32[i])));
    EXPECT_GT(diff, 1e-4);
  }
  // A slice is the rows it names.
  std::vector<float> y(size_t(4 * out)), y_ref(size_t(4 * out));
  linear_forward(y_ref.data(), x.data() + 3 * in, W.data(), 4, in, out, false, Precision::FP8);
  linear_forward_fp8(y.data(), b.q.slice(3, 4), W.data(), out, false);
  expect_same_bits(y, y_ref);
}

TEST(Fp8Rows, RowsAreTheGemmOperandOfX) {
  // The codes of rows r0.. of q, read in place, and the VEC128 scales the GPU builds for them, are
  // kernels/fp8_operand.h's operand (1x128 tiles, not transposed) of those rows of x.
  const int64_t R = 11, C = 200, r0 = 3, n = 6;
  const std::vector<float> x = input(R, C, 15);
  RowsBuffer b(R, C);
  quantize_rows(b.q, x.data());
  const Fp8Rows s = b.q.slice(r0, n);
  const float* xs = x.data() + r0 * C;
  const kern::Fp8Tiles g = kern::fp8_operand_tiles(n, C, false, false);
  const kern::Fp8OperandLayout L = kern::Fp8OperandLayout::make(n, C, false);
  std::vector<float> tile_scales(size_t(g.count()));
  fp8_quantize(nullptr, nullptr, tile_scales.data(), xs, n, C, 1, kern::kFp8Tile);
  ASSERT_EQ(L.ld, s.ld());
  for (int64_t i = 0; i < L.code_count(); ++i)
    ASSERT_EQ(s.codes[i], kern::fp8_operand_code(xs, tile_scales.data(), g, false, L, i)) << "code " << i;
  for (int64_t j = 0; j < L.scale_count(); ++j)
    ASSERT_EQ(f32_bits(kern::fp8_rows_vec128_scale(s, L.scale_ld, j)),
              f32_bits(kern::fp8_operand_scale(tile_scales.data(), g, false, L, j)))
        << "scale " << j;
}
