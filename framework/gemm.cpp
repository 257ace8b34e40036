#include "framework/gemm.h"

#include <cblas.h>

#include "framework/profiler.h"
#include "framework/threads.h"

namespace moe {
namespace {

// Rows of C for a skinny A (a few rows: decoding one token per sequence), where OpenBLAS's packing
// costs several times the arithmetic (1x192 @ 192x192: 9.4 us in sgemm, 1.1 us here). Each row of
// C depends only on the same row of A, so a sequence's numbers do not depend on what else is in the
// batch. Lanes are independent partial sums the compiler keeps in vector registers.
constexpr int64_t kSkinnyRows = 4;
constexpr int kLanes = 16;

// c[j] = alpha * dot(a, B[j, :]) + beta * c[j] for j < N (B stored [N, K], the linear layer's W).
void skinny_row_dot(int64_t N, int64_t K, float alpha, const float* a, const float* B, int64_t ldb, float beta,
                    float* c) {
  for (int64_t j = 0; j < N; ++j) {
    const float* b = B + j * ldb;
    float lanes[kLanes] = {};
    int64_t k = 0;
    for (; k + kLanes <= K; k += kLanes)
      for (int l = 0; l < kLanes; ++l) lanes[l] += a[k + l] * b[k + l];
    float sum = 0.f;
    for (int l = 0; l < kLanes; ++l) sum += lanes[l];
    for (; k < K; ++k) sum += a[k] * b[k];
    c[j] = beta == 0.f ? alpha * sum : alpha * sum + beta * c[j];
  }
}

// c[:] = alpha * sum_k a[k] * B[k, :] + beta * c[:] (B stored [K, N]).
void skinny_row_axpy(int64_t N, int64_t K, float alpha, const float* a, const float* B, int64_t ldb, float beta,
                     float* c) {
  if (beta == 0.f)
    for (int64_t j = 0; j < N; ++j) c[j] = 0.f;
  else if (beta != 1.f)
    for (int64_t j = 0; j < N; ++j) c[j] *= beta;
  for (int64_t k = 0; k < K; ++k) {
    const float s = alpha * a[k];
    const float* b = B + k * ldb;
    for (int64_t j = 0; j < N; ++j) c[j] += s * b[j];
  }
}

}  // namespace

void gemm_serial(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                 int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  if (K == 0) {  // BLAS would not touch C for K == 0 with beta == 1, but beta may be 0
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) C[i * ldc + j] = beta == 0.f ? 0.f : beta * C[i * ldc + j];
    return;
  }
  if (!ta && M <= kSkinnyRows) {
    for (int64_t i = 0; i < M; ++i)
      (tb ? skinny_row_dot : skinny_row_axpy)(N, K, alpha, A + i * lda, B, ldb, beta, C + i * ldc);
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
