// bf16 GEMMs on the CPU's AVX512-BF16 dot-product instructions (VDPBF16PS), through oneDNN's
// matmul: bf16 operands, f32 products and f32 accumulation, so the result equals the emulation
// (f32 GEMM on bf16-rounded values, precision.h) up to the order of the f32 additions, and for
// denormals, which the instructions flush to zero. Row-major, same conventions as gemm.h:
//   C[M,N] = alpha * op(A)[M,K] @ op(B)[K,N] + beta * C      (A, B bf16 bit patterns; C f32)
// Chosen once at run time: native where the CPU has AVX512-BF16 and oneDNN was built in, else
// the caller keeps the emulated path. MOE_BF16_GEMM=emulated forces the emulated path (for
// comparisons, and as the escape hatch if a library update misbehaves).
#pragma once
#include <cstdint>

namespace moe {

// Whether gemm_bf16 runs on native instructions (decided once, the first call reports nothing).
bool bf16_gemm_native();
// One line for run headers and bench JSON: "onednn avx512_core_bf16" or "emulated (<why>)".
const char* bf16_gemm_backend();

// The GEMM above, split over the thread pool like gemm() (each chunk one single-threaded call).
// Requires bf16_gemm_native().
void gemm_bf16(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const uint16_t* A,
               int64_t lda, const uint16_t* B, int64_t ldb, float beta, float* C, int64_t ldc);
// Same, on the calling thread only.
void gemm_bf16_serial(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                      const uint16_t* A, int64_t lda, const uint16_t* B, int64_t ldb, float beta, float* C,
                      int64_t ldc);

// y[i] = bf16 bits of x[i], rounded to nearest even (kernels/cast.h), over the thread pool.
void to_bf16(uint16_t* y, const float* x, int64_t n);

}  // namespace moe
