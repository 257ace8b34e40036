// Row-major f32 GEMM on the CPU: C[M,N] = alpha * op(A)[M,K] @ op(B)[K,N] + beta * C.
// lda/ldb/ldc are row strides as stored (A is [M,K] or, transposed, [K,M]).
// The output is split over the thread pool (by rows, or by columns when M is small), each chunk
// one single-threaded OpenBLAS call. A skinny A (M <= 4, not transposed: decoding a token per
// sequence) runs our own row kernels instead (gemm_kernels.h), where packing would cost more than the math.
#pragma once
#include <cstdint>

namespace moe {

void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
          int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

// Same, but runs on the calling thread only (for use inside a parallel_for body).
void gemm_serial(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                 const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
                 int64_t ldc);

// Common shapes of a linear layer without bias, W stored [out, in] as in PyTorch / Hugging Face:
//   forward     y[M,out]  = x[M,in] @ W^T            (accumulate: y += ...)
//   backward    dx[M,in]  (+)= dy[M,out] @ W
//               dW[out,in] += dy^T @ x
void linear_forward(float* y, const float* x, const float* W, int64_t M, int64_t in, int64_t out,
                    bool accumulate = false);
void linear_backward(float* dx, float* dW, const float* dy, const float* x, const float* W, int64_t M,
                     int64_t in, int64_t out, bool accumulate_dx = false);

}  // namespace moe
