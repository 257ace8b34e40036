#include "framework/gemm.h"

#include <cblas.h>

#include "framework/gemm_kernels.h"
#include "framework/profiler.h"

namespace moe {

void gemm_serial(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                 int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  if (K == 0) return gemm_detail::scale_only(M, N, beta, C, ldc);
  if (gemm_detail::skinny_gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc)) return;
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, int(M),
              int(N), int(K), alpha, A, int(lda), B, int(ldb), beta, C, int(ldc));
}

void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
          const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  MOE_LEAF_PHASE("gemm");
  gemm_detail::split_gemm(gemm_serial, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
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
