#include "launch/gemm_peak.h"

#include <algorithm>
#include <chrono>
#include <vector>

#include "framework/bf16_gemm.h"
#include "framework/dtype.h"
#include "framework/gemm.h"

namespace moe {

double gemm_gflops(bool bf16, bool ta, bool tb, int64_t M, int64_t N, int64_t K, int trials, bool cold) {
  using Clock = std::chrono::steady_clock;
  // Cold: enough copies of the operands to rotate through 64 MiB, so each GEMM reads them from
  // memory as a training step does (a hot loop keeps small operands in cache).
  const int64_t bytes = (M * K + K * N + M * N) * int64_t(bf16 ? 2 : 4);
  const int copies = cold ? int(std::clamp<int64_t>((int64_t(64) << 20) / std::max<int64_t>(bytes, 1), 1, 64)) : 1;
  // Values of a few bits, so neither precision meets denormals or rounding surprises.
  std::vector<float> a(size_t(bf16 ? 0 : M * K * copies), 0.5f), b(size_t(bf16 ? 0 : K * N * copies), 0.25f),
      c(size_t(M * N * copies), 0.f);
  std::vector<uint16_t> a16(size_t(bf16 ? M * K * copies : 0), f32_to_bf16_bits(0.5f)),
      b16(size_t(bf16 ? K * N * copies : 0), f32_to_bf16_bits(0.25f));
  const int64_t lda = ta ? M : K, ldb = tb ? K : N;
  int next = 0;
  auto once = [&] {
    const int64_t i = next;
    next = (next + 1) % copies;
    if (bf16)
      gemm_bf16(ta, tb, M, N, K, 1.f, a16.data() + i * M * K, lda, b16.data() + i * K * N, ldb, 0.f, c.data() + i * M * N, N);
    else
      gemm(ta, tb, M, N, K, 1.f, a.data() + i * M * K, lda, b.data() + i * K * N, ldb, 0.f, c.data() + i * M * N, N);
  };
  once();
  const double flops = 2.0 * double(M) * double(N) * double(K);
  const int reps = int(std::clamp(2e10 / std::max(flops, 1.0), 1.0, 1e4));  // >= ~20 ms at 1 TFLOP/s
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
