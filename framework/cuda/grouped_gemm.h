// Many f32 GEMMs of different shapes in one cuBLAS call (cublasGemmGroupedBatchedEx, cuBLAS >= 12.5):
// the routed experts' GEMMs, one per expert with tokens. Each problem is written row-major as in
// framework/gemm.h and mapped to cuBLAS's column-major form with to_col_major (gemm.h); all run with
// f32 accumulation (CUBLAS_COMPUTE_32F: no TF32). cuBLAS's grouped GEMM does not take bf16 inputs
// with f32 outputs, so bf16 callers round their inputs to bf16 values in f32 first (the CPU's
// emulation, exactly).
#pragma once
#include <cstdint>
#include <vector>

#include <cuda_runtime_api.h>

namespace moe::cuda {

// C[M,N] = alpha * op(A)[M,K] @ op(B)[K,N] + beta * C, row-major strides, device pointers.
struct GemmProblem {
  bool trans_a = false, trans_b = false;
  int64_t M = 0, N = 0, K = 0;
  const float* A = nullptr;
  int64_t lda = 0;
  const float* B = nullptr;
  int64_t ldb = 0;
  float* C = nullptr;
  int64_t ldc = 0;
};

// Runs every problem (each with M, N, K > 0) with the same alpha and beta, in one call. The pointer
// arrays go to the device through the caching allocator, so this is stream-ordered like the rest.
void gemm_grouped(const std::vector<GemmProblem>& problems, float alpha, float beta, cudaStream_t stream = nullptr);

}  // namespace moe::cuda
