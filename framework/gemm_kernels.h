// What the f32 GEMM (gemm.cpp) and the bf16 GEMM (bf16_gemm.cpp) share: the row kernels for a
// skinny A and the split of one GEMM over the thread pool. Operands are f32, or bf16 bit patterns
// (uint16_t) widened exactly to f32, so both precisions run the same arithmetic here.
#pragma once
#include <cstdint>

#include "framework/kernels/cast.h"
#include "framework/threads.h"

namespace moe::gemm_detail {

// Rows of C for a skinny A (a few rows: decoding one token per sequence), where a library's
// packing costs several times the arithmetic (1x192 @ 192x192: 9.4 us in sgemm, 1.1 us here). Each
// row of C depends only on the same row of A, so a sequence's numbers do not depend on what else is
// in the batch. Lanes are independent partial sums the compiler keeps in vector registers. A product
// and its sum round separately (the build never contracts them, CMakeLists.txt); std::fma here would
// not vectorise (GCC keeps it a scalar libm call's equivalent while errno may be set), and decoding
// is bound by reading the weights, not by the extra add.
constexpr int64_t kSkinnyRows = 4;
constexpr int kLanes = 16;

inline float widen(float v) { return v; }
inline float widen(uint16_t v) { return kern::bf16_bits_to_f32(v); }

// c[j] = alpha * dot(a, B[j, :]) + beta * c[j] for j < N (B stored [N, K], the linear layer's W).
template <class T>
void skinny_row_dot(int64_t N, int64_t K, float alpha, const T* a, const T* B, int64_t ldb, float beta, float* c) {
  for (int64_t j = 0; j < N; ++j) {
    const T* b = B + j * ldb;
    float lanes[kLanes] = {};
    int64_t k = 0;
    for (; k + kLanes <= K; k += kLanes)
      for (int l = 0; l < kLanes; ++l) lanes[l] += widen(a[k + l]) * widen(b[k + l]);
    float sum = 0.f;
    for (int l = 0; l < kLanes; ++l) sum += lanes[l];
    for (; k < K; ++k) sum += widen(a[k]) * widen(b[k]);
    c[j] = beta == 0.f ? alpha * sum : alpha * sum + beta * c[j];
  }
}

// c[:] = alpha * sum_k a[k] * B[k, :] + beta * c[:] (B stored [K, N]).
template <class T>
void skinny_row_axpy(int64_t N, int64_t K, float alpha, const T* a, const T* B, int64_t ldb, float beta, float* c) {
  if (beta == 0.f)
    for (int64_t j = 0; j < N; ++j) c[j] = 0.f;
  else if (beta != 1.f)
    for (int64_t j = 0; j < N; ++j) c[j] *= beta;
  for (int64_t k = 0; k < K; ++k) {
    const float s = alpha * widen(a[k]);
    const T* b = B + k * ldb;
    for (int64_t j = 0; j < N; ++j) c[j] += s * widen(b[j]);
  }
}

// The skinny case of a serial GEMM; false when the shape is not skinny (A transposed or M > 4).
template <class T>
bool skinny_gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const T* A, int64_t lda,
                 const T* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (ta || M > kSkinnyRows) return false;
  for (int64_t i = 0; i < M; ++i)
    (tb ? skinny_row_dot<T> : skinny_row_axpy<T>)(N, K, alpha, A + i * lda, B, ldb, beta, C + i * ldc);
  return true;
}

// C = beta * C for K == 0 (a library would not touch C with beta == 1, but beta may be 0).
inline void scale_only(int64_t M, int64_t N, float beta, float* C, int64_t ldc) {
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) C[i * ldc + j] = beta == 0.f ? 0.f : beta * C[i * ldc + j];
}

// Runs serial(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc) over the thread pool: by rows
// of C, or by columns when M is small; inline below ~1 MFLOP, where a hand-off costs more than it
// saves, and inside a parallel region.
template <class T, class Serial>
void split_gemm(Serial serial, bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const T* A,
                int64_t lda, const T* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (num_threads() == 1 || in_parallel_region() || M * N * K < (1 << 20)) {
    serial(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    return;
  }
  if (M >= N) {
    parallel_for(M, [&](int64_t i0, int64_t i1) {
      const T* a = ta ? A + i0 : A + i0 * lda;
      serial(ta, tb, i1 - i0, N, K, alpha, a, lda, B, ldb, beta, C + i0 * ldc, ldc);
    }, 16);
  } else {
    parallel_for(N, [&](int64_t j0, int64_t j1) {
      const T* b = tb ? B + j0 * ldb : B + j0;
      serial(ta, tb, M, j1 - j0, K, alpha, A, lda, b, ldb, beta, C + j0, ldc);
    }, 16);
  }
}

}  // namespace moe::gemm_detail
