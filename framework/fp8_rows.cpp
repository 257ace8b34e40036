#include "framework/fp8_rows.h"

#include "framework/gemm.h"
#include "framework/launch.h"
#include "framework/precision.h"
#include "framework/profiler.h"
#include "framework/scratch.h"

namespace moe {

void quantize_rows(const Fp8Rows& q, const float* x) {
  launch_rows(q.rows, 16, [&](kern::SerialRow& r, int64_t n) {
    kern::quantize_row_e4m3(r, q.row_codes(n), q.row_scales(n), x + n * q.cols, q.cols);
  });
}

void rmsnorm_forward_fp8(float* y, float* rstd, const Fp8Rows& q, const float* x, const float* w, float eps) {
  const int64_t D = q.cols;
  launch_rows(q.rows, 16, [&](kern::SerialRow& r, int64_t n) {
    kern::rmsnorm_row_forward_fp8(r, y + n * D, rstd + n, q.row_codes(n), q.row_scales(n), x + n * D, w, D, eps);
  });
}

void swiglu_forward_fp8(float* h, const Fp8Rows& q, const float* g, const float* u) {
  const int64_t C = q.cols;
  launch_rows(q.rows, 16, [&](kern::SerialRow& r, int64_t n) {
    kern::swiglu_row_forward_fp8(r, h + n * C, q.row_codes(n), q.row_scales(n), g + n * C, u + n * C, C);
  });
}

void moe_permute_fp8(float* xs, const Fp8Rows& qs, const float* x, const Fp8Rows& q, const int32_t* slot_of,
                     int64_t K) {
  const int64_t D = q.cols;
  launch_rows(qs.rows, 64, [&](kern::SerialRow& r, int64_t p) {
    const int64_t n = slot_of[p] / K;
    kern::copy_row_fp8(r, xs + p * D, qs.row_codes(p), qs.row_scales(p), x + n * D, q.row_codes(n),
                       q.row_scales(n), D);
  });
}

void dequantize_rows(float* x, const Fp8Rows& q) {
  launch_rows(q.rows, 16, [&](kern::SerialRow& r, int64_t n) {
    kern::dequantize_row(r, x + n * q.cols, q.row_codes(n), q.row_scales(n), q.cols);
  });
}

void linear_forward_fp8(float* y, const Fp8Rows& x, const float* W, int64_t out, bool accumulate) {
  const int64_t M = x.rows, in = x.cols;
  ScratchScope scope;
  float* xq = scratch_floats(M * in);
  const float* Wq = fp8_weights(W, out, in);
  {
    MOE_LEAF_PHASE("quantize");
    dequantize_rows(xq, x);
  }
  linear_forward(y, xq, Wq, M, in, out, accumulate);
}

}  // namespace moe
