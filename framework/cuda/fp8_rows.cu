// FP8 activation rows on the GPU (kernels/fp8_rows.h): each producer writes its f32 output and the
// output's E4M3 codes and 1x128 scales in one kernel, one block per row, so the next GEMM does not
// read the f32 values again to quantise them. The codes and scales are framework/fp8_rows.cpp's bit
// for bit (the same row functions; the tile amax is an integer max, the same in any order).
#include "framework/cuda/allocator.h"
#include "framework/cuda/fp8_gemm.h"
#include "framework/cuda/launch.cuh"
#include "framework/cuda/ops.h"
#include "framework/kernels/fp8_rows.h"

namespace moe::cuda {

void quantize_rows(const kern::Fp8Rows& q, const float* x, cudaStream_t stream) {
  launch_rows(q.rows, row_threads(q.cols), 0, [=] __device__(BlockRow & r, int64_t n) {
    kern::quantize_row_e4m3(r, q.row_codes(n), q.row_scales(n), x + n * q.cols, q.cols);
  }, stream);
}

void rmsnorm_forward_fp8(float* y, float* rstd, const kern::Fp8Rows& q, const float* x, const float* w, float eps,
                         cudaStream_t stream) {
  const int64_t D = q.cols;
  launch_rows(q.rows, row_threads(D), 0, [=] __device__(BlockRow & r, int64_t n) {
    kern::rmsnorm_row_forward_fp8(r, y + n * D, rstd + n, q.row_codes(n), q.row_scales(n), x + n * D, w, D, eps);
  }, stream);
}

void swiglu_forward_fp8(float* h, const kern::Fp8Rows& q, const float* g, const float* u, cudaStream_t stream) {
  const int64_t C = q.cols;
  launch_rows(q.rows, row_threads(C), 0, [=] __device__(BlockRow & r, int64_t n) {
    kern::swiglu_row_forward_fp8(r, h + n * C, q.row_codes(n), q.row_scales(n), g + n * C, u + n * C, C);
  }, stream);
}

void moe_permute_fp8(float* xs, const kern::Fp8Rows& qs, const float* x, const kern::Fp8Rows& q,
                     const int32_t* slot_of, int64_t K, cudaStream_t stream) {
  const int64_t D = q.cols;
  launch_rows(qs.rows, row_threads(D), 0, [=] __device__(BlockRow & r, int64_t p) {
    const int64_t n = slot_of[p] / K;
    kern::copy_row_fp8(r, xs + p * D, qs.row_codes(p), qs.row_scales(p), x + n * D, q.row_codes(n),
                       q.row_scales(n), D);
  }, stream);
}

void dequantize_rows(float* x, const kern::Fp8Rows& q, cudaStream_t stream) {
  launch_rows(q.rows, row_threads(q.cols), 0, [=] __device__(BlockRow & r, int64_t n) {
    kern::dequantize_row(r, x + n * q.cols, q.row_codes(n), q.row_scales(n), q.cols);
  }, stream);
}

Fp8RowsOperand fp8_rows_operand(const kern::Fp8Rows& q, cudaStream_t stream) {
  MOE_CHECK(q.rows > 0 && q.cols > 0, "fp8_rows_operand of ", q.rows, "x", q.cols, " rows");
  Fp8RowsOperand op;
  const kern::Fp8OperandLayout L = kern::Fp8OperandLayout::make(q.rows, q.cols, /*blocks=*/false);
  op.scales = DeviceBuffer<float>(L.scale_count());
  float* sc = op.scales.get();
  launch_elements(L.scale_count(), [=] __device__(int64_t j) {
    sc[j] = kern::fp8_rows_vec128_scale(q, L.scale_ld, j);
  }, stream);
  op.ref = {L, q.codes, sc};
  return op;
}

}  // namespace moe::cuda
