// FP8 activation rows on the GPU (framework/cuda/fp8_rows.cu, cuda::linear_forward_fp8) against the
// CPU (framework/fp8_rows.h). The producers' f32 outputs match the CPU's to round-off (a block
// reduction adds in another order than the CPU's serial loop); their codes and scales are the CPU's
// quantisation of the GPU's own f32 output bit for bit. The forward GEMMs on the rows take cuBLASLt's
// FP8 path where the shape qualifies (checked by the counters) and match the CPU to accumulation
// order. A speed print compares the fused producer + GEMM with the unfused pair; not an assertion.
#include <cuda_runtime_api.h>

#include <cstdio>
#include <cstring>
#include <vector>

#include "framework/cuda/check.h"
#include "framework/cuda/fp8_gemm.h"
#include "framework/cuda/linear.h"
#include "framework/cuda/ops.h"
#include "framework/fp8_rows.h"
#include "framework/ops.h"
#include "framework/precision.h"
#include "tests/gpu/gpu_test.h"

using namespace moe;
using namespace moe::gpu_test;

namespace {

class GpuFp8Rows : public GpuTest {};

// E4M3 rows in device memory.
struct DeviceRows {
  cuda::DeviceBuffer<uint8_t> codes;
  cuda::DeviceBuffer<float> scales;
  Fp8Rows q;
  DeviceRows(int64_t rows, int64_t cols)
      : codes(rows * Fp8Rows::ld_of(cols)), scales(rows * Fp8Rows::tiles_of(cols)) {
    q = {codes.get(), scales.get(), rows, cols};
  }
};

// The device rows are the CPU's quantize_rows of x (host values) bit for bit.
void expect_rows_of(const DeviceRows& d, const std::vector<float>& x, const char* what) {
  std::vector<uint8_t> codes(size_t(d.codes.size()));
  std::vector<float> scales(size_t(d.scales.size()));
  Fp8Rows want{codes.data(), scales.data(), d.q.rows, d.q.cols};
  quantize_rows(want, x.data());
  const auto got_codes = to_host(d.codes);
  const auto got_scales = to_host(d.scales);
  int64_t bad_codes = 0, bad_scales = 0;
  for (size_t i = 0; i < codes.size(); ++i) bad_codes += got_codes[i] != codes[i];
  for (size_t i = 0; i < scales.size(); ++i) bad_scales += std::memcmp(&got_scales[i], &scales[i], 4) != 0;
  EXPECT_EQ(bad_codes, 0) << what;
  EXPECT_EQ(bad_scales, 0) << what;
}

}  // namespace

TEST_F(GpuFp8Rows, ProducersQuantiseTheirOutputLikeTheCpu) {
  for (const int64_t D : {int64_t(200), int64_t(2048)}) {
    SCOPED_TRACE(::testing::Message() << "D " << D);
    const int64_t N = 37;
    const auto x = randn(size_t(N * D), 71, 2.f), w = randn(size_t(D), 72), u = randn(size_t(N * D), 73);
    auto X = to_device(x), Wn = to_device(w), U = to_device(u);

    DeviceRows q(N, D);
    cuda::quantize_rows(q.q, X.get());
    expect_rows_of(q, x, "quantize_rows");

    cuda::DeviceBuffer<float> Y(N * D), rstd(N);
    DeviceRows qy(N, D);
    cuda::rmsnorm_forward_fp8(Y.get(), rstd.get(), qy.q, X.get(), Wn.get(), 1e-6f);
    std::vector<float> y_cpu(size_t(N * D)), rstd_cpu(static_cast<size_t>(N));
    rmsnorm_forward(y_cpu.data(), rstd_cpu.data(), x.data(), w.data(), N, D, 1e-6f);
    const auto y = to_host(Y);
    expect_close(y, y_cpu, 1e-6, "fused rmsnorm output");
    expect_rows_of(qy, y, "fused rmsnorm codes");

    cuda::DeviceBuffer<float> H(N * D);
    DeviceRows qh(N, D);
    cuda::swiglu_forward_fp8(H.get(), qh.q, X.get(), U.get());
    std::vector<float> h_cpu(size_t(N * D));
    swiglu_forward(h_cpu.data(), x.data(), u.data(), N * D);
    const auto h = to_host(H);
    expect_close(h, h_cpu, 1e-6, "fused swiglu output");
    expect_rows_of(qh, h, "fused swiglu codes");

    // Permute: every copy of token n is row n's f32 values, codes and scales.
    const int64_t K = 2, P = N * K;
    std::vector<int32_t> slot_of(static_cast<size_t>(P));
    for (int64_t p = 0; p < P; ++p) slot_of[size_t(p)] = int32_t((p * 7) % P);
    auto S = to_device(slot_of);
    cuda::DeviceBuffer<float> Xs(P * D);
    DeviceRows qs(P, D);
    cuda::moe_permute_fp8(Xs.get(), qs.q, X.get(), q.q, S.get(), K);
    std::vector<float> xs_cpu(size_t(P * D));
    for (int64_t p = 0; p < P; ++p)
      std::memcpy(&xs_cpu[size_t(p * D)], &x[size_t((slot_of[size_t(p)] / K) * D)], size_t(D) * 4);
    expect_close(to_host(Xs), xs_cpu, 0, "permuted rows");
    expect_rows_of(qs, xs_cpu, "permuted codes");
  }
}

// linear_forward_fp8 on 48 rows (one FP8 GEMM) and 37 rows (32 in place, 5 padded to 16), and the
// grouped form with groups of 32, 0, 5 and 16 rows, against the CPU on the same codes.
TEST_F(GpuFp8Rows, GemmsOnRowsMatchTheCpu) {
  const int64_t M = 53, in = 336, out = 208;
  const auto x = randn(size_t(M * in), 81, 2.f), W = randn(size_t(out * in), 82, 0.05f);
  std::vector<uint8_t> codes(size_t(M * Fp8Rows::ld_of(in)));
  std::vector<float> scales(size_t(M * Fp8Rows::tiles_of(in)));
  const Fp8Rows host{codes.data(), scales.data(), M, in};
  quantize_rows(host, x.data());
  auto X = to_device(x), Wd = to_device(W);
  DeviceRows q(M, in);
  cuda::quantize_rows(q.q, X.get());

  for (const int64_t rows : {int64_t(48), int64_t(37)}) {
    SCOPED_TRACE(::testing::Message() << rows << " rows");
    std::vector<float> want(size_t(rows * out));
    linear_forward_fp8(want.data(), host.slice(0, rows), W.data(), out, false);
    cuda::DeviceBuffer<float> Y(rows * out);
    const auto before = cuda::fp8_gemm_counts();
    cuda::linear_forward_fp8(Y.get(), q.q.slice(0, rows), Wd.get(), out, false);
    cuda::synchronize();
    if (is_hopper()) {  // 48 rows: one GEMM; 37: 32 in place and 5 through a padded 16-row copy
      EXPECT_EQ(cuda::fp8_gemm_counts().ran - before.ran, rows % 16 == 0 ? 1 : 2);
    }
    expect_close(to_host(Y), want, 1e-5, "linear_forward_fp8");
  }

  const std::vector<int64_t> offsets = {0, 32, 32, 37, 53};
  const int64_t G = 4;
  std::vector<std::vector<float>> Ws;
  std::vector<cuda::DeviceBuffer<float>> Wdev;
  std::vector<const float*> Wh, Wg;
  for (int64_t g = 0; g < G; ++g) {
    Ws.push_back(randn(size_t(out * in), uint32_t(90 + g), 0.05f));
    Wdev.push_back(to_device(Ws.back()));
  }
  for (int64_t g = 0; g < G; ++g) Wh.push_back(Ws[size_t(g)].data()), Wg.push_back(Wdev[size_t(g)].get());
  std::vector<float> want(size_t(M * out), 0.f);
  for (int64_t g = 0; g < G; ++g) {
    const int64_t r0 = offsets[size_t(g)], n = offsets[size_t(g) + 1] - r0;
    if (n > 0) linear_forward_fp8(want.data() + r0 * out, host.slice(r0, n), Wh[size_t(g)], out, false);
  }
  cuda::DeviceBuffer<float> Y(M * out);
  cuda::grouped_linear_forward_fp8(Y.get(), q.q, Wg.data(), offsets.data(), G, out);
  expect_close(to_host(Y), want, 1e-5, "grouped_linear_forward_fp8");
}

// Speed, printed: RMSNorm then an fp8 linear layer that quantises its input, against the fused
// RMSNorm that writes E4M3 rows and the GEMM that reads them (N = 8192, D = 2048, out = 2048).
TEST_F(GpuFp8Rows, BenchmarkFusedVsUnfused) {
  if (!is_hopper()) GTEST_SKIP() << "the FP8 GEMM path runs on sm_90 only";
  const int64_t N = 8192, D = 2048, out = 2048;
  auto X = to_device(randn(size_t(N * D), 101)), Wn = to_device(randn(size_t(D), 102)),
       W = to_device(randn(size_t(out * D), 103, 0.02f));
  cuda::DeviceBuffer<float> Y(N * D), rstd(N), O(N * out);
  DeviceRows q(N, D);
  const double unfused = mean_ms([&] {
    cuda::rmsnorm_forward(Y.get(), rstd.get(), X.get(), Wn.get(), N, D, 1e-6f);
    cuda::linear_forward(O.get(), Y.get(), W.get(), N, D, out, false, Precision::FP8);
  });
  const double fused = mean_ms([&] {
    cuda::rmsnorm_forward_fp8(Y.get(), rstd.get(), q.q, X.get(), Wn.get(), 1e-6f);
    cuda::linear_forward_fp8(O.get(), q.q, W.get(), out, false);
  });
  std::printf("[ BENCH    ] rmsnorm + fp8 linear %lldx%lld -> %lld: unfused %.3f ms, fused %.3f ms (%.2fx)\n",
              (long long)N, (long long)D, (long long)out, unfused, fused, unfused / fused);
}
