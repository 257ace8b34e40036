#include "framework/gemm.h"

#include <cblas.h>

#include "framework/profiler.h"
#include "framework/threads.h"

namespace moe {

void gemm_serial(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                 int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  if (K == 0) {  // BLAS would not touch C for K == 0 with beta == 1, but beta may be 0
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) C[i * ldc + j] = beta == 0.f ? 0.f : beta * C[i * ldc + j];
    return;
  }
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, int(M),
              int(N), int(K), alpha, A, int(lda), B, int(ldb), beta, C, int(ldc));
}

void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
          const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  MOE_LEAF_PHASE("gemm");
  // Below ~1 MFLOP a thread hand-off costs more than it saves.
  if (num_threads() == 1 || in_parallel_region() || M * N * K < (1 << 20)) {
    gemm_serial(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    return;
  }
  if (M >= N) {
    parallel_for(M, [&](int64_t i0, int64_t i1) {
      const float* a = ta ? A + i0 : A + i0 * lda;
      gemm_serial(ta, tb, i1 - i0, N, K, alpha, a, lda, B, ldb, beta, C + i0 * ldc, ldc);
    }, 16);
  } else {
    parallel_for(N, [&](int64_t j0, int64_t j1) {
      const float* b = tb ? B + j0 * ldb : B + j0;
      gemm_serial(ta, tb, M, j1 - j0, K, alpha, A, lda, b, ldb, beta, C + j0, ldc);
    }, 16);
  }
}

void linear_forward(float* y, const float* x, const float* W, int64_t M, int64_t in, int64_t out,
                    bool accumulate) {
  gemm(false, true, M, out, in, 1.f, x, in, W, in, accumulate ? 1.f : 0.f, y, out);
}

void linear_backward(float* dx, float* dW, const float* dy, const float* x, const float* W, int64_t M,
                     int64_t in, int64_t out, bool accumulate_dx) {
  if (dx) gemm(false, false, M, in, out, 1.f, dy, out, W, in, accumulate_dx ? 1.f : 0.f, dx, in);
  if (dW) gemm(true, false, out, in, M, 1.f, dy, out, x, in, 1.f, dW, in);
}

}  // namespace moe
