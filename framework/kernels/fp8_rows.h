// FP8 activations as rows: the output of a producer (RMSNorm, SwiGLU, the MoE permute) quantised
// to E4M3 in DeepSeek-V3's 1x128 activation tiles as the producer writes it, so the next linear
// layer's forward GEMM reads codes instead of quantising f32 values itself (single source: the CPU
// backend runs these with SerialRow, the CUDA backend with one block per row).
//
// 1x128 tiles lie inside a row, so quantising rows commutes with moving rows: a permuted (or
// dispatched) row keeps its codes and scales, and quantising after a move gives the same bits.
//
// Layout of Fp8Rows (rows x cols of f32 values):
//   codes   [rows, ld] E4M3 bits, ld = cols rounded up to 128; codes past cols are +0. A row is
//           one stored row of a K-major FP8 GEMM operand (kernels/fp8_operand.h), so a GEMM
//           reads rows r0..r1 in place.
//   scales  [rows, tiles] f32, tiles = ceil(cols / 128): fp8_quantize(.., 1, 128)'s scales array.
// code * scale is the CPU's fake-quantised value (fp8_quantize_1x128) bit for bit: the same amax
// (an integer max), the same scale (e4m3_scale) and the same code (f32_to_e4m3_bits(x / s), computed
// by its branch-free twin e4m3_encode).
#pragma once
#include <stdint.h>

#include "framework/kernels/activation.h"
#include "framework/kernels/fp8.h"
#include "framework/kernels/hd.h"
#include "framework/kernels/norm.h"

namespace moe::kern {

struct Fp8Rows {
  uint8_t* codes = nullptr;
  float* scales = nullptr;
  int64_t rows = 0, cols = 0;

  MOE_HD static int64_t ld_of(int64_t cols) { return (cols + kFp8Tile - 1) / kFp8Tile * kFp8Tile; }
  MOE_HD static int64_t tiles_of(int64_t cols) { return (cols + kFp8Tile - 1) / kFp8Tile; }
  MOE_HD int64_t ld() const { return ld_of(cols); }
  MOE_HD int64_t tiles() const { return tiles_of(cols); }
  MOE_HD uint8_t* row_codes(int64_t r) const { return codes + r * ld(); }
  MOE_HD float* row_scales(int64_t r) const { return scales + r * tiles(); }
  // Rows r0 .. r0 + n (a view of the same memory).
  MOE_HD Fp8Rows slice(int64_t r0, int64_t n) const { return {row_codes(r0), row_scales(r0), n, cols}; }
  // The de-quantised value of element (r, c): the fake-quantised f32 value.
  MOE_HD float value(int64_t r, int64_t c) const {
    return e4m3_decode(row_codes(r)[c]) * row_scales(r)[c / kFp8Tile];
  }
};

// Quantises one row y[cols] into codes[ld] and scales[tiles]. y may have been written by other
// lanes just before (a producer's output): the first sync makes it visible.
template <class R>
MOE_HD inline void quantize_row_e4m3(R& r, uint8_t* codes, float* scales, const float* y, int64_t cols) {
  r.sync();
  const int64_t tiles = Fp8Rows::tiles_of(cols), ld = Fp8Rows::ld_of(cols);
  for (int64_t t = 0; t < tiles; ++t) {
    const int64_t c0 = t * kFp8Tile, n = cols - c0 < kFp8Tile ? cols - c0 : kFp8Tile;
    uint32_t a = 0;
    for (int64_t i = r.lane(); i < n; i += r.width()) a = amax_bits(y + c0 + i, 1, a);
    const float s = e4m3_scale(r.max_bits(a));
    if (r.leader()) scales[t] = s;
    for (int64_t i = r.lane(); i < n; i += r.width()) codes[c0 + i] = e4m3_encode(y[c0 + i] / s);
  }
  for (int64_t i = cols + r.lane(); i < ld; i += r.width()) codes[i] = 0;
}

// The de-quantised values x[cols] of one row (codes * scale, the fake-quantised values).
template <class R>
MOE_HD inline void dequantize_row(R& r, float* x, const uint8_t* codes, const float* scales, int64_t cols) {
  for (int64_t c0 = 0; c0 < cols; c0 += kFp8Tile) {
    const int64_t n = cols - c0 < kFp8Tile ? cols - c0 : kFp8Tile;
    const float s = scales[c0 / kFp8Tile];
    for (int64_t i = r.lane(); i < n; i += r.width()) x[c0 + i] = e4m3_decode(codes[c0 + i]) * s;
  }
}

// RMSNorm of one row (norm.h), its output quantised as well.
template <class R>
MOE_HD inline void rmsnorm_row_forward_fp8(R& r, float* y, float* rstd, uint8_t* codes, float* scales, const float* x,
                                           const float* w, int64_t D, float eps) {
  rmsnorm_row_forward(r, y, rstd, x, w, D, eps);
  quantize_row_e4m3(r, codes, scales, y, D);
}

// SwiGLU of one row of cols elements (activation.h), its output quantised as well.
template <class R>
MOE_HD inline void swiglu_row_forward_fp8(R& r, float* h, uint8_t* codes, float* scales, const float* g,
                                          const float* u, int64_t cols) {
  for (int64_t i = r.lane(); i < cols; i += r.width()) h[i] = swiglu(g[i], u[i]);
  quantize_row_e4m3(r, codes, scales, h, cols);
}

// Copies one row of f32 values and its codes and scales (the permute of quantised rows).
template <class R>
MOE_HD inline void copy_row_fp8(R& r, float* dst, uint8_t* dst_codes, float* dst_scales, const float* src,
                                const uint8_t* src_codes, const float* src_scales, int64_t cols) {
  const int64_t tiles = Fp8Rows::tiles_of(cols), ld = Fp8Rows::ld_of(cols);
  for (int64_t i = r.lane(); i < cols; i += r.width()) dst[i] = src[i];
  for (int64_t i = r.lane(); i < ld; i += r.width()) dst_codes[i] = src_codes[i];
  for (int64_t i = r.lane(); i < tiles; i += r.width()) dst_scales[i] = src_scales[i];
}

// Scale j of rows q (a slice) in cuBLASLt's VEC128_32F layout (fp8_operand.h: [tiles,
// round_up(rows, 4)] row-major, rows fastest; padding entries 1), for a GEMM over q's codes in place.
MOE_HD inline float fp8_rows_vec128_scale(const Fp8Rows& q, int64_t scale_ld, int64_t j) {
  const int64_t t = j / scale_ld, o = j % scale_ld;
  return o < q.rows ? q.row_scales(o)[t] : 1.f;
}

}  // namespace moe::kern
