// Real FP8 GEMMs on the GPU (framework/cuda/fp8_gemm.h) against the CPU emulation
// (framework/precision.h): the operands' codes and scales bit for bit; forward, dgrad and wgrad
// through cuBLASLt's block-scaled matmul to f32 accumulation order (1e-5 normalised), checking
// that cuBLASLt really ran; a shape outside the rule taking the fallback; and a speed print
// (FP8 vs bf16 at 4096^3), not an assertion, so the first GPU run records the ratio.
#include <cuda_runtime_api.h>

#include <cstdio>
#include <cstring>
#include <vector>

#include "framework/cuda/check.h"
#include "framework/cuda/fp8_gemm.h"
#include "framework/cuda/gemm.h"
#include "framework/cuda/linear.h"
#include "framework/cuda/ops.h"
#include "framework/precision.h"
#include "tests/gpu/gpu_test.h"

using namespace moe;
using namespace moe::gpu_test;

namespace {

class GpuFp8 : public GpuTest {};

struct Case {
  int64_t R, C;
  bool transpose, blocks;
};

}  // namespace

// Every stored code is fp8_quantize's code of its element, every scale its tile's scale (in the
// cuBLASLt layout of kernels/fp8_operand.h), padding codes +0: forward's x and W, dgrad's W^T,
// wgrad's dy^T; odd sizes so edge tiles are partial.
TEST_F(GpuFp8, OperandCodesAndScalesAreTheCpusBitForBit) {
  for (const Case c : {Case{200, 300, false, false}, Case{300, 200, false, true}, Case{300, 200, true, true},
                       Case{200, 260, true, false}}) {
    SCOPED_TRACE(::testing::Message() << c.R << "x" << c.C << (c.transpose ? " transposed" : "")
                                      << (c.blocks ? " 128x128" : " 1x128"));
    const auto x = randn(size_t(c.R * c.C), 31, 3.f);
    const kern::Fp8Tiles g = kern::fp8_operand_tiles(c.R, c.C, c.transpose, c.blocks);
    std::vector<uint8_t> codes(x.size());
    std::vector<float> tile_scales(size_t(g.count()));
    fp8_quantize(nullptr, codes.data(), tile_scales.data(), x.data(), c.R, c.C, g.tr, g.tc);

    auto X = to_device(x);
    const cuda::Fp8Operand op = cuda::fp8_operand(X.get(), c.R, c.C, c.transpose, c.blocks);
    const auto q = to_host(op.codes);
    const auto s = to_host(op.scales);
    const auto& L = op.layout;
    int bad = 0;
    for (int64_t o = 0; o < L.outer; ++o)
      for (int64_t k = 0; k < L.ld; ++k) {
        const uint8_t got = q[size_t(o * L.ld + k)];
        if (k >= L.K) {
          bad += got != 0;
          continue;
        }
        const int64_t r = c.transpose ? k : o, col = c.transpose ? o : k;
        bad += got != codes[size_t(r * c.C + col)];
        const float sg = s[size_t(L.scale_index(o, k))], sw = tile_scales[size_t(g.tile_of(r, col))];
        bad += std::memcmp(&sg, &sw, 4) != 0;
      }
    EXPECT_EQ(bad, 0);
  }
}

// Forward, dgrad (accumulating) and wgrad on cuBLASLt's FP8 path vs the CPU emulation. in and out
// are no multiples of 128 (partial 128x128 blocks, zero-padded K); M = 144 is no multiple of 128
// (wgrad's K padded); M = 37 is no multiple of 16 either (forward and dgrad run 32 rows in place
// and 5 through a padded 16-row copy: two GEMMs each).
TEST_F(GpuFp8, LinearGemmsMatchTheCpuEmulation) {
  if (!is_hopper()) GTEST_SKIP() << "the FP8 GEMM path runs on sm_90 only";
  for (const int64_t M : {int64_t(144), int64_t(37)}) {
    SCOPED_TRACE(::testing::Message() << "M " << M);
    const int64_t in = 336, out = 208;
    ASSERT_TRUE(cuda::fp8_gemm_shape_ok(16, out) && cuda::fp8_gemm_shape_ok(16, in) &&
                cuda::fp8_gemm_shape_ok(out, in));
    const auto x = randn(size_t(M * in), 41, 2.f), W = randn(size_t(out * in), 42, 0.05f),
               dy = randn(size_t(M * out), 43, 1e-3f), dx0 = randn(size_t(M * in), 44, 1e-3f),
               dW0 = randn(size_t(out * in), 45, 1e-2f);
    std::vector<float> y_want(size_t(M * out)), dx_want = dx0, dW_want = dW0;
    linear_forward(y_want.data(), x.data(), W.data(), M, in, out, false, Precision::FP8);
    linear_backward(dx_want.data(), dW_want.data(), dy.data(), x.data(), W.data(), M, in, out, true, Precision::FP8);

    auto X = to_device(x), Wd = to_device(W), dY = to_device(dy), dX = to_device(dx0), dW = to_device(dW0);
    cuda::DeviceBuffer<float> Y(M * out);
    const auto before = cuda::fp8_gemm_counts();
    cuda::linear_forward(Y.get(), X.get(), Wd.get(), M, in, out, false, Precision::FP8);
    cuda::linear_backward(dX.get(), dW.get(), dY.get(), X.get(), Wd.get(), M, in, out, true, Precision::FP8);
    cuda::synchronize();
    const auto after = cuda::fp8_gemm_counts();
    EXPECT_EQ(after.ran - before.ran, M % 16 == 0 ? 3 : 5) << "cuBLASLt's FP8 path did not run (declined: "
                                                            << after.declined - before.declined << ")";
    expect_close(to_host(Y), y_want, 1e-5, "fp8 forward");
    expect_close(to_host(dX), dx_want, 1e-5, "fp8 dgrad (accumulated)");
    expect_close(to_host(dW), dW_want, 1e-5, "fp8 wgrad (accumulated)");
  }
}

// in = out = 100: no GEMM qualifies (fp8_gemm_shape_ok: forward's and dgrad's output widths and
// wgrad's both sides), all three take the fake-quantised f32 fallback, with the same numbers.
TEST_F(GpuFp8, ShapesOutsideTheRuleFallBack) {
  const int64_t M = 50, in = 100, out = 100;
  const auto x = randn(size_t(M * in), 51, 2.f), W = randn(size_t(out * in), 52, 0.05f),
             dy = randn(size_t(M * out), 53, 1e-3f);
  std::vector<float> y_want(size_t(M * out)), dx_want(size_t(M * in)), dW_want(size_t(out * in), 0.f);
  linear_forward(y_want.data(), x.data(), W.data(), M, in, out, false, Precision::FP8);
  linear_backward(dx_want.data(), dW_want.data(), dy.data(), x.data(), W.data(), M, in, out, false, Precision::FP8);

  auto X = to_device(x), Wd = to_device(W), dY = to_device(dy), dW = to_device(dW_want);
  cuda::DeviceBuffer<float> Y(M * out), dX(M * in);
  MOE_CUDA_CHECK(cudaMemset(dW.get(), 0, size_t(dW.size()) * 4));
  const auto before = cuda::fp8_gemm_counts();
  cuda::linear_forward(Y.get(), X.get(), Wd.get(), M, in, out, false, Precision::FP8);
  cuda::linear_backward(dX.get(), dW.get(), dY.get(), X.get(), Wd.get(), M, in, out, false, Precision::FP8);
  cuda::synchronize();
  EXPECT_EQ(cuda::fp8_gemm_counts().ran, before.ran);
  expect_close(to_host(Y), y_want, 1e-5, "fallback forward");
  expect_close(to_host(dX), dx_want, 1e-5, "fallback dgrad");
  expect_close(to_host(dW), dW_want, 1e-5, "fallback wgrad");
}

// Speed at 4096^3, printed: the FP8 GEMM alone (operands quantised beforehand), the fp8 linear
// forward with its quantisation, and a bf16 x bf16 -> f32 GEMM. Not an assertion.
TEST_F(GpuFp8, BenchmarkFp8VsBf16) {
  if (!is_hopper()) GTEST_SKIP() << "the FP8 GEMM path runs on sm_90 only";
  const int64_t n = 4096;
  const double flop = 2.0 * double(n) * double(n) * double(n);
  const auto a = randn(size_t(n * n), 61), b = randn(size_t(n * n), 62, 0.05f);
  auto A = to_device(a), B = to_device(b);
  cuda::DeviceBuffer<float> C(n * n);
  cuda::DeviceBuffer<uint16_t> Ab(n * n), Bb(n * n);
  cuda::cast_f32_to_bf16(Ab.get(), A.get(), n * n);
  cuda::cast_f32_to_bf16(Bb.get(), B.get(), n * n);
  const cuda::Fp8Operand X = cuda::fp8_operand(A.get(), n, n, false, false),
                         Y = cuda::fp8_operand(B.get(), n, n, false, true);
  auto tflops = [&](auto f) { return flop / (mean_ms(f) * 1e-3) / 1e12; };
  bool fp8_ran = true;
  const double fp8 = tflops([&] { fp8_ran = cuda::fp8_gemm(C.get(), n, X, Y, 0.f) && fp8_ran; });
  const double fp8_linear =
      tflops([&] { cuda::linear_forward(C.get(), A.get(), B.get(), n, n, n, false, Precision::FP8); });
  const double bf16 = tflops([&] {
    cuda::gemm(false, true, n, n, n, 1.f, Ab.get(), n, Bb.get(), n, 0.f, C.get(), n, DType::BF16, DType::F32);
  });
  std::printf("[ BENCH    ] %lldx%lldx%lld: fp8 gemm %.1f TFLOP/s%s, fp8 linear_forward (with quantisation) %.1f "
              "TFLOP/s, bf16 gemm (f32 out) %.1f TFLOP/s, fp8/bf16 %.2fx\n",
              (long long)n, (long long)n, (long long)n, fp8, fp8_ran ? "" : " (DECLINED: not an fp8 GEMM)",
              fp8_linear, bf16, fp8 / bf16);
  EXPECT_TRUE(fp8_ran) << "cuBLASLt declined the 4096^3 FP8 GEMM";
}
