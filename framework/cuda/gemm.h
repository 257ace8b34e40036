// GEMMs on the GPU through cuBLASLt, with the row-major convention of framework/gemm.h:
//   C[M,N] = alpha * op(A)[M,K] @ op(B)[K,N] + beta * C
// lda/ldb/ldc are row strides as stored (A is [M,K] or, transposed, [K,M]). A and B are both f32
// or both bf16; C is f32 or bf16; products accumulate in f32 (CUBLAS_COMPUTE_32F: no TF32).
// cuBLASLt is column-major: a row-major matrix is its column-major transpose, so the call computes
// C^T = op(B)^T op(A)^T, i.e. the operands swap and M and N swap (to_col_major). Each thread keeps
// a cuBLASLt handle, a 32 MiB workspace and the plan (descriptors + heuristic algorithm) of every
// shape and operand alignment it has run. K must be positive.
#pragma once
#include <cstdint>

#include <cuda_runtime_api.h>

#include "framework/dtype.h"

namespace moe::cuda {

void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const void* A, int64_t lda,
          const void* B, int64_t ldb, float beta, void* C, int64_t ldc, DType ab_type = DType::F32,
          DType c_type = DType::F32, cudaStream_t stream = nullptr);

// `batch` GEMMs of one shape in one call (cuBLASLt strided batch): problem i reads A + i * stride_a,
// B + i * stride_b and writes C + i * stride_c (strides in elements, any value: the attention core
// batches heads that sit side by side inside rows, so a stride may be smaller than a matrix).
// Output matrices of different problems must not overlap.
void gemm_strided_batched(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const void* A,
                          int64_t lda, int64_t stride_a, const void* B, int64_t ldb, int64_t stride_b, float beta,
                          void* C, int64_t ldc, int64_t stride_c, int64_t batch, DType ab_type = DType::F32,
                          DType c_type = DType::F32, cudaStream_t stream = nullptr);

// The column-major problem a row-major GEMM becomes: D[m,n] = op(first)[m,k] op(second)[k,n],
// ld_* the column strides, stride_* the batch strides. Pure arithmetic, tested on the CPU
// (tests/cuda/test_cuda_runtime.cpp).
struct ColMajorGemm {
  bool trans_first = false, trans_second = false;
  int64_t m = 0, n = 0, k = 0;
  const void* first = nullptr;
  const void* second = nullptr;
  int64_t ld_first = 0, ld_second = 0, ld_out = 0;
  int64_t batch = 1, stride_first = 0, stride_second = 0, stride_out = 0;
  // Rows and columns of the stored operands as cuBLASLt's matrix layouts describe them.
  int64_t first_rows() const { return trans_first ? k : m; }
  int64_t first_cols() const { return trans_first ? m : k; }
  int64_t second_rows() const { return trans_second ? n : k; }
  int64_t second_cols() const { return trans_second ? k : n; }
};
ColMajorGemm to_col_major(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const void* A, int64_t lda,
                          const void* B, int64_t ldb, int64_t ldc);
// The same for a strided batch: the batch strides follow their operands (first is B, second A).
ColMajorGemm to_col_major_batched(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const void* A,
                                  int64_t lda, int64_t stride_a, const void* B, int64_t ldb, int64_t stride_b,
                                  int64_t ldc, int64_t stride_c, int64_t batch);

}  // namespace moe::cuda
