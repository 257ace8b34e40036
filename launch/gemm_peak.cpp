#include "launch/gemm_peak.h"

#include <algorithm>
#include <chrono>
#include <vector>

#include "framework/bf16_gemm.h"
#include "framework/dtype.h"
#include "framework/gemm.h"

namespace moe {

double gemm_gflops(bool bf16, bool ta, bool tb, int64_t M, int64_t N, int64_t K, int trials) {
  using Clock = std::chrono::steady_clock;
  // Values of a few bits, so neither precision meets denormals or rounding surprises.
  std::vector<float> a(size_t(M * K), 0.5f), b(size_t(K * N), 0.25f), c(size_t(M * N));
  std::vector<uint16_t> a16(a.size(), f32_to_bf16_bits(0.5f)), b16(b.size(), f32_to_bf16_bits(0.25f));
  const int64_t lda = ta ? M : K, ldb = tb ? K : N;
  auto once = [&] {
    if (bf16)
      gemm_bf16(ta, tb, M, N, K, 1.f, a16.data(), lda, b16.data(), ldb, 0.f, c.data(), N);
    else
      gemm(ta, tb, M, N, K, 1.f, a.data(), lda, b.data(), ldb, 0.f, c.data(), N);
  };
  once();
  const double flops = 2.0 * double(M) * double(N) * double(K);
  const int reps = int(std::clamp(2e7 / std::max(flops, 1.0), 1.0, 1e4));  // ~20 ms at 1 TFLOP/s
  double best = 0;
  for (int t = 0; t < trials; ++t) {
    const auto t0 = Clock::now();
    for (int r = 0; r < reps; ++r) once();
    const double s = std::chrono::duration<double>(Clock::now() - t0).count();
    best = std::max(best, flops * reps / s / 1e9);
  }
  return best;
}

double cpu_peak_gflops(Precision p) {
  const bool bf16 = p == Precision::BF16 && bf16_gemm_native();
  return gemm_gflops(bf16, false, false, 1024, 1024, 1024, 3);
}

}  // namespace moe
