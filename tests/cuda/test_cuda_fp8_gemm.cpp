// The host side of the FP8 GEMMs (framework/cuda/fp8_gemm.h), which runs without a GPU: the plan of
// each linear GEMM (which tensor each operand quantises, transposed or not, which scale mode), the
// row-major -> column-major mapping, and the whole chain evaluated on the CPU: operands built by the
// single-source kernels, then a transcription of what cuBLASLt's block-scaled matmul computes
// (TN, VEC128_32F / BLK128x128_32F scales in the layouts documented in kernels/fp8_operand.h),
// against the CPU emulation moe::linear_forward/backward(..., Precision::FP8).
// What this cannot show: that cuBLASLt reads the scales as transcribed here (tests/gpu does).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "framework/cuda/fp8_gemm.h"
#include "framework/kernels/fp8_operand.h"
#include "framework/precision.h"

using namespace moe;
using cuda::LinearGemm;
using cuda::LinearTensor;

namespace {

constexpr int64_t T = kern::kFp8Tile;

std::vector<float> randn(size_t n, uint32_t seed, float scale = 1.f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

// An operand on the host, as cuda::fp8_operand builds it on the device.
struct HostOperand {
  kern::Fp8OperandLayout layout;
  std::vector<uint8_t> codes;
  std::vector<float> scales;
};

HostOperand host_operand(const float* x, const cuda::Fp8OperandSpec& s) {
  const kern::Fp8Tiles g = kern::fp8_operand_tiles(s.R, s.C, s.transpose, s.blocks);
  std::vector<float> tile_scales(size_t(g.count()));
  fp8_quantize(nullptr, nullptr, tile_scales.data(), x, s.R, s.C, g.tr, g.tc);
  HostOperand op;
  op.layout = cuda::fp8_layout(s);
  EXPECT_TRUE(kern::fp8_operand_tiles_match(g, s.transpose, op.layout));
  op.codes.resize(size_t(op.layout.code_count()));
  op.scales.resize(size_t(op.layout.scale_count()));
  for (int64_t i = 0; i < op.layout.code_count(); ++i)
    op.codes[size_t(i)] = kern::fp8_operand_code(x, tile_scales.data(), g, s.transpose, op.layout, i);
  for (int64_t j = 0; j < op.layout.scale_count(); ++j)
    op.scales[size_t(j)] = kern::fp8_operand_scale(tile_scales.data(), g, s.transpose, op.layout, j);
  return op;
}

// The scale of element (outer o, reduction k) of a K-major operand with `outer` rows and reduction
// length k_len, in cuBLASLt's layouts (written out again here, not taken from Fp8OperandLayout):
//   VEC128_32F      [ceil(k_len/128), round_up(outer, 4)], outer fastest
//   BLK128x128_32F  [ceil(outer/128), round_up(ceil(k_len/128), 4)], K blocks fastest
float cublaslt_scale(const std::vector<float>& s, bool blocks, int64_t outer, int64_t k_len, int64_t o, int64_t k) {
  const int64_t kb = (k_len + T - 1) / T;
  if (blocks) return s[size_t((o / T) * ((kb + 3) / 4 * 4) + k / T)];
  return s[size_t((k / T) * ((outer + 3) / 4 * 4) + o)];
}

// D = alpha op(A) op(B) + beta D, column-major, TRANSA = T, TRANSB = N, every code times its
// scale, accumulated in double (cuBLASLt: f32; the tolerance covers the difference).
void emulate_cublaslt(float* D, const cuda::Fp8ColMajorGemm& g, const HostOperand& A, const HostOperand& B,
                      float beta) {
  for (int64_t j = 0; j < g.n; ++j)
    for (int64_t i = 0; i < g.m; ++i) {
      double acc = 0;
      for (int64_t k = 0; k < g.k; ++k) {
        const double a = kern::e4m3_bits_to_f32(A.codes[size_t(i * g.lda + k)]) *
                         double(cublaslt_scale(A.scales, g.a_blocks, g.m, g.k, i, k));
        const double b = kern::e4m3_bits_to_f32(B.codes[size_t(j * g.ldb + k)]) *
                         double(cublaslt_scale(B.scales, g.b_blocks, g.n, g.k, j, k));
        acc += a * b;
      }
      float& d = D[size_t(j * g.ldd + i)];
      d = float(acc + (beta != 0.f ? double(beta) * d : 0.0));
    }
}

double normalised_error(const std::vector<float>& got, const std::vector<float>& want) {
  double scale = 1e-6, err = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    scale = std::max(scale, double(std::abs(want[i])));
    const double e = std::abs(double(got[i]) - double(want[i]));
    err = e <= err ? err : e;  // NaN counts
    if (std::isnan(e)) err = INFINITY;
  }
  return err / scale;
}

}  // namespace

TEST(CudaFp8Gemm, LinearPlansFollowTheRecipe) {
  const int64_t M = 48, in = 208, out = 144;
  auto f = cuda::fp8_linear_plan(LinearGemm::Forward, M, in, out);
  EXPECT_EQ(f.X.tensor, LinearTensor::X);
  EXPECT_FALSE(f.X.transpose);
  EXPECT_FALSE(f.X.blocks);  // x: 1x128 along in
  EXPECT_EQ(f.Y.tensor, LinearTensor::W);
  EXPECT_FALSE(f.Y.transpose);
  EXPECT_TRUE(f.Y.blocks);  // W: 128x128
  EXPECT_EQ(f.Mr, M);
  EXPECT_EQ(f.Nr, out);

  auto d = cuda::fp8_linear_plan(LinearGemm::Dgrad, M, in, out);
  EXPECT_EQ(d.X.tensor, LinearTensor::DY);
  EXPECT_FALSE(d.X.transpose);
  EXPECT_FALSE(d.X.blocks);  // dy: 1x128 along out
  EXPECT_EQ(d.Y.tensor, LinearTensor::W);
  EXPECT_TRUE(d.Y.transpose);  // W^T [in, out]: K = out contiguous
  EXPECT_TRUE(d.Y.blocks);
  EXPECT_EQ(cuda::fp8_layout(d.Y).outer, in);
  EXPECT_EQ(cuda::fp8_layout(d.Y).K, out);
  EXPECT_EQ(d.Mr, M);
  EXPECT_EQ(d.Nr, in);

  auto w = cuda::fp8_linear_plan(LinearGemm::Wgrad, M, in, out);
  EXPECT_EQ(w.X.tensor, LinearTensor::DY);
  EXPECT_EQ(w.Y.tensor, LinearTensor::X);
  EXPECT_TRUE(w.X.transpose && w.Y.transpose);  // K = the tokens
  EXPECT_FALSE(w.X.blocks || w.Y.blocks);       // 128x1 tiles of dy and x = 1x128 of their transposes
  EXPECT_EQ(cuda::fp8_layout(w.X).K, M);
  EXPECT_EQ(w.Mr, out);
  EXPECT_EQ(w.Nr, in);
}

TEST(CudaFp8Gemm, RowMajorMapsToTheTnProblem) {
  const auto X = kern::Fp8OperandLayout::make(48, 200, false), Y = kern::Fp8OperandLayout::make(144, 200, true);
  const auto g = cuda::fp8_to_col_major(X, Y, 160);
  EXPECT_EQ(g.m, 144);  // D = C^T: Y's rows
  EXPECT_EQ(g.n, 48);
  EXPECT_EQ(g.k, 256);  // K padded to 128 with zero codes
  EXPECT_EQ(g.lda, 256);
  EXPECT_EQ(g.ldb, 256);
  EXPECT_EQ(g.ldd, 160);
  EXPECT_TRUE(g.a_blocks);  // A is Y
  EXPECT_FALSE(g.b_blocks);
  EXPECT_ANY_THROW(cuda::fp8_to_col_major(X, kern::Fp8OperandLayout::make(144, 300, true), 144));
}

TEST(CudaFp8Gemm, ShapeRule) {
  EXPECT_TRUE(cuda::fp8_gemm_shape_ok(16, 4096));
  EXPECT_FALSE(cuda::fp8_gemm_shape_ok(100, 128));
  EXPECT_FALSE(cuda::fp8_gemm_shape_ok(128, 100));
  EXPECT_FALSE(cuda::fp8_gemm_shape_ok(0, 128));
}

// Every linear GEMM through the plan, the operand kernels and the transcribed cuBLASLt matmul
// equals the CPU emulation up to accumulation order. in and out are no multiples of 128 (partial
// blocks, padded K), M is no multiple of 128 (wgrad's K); dgrad and wgrad accumulate.
TEST(CudaFp8Gemm, EmulatedChainMatchesTheCpuEmulation) {
  for (auto [M, in, out] : {std::tuple<int64_t, int64_t, int64_t>{48, 208, 144}, {160, 128, 272}, {16, 16, 16}}) {
    SCOPED_TRACE(::testing::Message() << "M=" << M << " in=" << in << " out=" << out);
    const auto x = randn(size_t(M * in), 1, 2.f), W = randn(size_t(out * in), 2, 0.05f),
               dy = randn(size_t(M * out), 3, 1e-3f);
    auto source = [&](LinearTensor t) {
      return t == LinearTensor::X ? x.data() : t == LinearTensor::W ? W.data() : dy.data();
    };
    auto run = [&](LinearGemm kind, std::vector<float>& C, float beta) {
      const auto p = cuda::fp8_linear_plan(kind, M, in, out);
      const HostOperand X = host_operand(source(p.X.tensor), p.X), Y = host_operand(source(p.Y.tensor), p.Y);
      emulate_cublaslt(C.data(), cuda::fp8_to_col_major(X.layout, Y.layout, p.Nr), Y, X, beta);
    };

    std::vector<float> y(size_t(M * out)), y_want(y.size());
    run(LinearGemm::Forward, y, 0.f);
    linear_forward(y_want.data(), x.data(), W.data(), M, in, out, false, Precision::FP8);
    EXPECT_LE(normalised_error(y, y_want), 1e-5) << "forward";

    const auto dx0 = randn(size_t(M * in), 4, 1e-3f), dW0 = randn(size_t(out * in), 5, 1e-2f);
    std::vector<float> dx = dx0, dx_want = dx0, dW = dW0, dW_want = dW0;
    run(LinearGemm::Dgrad, dx, 1.f);
    run(LinearGemm::Wgrad, dW, 1.f);
    linear_backward(dx_want.data(), dW_want.data(), dy.data(), x.data(), W.data(), M, in, out, true, Precision::FP8);
    EXPECT_LE(normalised_error(dx, dx_want), 1e-5) << "dgrad";
    EXPECT_LE(normalised_error(dW, dW_want), 1e-5) << "wgrad";
  }
}
