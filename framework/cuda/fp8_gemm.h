// Real FP8 GEMMs (DeepSeek-V3's recipe) through cuBLASLt's block-scaled matmul: E4M3 x E4M3 with
// f32 scales per 1x128 tile (CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F) or 128x128 block
// (BLK128x128_32F), f32 accumulation and output. The operands are the CPU emulation's codes and
// scales (kernels/fp8_operand.h), so the result is framework/precision.h's fp8 linear layer up to
// the order of the f32 accumulation.
//
// FP8 tensor cores take both operands K-major ("TN"), so every GEMM here has one row-major form:
//   C[Mr, Nr] = X[Mr, K] Y[Nr, K]^T (+ C)        (X, Y: E4M3 operands, rows of K codes)
// and a linear layer y[M,out] = x W^T maps onto it as (fp8_linear_plan):
//   forward  y  = x  W^T    X = x  [M, in]            1x128   Y = W   [out, in]          128x128
//   dgrad    dx = dy W      X = dy [M, out]           1x128   Y = W^T [in, out] (a copy) 128x128
//   wgrad    dW += dy^T x   X = dy^T [out, M] (copy)  1x128   Y = x^T [in, M] (copy)     1x128
// The transposed copies hold the same codes and the same tiles' scales (W's 128x128 blocks; the
// 128x1 tiles of dy and x along the tokens are 1x128 tiles of their transposes), so nothing
// changes numerically. Each thread keeps a cuBLASLt handle, a workspace and one plan per shape.
#pragma once
#include <cstdint>

#include <cuda_runtime_api.h>

#include "framework/cuda/allocator.h"
#include "framework/kernels/fp8_operand.h"
#include "framework/kernels/fp8_rows.h"

namespace moe::cuda {

// An E4M3 operand on the device: layout, codes [outer, ld], scales [scale_rows, scale_ld]. The
// codes may sit inside a larger allocation (rows of an activation's Fp8Rows); scales are its own.
struct Fp8OperandRef {
  kern::Fp8OperandLayout layout;
  const uint8_t* codes = nullptr;
  const float* scales = nullptr;
};
// An operand owning its codes and scales.
struct Fp8Operand {
  kern::Fp8OperandLayout layout;
  DeviceBuffer<uint8_t> codes;
  DeviceBuffer<float> scales;
  operator Fp8OperandRef() const { return {layout, codes.get(), scales.get()}; }
};
// Rows of an activation quantised by its producer (kernels/fp8_rows.h) as a GEMM operand: the codes
// read in place, the scales rearranged into the VEC128 layout (one float per 128 codes).
struct Fp8RowsOperand {
  Fp8OperandRef ref;
  DeviceBuffer<float> scales;
};
Fp8RowsOperand fp8_rows_operand(const kern::Fp8Rows& q, cudaStream_t stream = nullptr);

// Quantises x[R,C] (row-major, device) into an operand whose stored rows are the rows of x
// (transpose false: K = C) or its columns (K = R), in 128x128 blocks or 1x128 tiles of the stored
// rows: the CPU's fp8_quantize of x in the matching tiles (128x1 when transposed), bit for bit.
Fp8Operand fp8_operand(const float* x, int64_t R, int64_t C, bool transpose, bool blocks,
                       cudaStream_t stream = nullptr);

// The shape rule for the real FP8 GEMM: Mr and Nr multiples of 16 (K is padded to 128 with zero
// codes, exact). Conservative: cuBLASLt's FP8 kernels want 16-byte aligned rows and leading
// dimensions, and the VEC128 scale tensors' row length round_up(outer, 4) then equals outer,
// where Transformer Engine and PyTorch agree. Shapes outside it take the fake-quantised f32 path.
constexpr int64_t kFp8GemmMultiple = 16;
bool fp8_gemm_shape_ok(int64_t Mr, int64_t Nr);

// C[Mr, Nr] = X Y^T + beta C, ldc the row stride of C (f32, device). X and Y have the same K.
// Returns false, writing nothing, when the shape rule fails or cuBLASLt offers no algorithm for the
// problem (the caller falls back); cuBLASLt errors throw.
bool fp8_gemm(float* C, int64_t ldc, const Fp8OperandRef& X, const Fp8OperandRef& Y, float beta,
              cudaStream_t stream = nullptr);

// How many fp8_gemm calls ran on cuBLASLt and how many returned false, since the start (per
// process): the tests and benchmarks check that the FP8 path really ran.
struct Fp8GemmCounts {
  int64_t ran = 0, declined = 0;
};
Fp8GemmCounts fp8_gemm_counts();

// --- Pure argument mapping, tested on the CPU (tests/cuda/test_cuda_fp8_gemm.cpp) ---

// The column-major problem C = X Y^T becomes: D[m, n] = op(A)[m, k] op(B)[k, n] with A = Y stored
// k x m (TRANSA = T), B = X stored k x n (TRANSB = N), D = C viewed column-major (m = Nr rows,
// ld = ldc). k is the padded K (the codes' row stride).
struct Fp8ColMajorGemm {
  int64_t m = 0, n = 0, k = 0;
  int64_t lda = 0, ldb = 0, ldd = 0;
  bool a_blocks = false, b_blocks = false;  // BLK128x128_32F, else VEC128_32F
};
Fp8ColMajorGemm fp8_to_col_major(const kern::Fp8OperandLayout& X, const kern::Fp8OperandLayout& Y, int64_t ldc);

// The operands of a linear layer's GEMM (table at the top): which tensor each quantises (shape
// [R, C] as stored in memory), transposed or not, in blocks or tiles; the output's Mr x Nr.
enum class LinearGemm : uint8_t { Forward, Dgrad, Wgrad };
enum class LinearTensor : uint8_t { X, W, DY };
struct Fp8OperandSpec {
  LinearTensor tensor = LinearTensor::X;
  int64_t R = 0, C = 0;
  bool transpose = false, blocks = false;
};
struct Fp8LinearPlan {
  Fp8OperandSpec X, Y;
  int64_t Mr = 0, Nr = 0;
};
Fp8LinearPlan fp8_linear_plan(LinearGemm g, int64_t M, int64_t in, int64_t out);
// The layout an operand spec gives (kernels/fp8_operand.h).
kern::Fp8OperandLayout fp8_layout(const Fp8OperandSpec& s);

}  // namespace moe::cuda
